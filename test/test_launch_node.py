"""End to end with ROS 2: launch/segment.launch.py starts the installed node with a tiny model; frames
in, results out, a bad frame, runtime parameters, clean shutdown.

Needs ROS 2 (Humble or Jazzy) sourced and bisenetv2_ros built with colcon; runs with launch_testing's
pytest plugin (pytest 7.4 as shipped with ROS): `colcon test --packages-select bisenetv2_ros` or
`python3 -m pytest test/test_launch_node.py` in the sourced workspace. Skipped elsewhere.
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="ROS 2 launch_testing is not installed: source a ROS 2 Humble/Jazzy setup to run this")
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: source a ROS 2 Humble/Jazzy setup")

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory  # noqa: E402

try:
    get_package_share_directory("bisenetv2_ros")
except PackageNotFoundError:
    pytest.skip("bisenetv2_ros is not installed in the sourced workspace: run `colcon build` first",
                allow_module_level=True)

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from conftest import make_tiny_checkpoint  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from ros_support import bgr_image, spin_until, use_installed_messages  # noqa: E402

import launch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMERA = "/launch_test_camera"
NAMESPACE = "/segmentation"
FRAME_ID = "launch_test_optical_frame"
WEIGHTS = Path(tempfile.mkdtemp(prefix="bisenetv2_launch_test_")) / "tiny.pt"


@pytest.mark.launch_test
def generate_test_description():
    make_tiny_checkpoint(WEIGHTS)
    segment = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(ROOT / "launch" / "segment.launch.py")),
        launch_arguments={
            "image": f"{CAMERA}/image_raw",
            "camera_info": f"{CAMERA}/camera_info",
            "params_file": str(ROOT / "config" / "segmentation.yaml"),
            "weights": str(WEIGHTS),
            "backend": "torch",
            "device": "cpu",
        }.items(),
    )
    return launch.LaunchDescription([segment, launch_testing.actions.ReadyToTest()])


class TestSegmentationNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        use_installed_messages()
        from builtin_interfaces.msg import Time
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Header
        from vision_msgs.msg import LabelInfo

        from bisenetv2_ros.msg import SegmentationInfo

        cls.types = dict(Image=Image, Header=Header, Time=Time)
        cls.node = rclpy.create_node("segmentation_launch_test_probe")
        reliable = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=20)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        cls.received = {name: [] for name in ("labels", "color", "overlay", "camera_info", "info", "label_info",
                                              "diagnostics")}
        topics = [("labels", Image, reliable), ("color", Image, reliable), ("overlay", Image, reliable),
                  ("camera_info", CameraInfo, reliable), ("info", SegmentationInfo, reliable),
                  ("label_info", LabelInfo, latched)]
        for name, msg_type, qos in topics:
            cls.node.create_subscription(msg_type, f"{NAMESPACE}/{name}",
                                         lambda msg, name=name: cls.received[name].append(msg), qos)
        cls.node.create_subscription(DiagnosticArray, "/diagnostics",
                                     lambda msg: cls.received["diagnostics"].append(msg), 10)
        cls.image_publisher = cls.node.create_publisher(Image, f"{CAMERA}/image_raw", reliable)
        cls.info_publisher = cls.node.create_publisher(CameraInfo, f"{CAMERA}/camera_info", reliable)
        cls.CameraInfo = CameraInfo
        cls.next_sec = 1000
        cls.sent_stamps = set()
        # The node subscribes once its model is loaded.
        assert spin_until(rclpy, cls.node, lambda: cls.node.count_subscribers(f"{CAMERA}/image_raw") > 0, 120), \
            "the node never subscribed to the camera"

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def publish_frame(self, encoding="bgr8"):
        cls = type(self)
        cls.next_sec += 1
        msg = bgr_image(self.types["Image"], self.types["Header"], self.types["Time"], sec=cls.next_sec,
                        frame_id=FRAME_ID, encoding=encoding)
        info = self.CameraInfo(header=msg.header, height=msg.height, width=msg.width, distortion_model="plumb_bob")
        self.info_publisher.publish(info)
        self.image_publisher.publish(msg)
        if encoding == "bgr8":
            cls.sent_stamps.add(cls.next_sec)

    def publish_until(self, condition, timeout=60.0):
        last = [0.0]

        def step():
            if time.monotonic() - last[0] > 0.2:
                last[0] = time.monotonic()
                self.publish_frame()

        return spin_until(rclpy, self.node, condition, timeout, step)

    def test_1_outputs_keep_stamp_frame_and_size(self):
        received = self.received
        assert self.publish_until(lambda: all(received[n] for n in ("labels", "color", "camera_info", "info",
                                                                    "label_info")))
        labels = received["labels"][-1]
        self.assertIn(labels.header.stamp.sec, self.sent_stamps)
        self.assertEqual((labels.header.stamp.nanosec, labels.header.frame_id), (500, FRAME_ID))
        self.assertEqual((labels.encoding, labels.height, labels.width, labels.step), ("mono8", 48, 64, 64))
        self.assertEqual(len(labels.data), 48 * 64)
        self.assertLess(max(labels.data), 11)
        color = received["color"][-1]
        self.assertEqual((color.encoding, color.height, color.width, color.step), ("rgb8", 48, 64, 192))
        self.assertEqual(color.header.frame_id, FRAME_ID)
        info = received["info"][-1]
        self.assertEqual(info.header.frame_id, FRAME_ID)
        self.assertEqual((info.model, info.backend, info.device), (str(WEIGHTS), "torch", "cpu"))
        self.assertEqual(len(info.class_fractions), 11)
        self.assertAlmostEqual(sum(info.class_fractions), 1.0, places=4)
        self.assertGreaterEqual(info.frames_received, info.frames_processed)
        self.assertGreater(info.latency_ms, 0.0)
        camera_info = received["camera_info"][-1]
        self.assertEqual((camera_info.header.frame_id, camera_info.distortion_model), (FRAME_ID, "plumb_bob"))
        self.assertIn(camera_info.header.stamp.sec, self.sent_stamps)
        label_info = received["label_info"][-1]
        self.assertEqual([c.class_id for c in label_info.class_map], list(range(11)) + [255])
        self.assertEqual(label_info.class_map[0].class_name, "sky")
        self.assertEqual(received["overlay"], [], "overlay is off by default")

    def test_2_bad_frame_is_dropped_and_node_keeps_running(self):
        received = self.received
        self.publish_frame(encoding="32FC1")  # depth, not a camera image
        spin_until(rclpy, self.node, lambda: False, 1.0)  # let the worker take the bad frame alone
        count = len(received["labels"])
        assert self.publish_until(lambda: len(received["labels"]) > count + 2)

        def invalid_reported():
            for array in received["diagnostics"]:
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if "segmentation" in status.name and int(values.get("dropped invalid", "0")) >= 1:
                        return True
            return False

        assert self.publish_until(invalid_reported, timeout=10), "diagnostics never counted the invalid frame"
        self.assertGreaterEqual(received["info"][-1].frames_dropped, 1)

    def test_3_runtime_parameters(self):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{NAMESPACE}/segmentation_node/set_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=30))

        def set_parameter(name, value):
            request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
            future = client.call_async(request)
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=30)
            return future.result().results[0]

        self.assertTrue(set_parameter("publish_overlay", True).successful)
        self.assertTrue(set_parameter("overlay_alpha", 0.25).successful)
        assert self.publish_until(lambda: bool(self.received["overlay"]))
        overlay = self.received["overlay"][-1]
        self.assertEqual((overlay.encoding, overlay.height, overlay.width, overlay.header.frame_id),
                         ("rgb8", 48, 64, FRAME_ID))
        rejected = set_parameter("weights", "/some/other.pt")
        self.assertFalse(rejected.successful)
        self.assertTrue(rejected.reason)
        self.assertFalse(set_parameter("overlay_alpha", 3.0).successful)
        self.node.destroy_client(client)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
