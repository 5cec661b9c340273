"""The rclpy node in-process: parameter descriptors, runtime parameter changes, compressed input, bad
frames, start-up errors. Runs with the venv's ROS 2 wheels (scripts/setup_ros_wheels.sh) or a ROS 2
install with bisenetv2_ros built; skipped without rclpy, except under CI where that fails.

The node as its own process is tested in test_node_process.py, the launch file in test_launch_node.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_support import bgr_image, require_ros, spin_until  # noqa: E402

require_ros()

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bisenetv2_ros.ros import parameters as node_parameters
from bisenetv2_ros.ros import pipeline as node_core  # noqa: E402
from bisenetv2_ros.ros.node import SegmentationNode  # noqa: E402

RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def make_node(ros, tiny_weights):
    created = []

    def make(namespace, **parameters):
        values = {"weights": str(tiny_weights), "device": "cpu", "backend": "torch", **parameters}
        node = SegmentationNode(namespace=namespace,
                                parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        created.append(node)
        return node

    yield make
    for node in created:
        node.close()
        node.destroy_node()


@pytest.fixture
def probe(ros):
    node = rclpy.create_node("segmentation_node_test_probe")
    yield node
    node.destroy_node()


def spin_both(node, probe, condition, timeout=30.0, step=None):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    try:
        return spin_until(rclpy, executor, condition, timeout, step)
    finally:
        executor.remove_node(node)
        executor.remove_node(probe)
        executor.shutdown()


def test_parameters_have_descriptors(make_node):
    node = make_node("/descriptor_test")
    weights = node.describe_parameter("weights")
    assert weights.read_only and "Checkpoint" in weights.description
    alpha = node.describe_parameter("overlay_alpha")
    assert not alpha.read_only
    assert (alpha.floating_point_range[0].from_value, alpha.floating_point_range[0].to_value) == (0.0, 1.0)
    height = node.describe_parameter("input_height")
    assert height.read_only and height.integer_range[0].to_value == node_parameters.MAX_INPUT_SIDE


def test_runtime_parameter_changes(make_node):
    node = make_node("/runtime_param_test")
    (result,) = node.set_parameters([Parameter("overlay_alpha", value=0.3)])
    assert result.successful and node.settings.overlay_alpha == pytest.approx(0.3)
    (result,) = node.set_parameters([Parameter("publish_overlay", value=True)])
    assert result.successful and node.settings.publish_overlay is True
    (result,) = node.set_parameters([Parameter("max_rate_hz", value=-1.0)])
    assert not result.successful and node.settings.max_rate_hz == 0.0
    (result,) = node.set_parameters([Parameter("weights", value="/other.pt")])
    assert not result.successful and result.reason


def test_raw_frames_and_a_bad_one(make_node, probe):
    node = make_node("/raw_test")
    labels = []
    probe.create_subscription(Image, "/raw_test/labels", labels.append, RELIABLE)
    publisher = probe.create_publisher(Image, "/raw_test/image", RELIABLE)
    bad = bgr_image(Image, Header, Time, sec=1, frame_id="cam", encoding="32FC1")
    bad_sent = []
    # Published until the node has seen one: the first messages may go out before discovery matched.
    # More bad frames may still be in flight afterwards, so the count is bounded, not frozen.
    assert spin_both(node, probe, lambda: node.stats.dropped_invalid >= 1, timeout=20,
                     step=lambda: (publisher.publish(bad), bad_sent.append(bad), time.sleep(0.05)))
    sent = []

    def step():
        if len(sent) < 50:
            sent.append(bgr_image(Image, Header, Time, sec=10 + len(sent), frame_id="cam"))
            publisher.publish(sent[-1])
            time.sleep(0.02)

    assert spin_both(node, probe, lambda: bool(labels), step=step)
    assert labels[0].header.frame_id == "cam" and labels[0].header.stamp.sec >= 10
    assert (labels[0].height, labels[0].width, labels[0].encoding) == (48, 64, "mono8")
    # Good frames are never counted invalid: every invalid drop is one of the bad frames sent.
    assert node.worker.alive and 1 <= node.stats.dropped_invalid <= len(bad_sent) and node.stats.processed >= 1


def test_compressed_input(make_node, probe):
    import cv2

    node = make_node("/compressed_test", input_transport="compressed")
    labels = []
    probe.create_subscription(Image, "/compressed_test/labels", labels.append, RELIABLE)
    publisher = probe.create_publisher(CompressedImage, "/compressed_test/image/compressed", RELIABLE)
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    msg = CompressedImage(header=Header(stamp=Time(sec=7, nanosec=9), frame_id="cam_c"), format="png",
                          data=png.tobytes())
    assert spin_both(node, probe, lambda: bool(labels), step=lambda: publisher.publish(msg))
    assert (labels[0].height, labels[0].width, labels[0].header.stamp.sec, labels[0].header.frame_id) == (
        30, 40, 7, "cam_c")


def test_startup_error_is_one_line(ros, tmp_path):
    with pytest.raises(node_core.StartupError) as caught:
        SegmentationNode(namespace="/startup_error_test",
                         parameter_overrides=[Parameter("weights", value=str(tmp_path / "missing.pt"))])
    assert "missing.pt" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(node_core.StartupError, match="backend"):
        SegmentationNode(namespace="/startup_error_test2",
                         parameter_overrides=[Parameter("backend", value="cuda")])


def test_oversized_frames_are_dropped_and_counted(make_node, probe):
    """A PNG whose header declares 20000x20000 and a raw frame with a 4 GB step: dropped, counted as
    invalid, the node unharmed; a frame within max_input_pixels still goes through."""
    import cv2
    from test_message_limits import png_declaring

    node = make_node("/limits_test", input_transport="compressed", max_input_pixels=1200)
    limit = node.describe_parameter("max_input_pixels")
    assert limit.read_only and (limit.integer_range[0].from_value, limit.integer_range[0].to_value) == (1, 32768**2)
    labels = []
    probe.create_subscription(Image, "/limits_test/labels", labels.append, RELIABLE)
    publisher = probe.create_publisher(CompressedImage, "/limits_test/image/compressed", RELIABLE)
    huge = CompressedImage(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="cam_c"), format="png",
                           data=png_declaring(20000, 20000))
    huge_sent = []
    assert spin_both(node, probe, lambda: node.stats.dropped_invalid >= 1, timeout=20,
                     step=lambda: (publisher.publish(huge), huge_sent.append(1), time.sleep(0.05)))
    # a real 50x50 PNG (2500 pixels) decodes fine: only the limit can drop it. Each huge frame is at
    # most one drop, so more drops than huge frames sent means a 50x50 one was dropped too.
    over = CompressedImage(header=Header(stamp=Time(sec=3, nanosec=0), frame_id="cam_c"), format="png",
                           data=cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1].tobytes())
    assert spin_both(node, probe, lambda: node.stats.dropped_invalid > len(huge_sent), timeout=20,
                     step=lambda: (publisher.publish(over), time.sleep(0.05)))
    assert labels == [] and node.worker.alive and node.stats.processed == 0
    fits = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes()  # 1200 pixels: at the limit
    msg = CompressedImage(header=Header(stamp=Time(sec=7, nanosec=0), frame_id="cam_c"), format="png", data=fits)
    assert spin_both(node, probe, lambda: bool(labels), step=lambda: (publisher.publish(msg), time.sleep(0.02)))
    assert (labels[0].height, labels[0].width) == (30, 40)

    raw_node = make_node("/raw_limits_test")
    raw_publisher = probe.create_publisher(Image, "/raw_limits_test/image", RELIABLE)
    step_4gb = Image(header=Header(stamp=Time(sec=2, nanosec=0), frame_id="cam"), height=1, width=10, encoding="rgb8",
                     is_bigendian=0, step=4294967295, data=bytes(30))
    assert spin_both(raw_node, probe, lambda: raw_node.stats.dropped_invalid >= 1, timeout=20,
                     step=lambda: (raw_publisher.publish(step_4gb), time.sleep(0.05)))
    assert raw_node.worker.alive and raw_node.stats.processed == 0


def test_outputs_are_computed_only_while_someone_subscribes(make_node, probe):
    """Colour, overlay and confidence are switched on, but only labels has a subscriber: none of them is
    computed. An overlay subscriber appears: the next frames build the overlay (and only it); it leaves:
    the frames after that stop building it. Real rclpy graph, checked per frame."""
    node = make_node("/listen_test", publish_color=True, publish_overlay=True, publish_confidence=True)
    labels, overlays = [], []
    probe.create_subscription(Image, "/listen_test/labels", labels.append, RELIABLE)
    publisher = probe.create_publisher(Image, "/listen_test/image", RELIABLE)
    sent = []

    def step():
        sent.append(bgr_image(Image, Header, Time, sec=20 + len(sent), frame_id="cam"))
        publisher.publish(sent[-1])
        time.sleep(0.02)

    assert spin_both(node, probe, lambda: len(labels) >= 3, step=step)
    assert node.pipeline.computed == {} and overlays == []
    overlay_subscription = probe.create_subscription(Image, "/listen_test/overlay", overlays.append, RELIABLE)
    assert spin_both(node, probe, lambda: len(overlays) >= 2, step=step)
    assert set(node.pipeline.computed) == {"overlay"} and (overlays[0].height, overlays[0].width) == (48, 64)
    probe.destroy_subscription(overlay_subscription)
    overlay_publisher = node._publishers_by_camera[0]["overlay"]
    assert spin_both(node, probe, lambda: overlay_publisher.get_subscription_count() == 0, step=step)
    built, processed = node.pipeline.computed["overlay"], node.stats.processed
    # The worker may be inside a frame that asked before the subscriber left: allow that one frame.
    assert spin_both(node, probe, lambda: node.stats.processed >= processed + 3, step=step)
    assert node.pipeline.computed["overlay"] <= built + 1 and set(node.pipeline.computed) == {"overlay"}
