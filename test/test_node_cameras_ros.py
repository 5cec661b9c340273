"""The rclpy node with several cameras, and the lifecycle node through the standard lifecycle services
(real rclpy: ROS 2 Jazzy wheels or a ROS install). Skipped without rclpy.

Prints the wall time of every lifecycle transition, as seen by a client of `~/change_state`, in-process
and with the node as its own process (`python -m bisenetv2_ros.ros.node --lifecycle`).
"""

from __future__ import annotations

import signal
import time
import weakref

import pytest
from ros_support import NodeProcess, Probe, bgr_image, require_ros, spin_until  # noqa: E402

require_ros()

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402

from bisenetv2_ros.msg import SegmentationInfo  # noqa: E402
from bisenetv2_ros.ros.node import LifecycleSegmentationNode, SegmentationNode  # noqa: E402

RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


class Harness:
    """The node under test and a probe node on one executor."""

    def __init__(self, node):
        self.node = node
        self.probe = rclpy.create_node(f"probe_{node.get_namespace().strip('/')}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.executor.add_node(self.probe)

    def spin_until(self, condition, timeout=30.0, step=None) -> bool:
        return spin_until(rclpy, self.executor, condition, timeout, step)

    def spin_for(self, seconds, step=None) -> None:
        self.spin_until(lambda: False, timeout=seconds, step=step)

    def collect(self, msg_type, topic, qos=RELIABLE) -> list:
        received = []
        self.probe.create_subscription(msg_type, topic, received.append, qos)
        return received

    def close(self):
        self.executor.shutdown()
        self.probe.destroy_node()


def parameters(tiny_weights, **values):
    values = {"weights": str(tiny_weights), "device": "cpu", "backend": "torch", **values}
    return [Parameter(name, value=value) for name, value in values.items()]


def graph(node, kind):
    lookup = (node.get_publisher_names_and_types_by_node if kind == "publishers"
              else node.get_subscriber_names_and_types_by_node)
    return {name for name, _ in lookup(node.get_name(), node.get_namespace())}


def wait_for_graph(node, kind, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not expected <= graph(node, kind):
        time.sleep(0.05)
    return graph(node, kind)


OUTPUTS = {"labels", "color", "overlay", "confidence", "labels/compressed", "color/compressed", "points", "camera_info",
           "info"}


def test_single_camera_topics_are_unchanged(ros, tiny_weights):
    node = SegmentationNode(namespace="/single_cam", parameter_overrides=parameters(tiny_weights))
    try:
        expected = {f"/single_cam/{name}" for name in OUTPUTS | {"label_info"}} | {"/diagnostics"}
        assert expected <= wait_for_graph(node, "publishers", expected)
        assert {name for name in graph(node, "publishers") if name.startswith("/single_cam/")} == expected - {
            "/diagnostics"}
        inputs = {"/single_cam/image", "/single_cam/input_camera_info"}
        assert wait_for_graph(node, "subscriptions", inputs) == inputs
    finally:
        node.close()
        node.destroy_node()


def test_several_cameras_one_network(ros, tiny_weights):
    # max_rate_hz 2: the worker waits 0.5 s between batches, so both cameras' frames are pending together
    node = SegmentationNode(namespace="/multi_cam", parameter_overrides=parameters(
        tiny_weights, cameras=["front", "left"], max_rate_hz=2.0))
    harness = Harness(node)
    try:
        per_camera = {name: {f"/multi_cam/{name}/{output}" for output in OUTPUTS} for name in ("front", "left")}
        expected = per_camera["front"] | per_camera["left"] | {"/multi_cam/label_info", "/diagnostics"}
        publishers = wait_for_graph(node, "publishers", expected)
        assert {name for name in publishers if name.startswith("/multi_cam/")} == expected - {"/diagnostics"}, \
            "one label_info for all cameras, nothing unprefixed"
        inputs = {f"/multi_cam/{name}/{topic}" for name in ("front", "left") for topic in ("image", "input_camera_info")}
        assert wait_for_graph(node, "subscriptions", inputs) == inputs

        labels = {name: harness.collect(Image, f"/multi_cam/{name}/labels") for name in ("front", "left")}
        infos = {name: harness.collect(SegmentationInfo, f"/multi_cam/{name}/info") for name in ("front", "left")}
        camera_infos = harness.collect(CameraInfo, "/multi_cam/left/camera_info")
        label_info = harness.collect(LabelInfo, "/multi_cam/label_info", LATCHED)
        diagnostics = harness.collect(DiagnosticArray, "/diagnostics")
        images = {name: harness.probe.create_publisher(Image, f"/multi_cam/{name}/image", RELIABLE)
                  for name in ("front", "left")}
        left_info = harness.probe.create_publisher(CameraInfo, "/multi_cam/left/input_camera_info", RELIABLE)
        sent = {"count": 0}

        def step():
            sent["count"] += 1
            for offset, name in enumerate(("front", "left")):
                # stamps: even seconds from the front camera, odd ones from the left camera
                images[name].publish(bgr_image(Image, Header, Time, sec=2 * sent["count"] + offset,
                                               frame_id=f"{name}_optical"))
            left_info.publish(CameraInfo(header=Header(frame_id="stale"), width=64, height=48,
                                         distortion_model="plumb_bob"))
            time.sleep(0.02)

        def batched():  # both results of one network call arrived (same inference time), and camera_info
            calls = {info.inference_ms for info in infos["front"] if info.batch_size == 2}
            return (any(info.batch_size == 2 and info.inference_ms in calls for info in infos["left"])
                    and all(labels.values()) and bool(camera_infos))

        assert harness.spin_until(batched, timeout=60, step=step)
        for offset, name in enumerate(("front", "left")):
            for msg in labels[name] + infos[name]:
                assert msg.header.frame_id == f"{name}_optical", name
                assert msg.header.stamp.sec % 2 == offset, "its own camera's stamp"
            assert all(info.camera == name for info in infos[name])
            assert (labels[name][0].height, labels[name][0].width, labels[name][0].encoding) == (48, 64, "mono8")
        assert camera_infos[-1].header.frame_id == "left_optical" and camera_infos[-1].distortion_model == "plumb_bob"
        assert harness.spin_until(lambda: bool(label_info), timeout=10)
        assert label_info[0].class_map[0].class_name == "sky"

        def statuses():
            return {status.name: status for array in diagnostics for status in array.status
                    if status.name.startswith("/multi_cam/segmentation_node")}

        assert harness.spin_until(lambda: len(statuses()) == 4, timeout=10)
        assert set(statuses()) == {"/multi_cam/segmentation_node: segmentation front",
                                   "/multi_cam/segmentation_node: segmentation left",
                                   "/multi_cam/segmentation_node: out-of-distribution front",
                                   "/multi_cam/segmentation_node: out-of-distribution left"}
        left_values = {kv.key: kv.value for kv in statuses()["/multi_cam/segmentation_node: segmentation left"].values}
        assert left_values["camera"] == "left" and int(left_values["frames received"]) >= 1
        front, left = node.cameras
        assert front.stats.received >= 1 and left.stats.received >= 1 and front.stats.processed >= 1
    finally:
        harness.close()
        node.close()
        node.destroy_node()


# ---------------------------------------------------------------------------------------------
# The lifecycle node, driven through its standard services


class LifecycleClient:
    def __init__(self, harness, node_path):
        self.harness = harness
        self.change = harness.probe.create_client(ChangeState, f"{node_path}/change_state")
        self.get = harness.probe.create_client(GetState, f"{node_path}/get_state")
        assert self.change.wait_for_service(timeout_sec=10) and self.get.wait_for_service(timeout_sec=10)
        self.times = {}

    def _call(self, client, request):
        future = client.call_async(request)
        assert self.harness.spin_until(future.done, timeout=60), "no answer from the lifecycle service"
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, name: str, transition_id: int) -> bool:
        started = time.monotonic()
        success = self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success
        self.times.setdefault(name, []).append(round(time.monotonic() - started, 3))
        return success


def test_lifecycle_transitions(ros, tiny_weights):
    node = LifecycleSegmentationNode(namespace="/managed", parameter_overrides=parameters(tiny_weights))
    harness = Harness(node)
    try:
        lifecycle = LifecycleClient(harness, "/managed/segmentation_node")
        assert lifecycle.state() == "unconfigured"
        assert node.segmenter is None and "/managed/labels" not in graph(node, "publishers")

        labels = harness.collect(Image, "/managed/labels")
        label_info = harness.collect(LabelInfo, "/managed/label_info", LATCHED)
        camera = harness.probe.create_publisher(Image, "/managed/image", RELIABLE)
        sent = {"count": 0}

        def step():
            sent["count"] += 1
            camera.publish(bgr_image(Image, Header, Time, sec=sent["count"], frame_id="managed_cam"))
            time.sleep(0.02)

        assert lifecycle.transition("configure", Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "inactive" and node.segmenter is not None
        assert "/managed/labels" in wait_for_graph(node, "publishers", {"/managed/labels"})
        harness.spin_for(1.5, step)  # inactive: frames are neither taken nor published
        assert labels == [] and label_info == [] and node.stats.received == 0

        assert lifecycle.transition("activate", Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == "active"
        assert harness.spin_until(lambda: bool(labels) and bool(label_info), timeout=30, step=step)
        assert labels[-1].header.frame_id == "managed_cam" and labels[-1].header.stamp.sec >= 1

        model = node.segmenter
        assert lifecycle.transition("deactivate", Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == "inactive" and node.segmenter is model, "deactivate keeps the model"
        harness.spin_for(1.0)  # results already on the wire before the transition
        seen, received = len(labels), node.stats.received
        harness.spin_for(1.5, step)
        assert len(labels) == seen, "nothing may be published while inactive"
        assert node.stats.received == received, "no frames are taken while inactive"

        assert lifecycle.transition("activate", Transition.TRANSITION_ACTIVATE)
        assert harness.spin_until(lambda: len(labels) > seen, timeout=30, step=step), "active again"

        assert lifecycle.transition("deactivate", Transition.TRANSITION_DEACTIVATE)
        backend = weakref.ref(node.segmenter.backend)
        del model
        assert lifecycle.transition("cleanup", Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == "unconfigured" and node.segmenter is None
        assert backend() is None, "cleanup frees the model"

        assert lifecycle.transition("configure", Transition.TRANSITION_CONFIGURE), "configures again after cleanup"
        assert lifecycle.transition("shutdown", Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert lifecycle.state() == "finalized" and node.segmenter is None
        print(f"\nlifecycle transition wall times (s), tiny model on CPU: {lifecycle.times}")
    finally:
        harness.close()
        node.close()
        node.destroy_node()


def test_lifecycle_configure_failure_keeps_the_node_unconfigured(ros, tmp_path, tiny_weights, capfd):
    missing = tmp_path / "missing.pt"
    node = LifecycleSegmentationNode(namespace="/managed_bad", parameter_overrides=parameters(
        tiny_weights, weights=str(missing)))
    harness = Harness(node)
    try:
        lifecycle = LifecycleClient(harness, "/managed_bad/segmentation_node")
        assert not lifecycle.transition("configure", Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "unconfigured" and node.segmenter is None
        assert "/managed_bad/labels" not in graph(node, "publishers"), "a failed configure leaves nothing behind"
        error_lines = [line for line in capfd.readouterr().err.splitlines() if "cannot start the segmentation node" in line]
        assert len(error_lines) == 1 and str(missing) in error_lines[0]
        bad_camera = LifecycleSegmentationNode(namespace="/managed_bad2", parameter_overrides=parameters(
            tiny_weights, cameras=["front", "front"]))
        try:
            assert bad_camera.trigger_configure() == bad_camera_failure()
        finally:
            bad_camera.destroy_node()
        assert "parameter 'cameras' names front more than once" in capfd.readouterr().err
    finally:
        harness.close()
        node.close()
        node.destroy_node()


def bad_camera_failure():
    from rclpy.lifecycle import TransitionCallbackReturn

    return TransitionCallbackReturn.FAILURE


def test_lifecycle_node_process(tmp_path, tiny_weights):
    """`segmentation_node --lifecycle` as its own process, driven like `ros2 lifecycle set` would."""
    process = NodeProcess(tmp_path / "lifecycle.log", namespace="/xlc", arguments=["--lifecycle"],
                          parameters={"weights": str(tiny_weights), "device": "cpu", "backend": "torch"})
    probe = Probe("lifecycle_process_probe")
    try:
        state = probe.call(GetState, "/xlc/segmentation_node/get_state", GetState.Request(), timeout=180)
        assert state is not None, process.output
        assert state.current_state.label == "unconfigured" and "segmenting" not in process.output
        labels = probe.collect(Image, "/xlc/labels", RELIABLE)
        camera = probe.publisher(Image, "/xlc/image", RELIABLE)
        times = {}

        def transition(name, transition_id):
            started = time.monotonic()
            response = probe.call(ChangeState, "/xlc/segmentation_node/change_state",
                                  ChangeState.Request(transition=Transition(id=transition_id)), timeout=120)
            times[name] = round(time.monotonic() - started, 3)
            return response is not None and response.success

        sent = []

        def step():
            sent.append(bgr_image(Image, Header, Time, sec=len(sent) + 1, frame_id="xlc_cam"))
            camera.publish(sent[-1])
            time.sleep(0.03)

        assert transition("configure", Transition.TRANSITION_CONFIGURE), process.output
        assert probe.wait_for(lambda: False, 1.0, step) is False and labels == [], "inactive: no results"
        assert transition("activate", Transition.TRANSITION_ACTIVATE), process.output
        assert probe.wait_for(lambda: bool(labels), 60, step), process.output
        assert labels[0].header.frame_id == "xlc_cam" and labels[0].header.stamp.sec >= 1
        assert transition("deactivate", Transition.TRANSITION_DEACTIVATE)
        time.sleep(1.0)
        seen = len(labels)
        probe.wait_for(lambda: False, 1.5, step)
        assert len(labels) == seen, "nothing may be published while inactive"
        print(f"\nlifecycle transition wall times (s), node process, tiny model: {times}")
        status, elapsed = process.stop(signal.SIGINT)
        assert status == 0, process.output[-3000:]
        log_lines = [line for line in process.output.splitlines() if ": done in " in line]
        assert [line.split("]: ")[-1].split(":")[0] for line in log_lines] == ["configure", "activate", "deactivate"]
    finally:
        probe.close()
        process.kill()
