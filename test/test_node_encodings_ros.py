"""Every camera encoding through the real rclpy node: one real CamVid frame published as bgr8 and as
every other encoding (Bayer mosaics of all four patterns at 8 and 16 bits, 16-bit by x257 and as 12-bit
data with `input_significant_bits`, big-endian 16-bit, yuv 4:2:2, nv21, nv24, padded rows), segmented by
the shipped CamVid model; the labels of each colour encoding agree with the bgr8 labels on >= 95 % of
the pixels, the mono encodings give labels of the frame's size. A camera_info of another size is
warned about, counted on /diagnostics and not republished; one that fits is, with the frame's header."""

from __future__ import annotations

import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from encoded_frames import COLOUR_ENCODINGS, MONO_ENCODINGS, encode
from ros_support import require_ros, spin_until

require_ros()

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bisenetv2_ros.ros.node import SegmentationNode  # noqa: E402

RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
NAMESPACE = "/encodings_test"
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def camvid_rgb(camvid_dir):
    path = sorted((camvid_dir / "val").glob("*.jpg"))[20]
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # 360x480


@pytest.fixture(scope="module")
def running_node():
    rclpy.init()
    node = SegmentationNode(namespace=NAMESPACE, parameter_overrides=[
        Parameter("weights", value="camvid"), Parameter("backend", value="torch"), Parameter("device", value="cpu"),
        Parameter("precision", value="fp32"), Parameter("image_qos", value="reliable")])
    probe = rclpy.create_node("encodings_test_probe")
    labels: dict[str, Image] = {}
    infos: list[CameraInfo] = []
    diagnostics: list[DiagnosticArray] = []
    probe.create_subscription(CameraInfo, NAMESPACE + "/camera_info", infos.append, RELIABLE)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, RELIABLE)
    info_publisher = probe.create_publisher(CameraInfo, NAMESPACE + "/input_camera_info", RELIABLE)
    probe.create_subscription(Image, NAMESPACE + "/labels", lambda msg: labels.setdefault(msg.header.frame_id, msg),
                              RELIABLE)
    publisher = probe.create_publisher(Image, NAMESPACE + "/image", RELIABLE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)

    def segment(name: str, fields: dict, timeout: float = 60.0) -> np.ndarray:
        """Publishes the frame (again, until the node's answer for it arrives) -> its labels, HxW."""
        msg = Image(header=Header(stamp=Time(sec=1, nanosec=0), frame_id=name), height=fields["height"],
                    width=fields["width"], encoding=fields["encoding"], is_bigendian=fields["is_bigendian"],
                    step=fields["step"], data=fields["data"].tobytes())
        assert spin_until(rclpy, executor, lambda: name in labels, timeout,
                          step=lambda: (publisher.publish(msg), time.sleep(0.05))), f"no labels for {name}"
        out = labels[name]
        return np.frombuffer(bytes(out.data), np.uint8).reshape(out.height, out.width)

    def publish_camera_info(info: CameraInfo) -> None:
        """Sends ``info`` until the node holds it as its camera's camera_info."""
        assert spin_until(rclpy, executor, lambda: node.cameras[0].camera_info == info, 20,
                          step=lambda: (info_publisher.publish(info), time.sleep(0.05)))

    yield SimpleNamespace(node=node, segment=segment, infos=infos, diagnostics=diagnostics,
                          publish_camera_info=publish_camera_info,
                          spin=lambda condition, timeout: spin_until(rclpy, executor, condition, timeout))
    executor.shutdown()
    probe.destroy_node()
    node.close()
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def bgr8_labels(running_node, camvid_rgb):
    segment = running_node.segment
    labels = segment("bgr8-reference", encode(camvid_rgb, "bgr8"))
    assert labels.shape == camvid_rgb.shape[:2] and len(np.unique(labels)) >= 4  # a real road scene
    return labels


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
def test_colour_encodings_agree_with_bgr8(running_node, camvid_rgb, bgr8_labels, encoding):
    segment = running_node.segment
    wide = "16" in encoding
    labels = segment(encoding, encode(camvid_rgb, encoding, pad=4 if encoding != "nv21" else 2, big_endian=wide))
    agreement = float((labels == bgr8_labels).mean())
    assert agreement >= MIN_AGREEMENT, f"{encoding}: {agreement:.2%} of the bgr8 labels"


@pytest.mark.parametrize("encoding", ["rgb16", "bayer_rggb16", "bayer_gbrg16", "16UC3"])
def test_12_bit_data_with_its_significant_bits_agrees_with_bgr8(running_node, camvid_rgb, bgr8_labels, encoding):
    node, segment = running_node.node, running_node.segment
    (result,) = node.set_parameters([Parameter("input_significant_bits", value=12)])
    try:
        assert result.successful
        labels = segment(f"{encoding}-12bit", encode(camvid_rgb, encoding, significant_bits=12))
    finally:
        node.set_parameters([Parameter("input_significant_bits", value=16)])
    agreement = float((labels == bgr8_labels).mean())
    assert agreement >= MIN_AGREEMENT, f"12-bit {encoding}: {agreement:.2%} of the bgr8 labels"


@pytest.mark.parametrize("encoding", MONO_ENCODINGS)
def test_mono_encodings_give_labels(running_node, camvid_rgb, encoding):
    segment = running_node.segment
    labels = segment(encoding, encode(camvid_rgb, encoding, pad=4))
    assert labels.shape == camvid_rgb.shape[:2] and len(np.unique(labels)) >= 2


def test_camera_info_of_another_size_is_warned_counted_and_not_republished(running_node, camvid_rgb):
    node, segment, helpers = running_node.node, running_node.segment, running_node
    height, width = camvid_rgb.shape[:2]
    calibrated = CameraInfo(width=2 * width, height=2 * height, k=[400.0, 0, 479.5, 0, 400.0, 359.5, 0, 0, 1],
                            distortion_model="plumb_bob", roi=RegionOfInterest())
    helpers.publish_camera_info(calibrated)  # the full sensor, but the frames are 2x2 binned: no binning declared
    helpers.infos.clear()
    segment("info-mismatch", encode(camvid_rgb, "bgr8"))
    assert node.cameras[0].stats.camera_info_mismatched >= 1 and helpers.infos == []

    def reported() -> bool:
        return any(kv.key == "camera_info mismatched" and kv.value not in ("", "0")
                   for array in helpers.diagnostics for status in array.status for kv in status.values)

    assert helpers.spin(reported, 5.0), "the mismatch is counted on /diagnostics"
    binned = CameraInfo(width=2 * width, height=2 * height, k=calibrated.k, distortion_model="plumb_bob",
                        binning_x=2, binning_y=2, roi=RegionOfInterest())
    helpers.publish_camera_info(binned)
    segment("info-binned", encode(camvid_rgb, "bgr8"))
    assert helpers.spin(lambda: any(i.header.frame_id == "info-binned" for i in helpers.infos), 10.0)
    republished = next(i for i in helpers.infos if i.header.frame_id == "info-binned")
    assert (republished.header.stamp.sec, republished.binning_x, republished.width) == (1, 2, 2 * width)
