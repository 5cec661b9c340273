"""The node as nav2's semantic_segmentation_layer sees it (config/nav2_semantic_layer.yaml), with real rclpy:
subscriptions with the layer's QoS (sensor-data best effort for mask, confidence and cloud; reliable +
transient local LabelInfo, subscribed after the node started), mask, confidence and aligned cloud
paired by exact stamp as its ExactTime synchroniser does (use_approximate_time_sync: false), and every
class the example configuration names present in LabelInfo. Skipped without rclpy, except under CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_support import bgr_image, require_ros, spin_until, stamp_ns  # noqa: E402

require_ros()

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import LabelInfo, VisionClass  # noqa: E402

from bisenetv2_ros.classes import CAMVID, CITYSCAPES  # noqa: E402
from bisenetv2_ros.ros import depth_cloud, messages  # noqa: E402
from bisenetv2_ros.ros.node import SegmentationNode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The layer's subscriptions: nav2::qos::SensorDataQoS(50) and nav2::qos::LatchedSubscriptionQoS(5).
SENSOR_DATA = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=50,
                         durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
CAMERA_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)


def layer_sources() -> dict:
    data = yaml.safe_load((ROOT / "config" / "nav2_semantic_layer.yaml").read_text())
    return data["local_costmap"]["local_costmap"]["ros__parameters"]["semantic_segmentation_layer"]


def configured_classes(source: dict) -> set[str]:
    return {name for kind in source["class_types"] for name in source[kind]["classes"]}


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_layer_configuration_names_only_published_classes():
    """Every class of each example source is one the node announces for that model's class set."""
    layer = layer_sources()
    assert layer["plugin"] == "semantic_segmentation_layer::SemanticSegmentationLayer"
    assert layer["use_approximate_time_sync"] is False and layer["observation_sources"] == "camvid"
    for source_name, classes in (("camvid", CAMVID), ("cityscapes", CITYSCAPES)):
        source = layer[source_name]
        info = messages.label_info_message(LabelInfo, VisionClass, classes, Header())
        announced = {c.class_name for c in info.class_map}
        assert configured_classes(source) <= announced, configured_classes(source) - announced
        assert source["traversable"]["max_cost"] == 0 and source["danger"]["max_cost"] == 254
        assert not set(source["traversable"]["classes"]) & set(source["danger"]["classes"])
        assert messages.UNLABELLED_NAME in announced and messages.UNLABELLED_NAME not in configured_classes(source)
        for kind in source["class_types"]:  # the layer declares these as integers
            assert all(isinstance(source[kind][key], int) and not isinstance(source[kind][key], bool)
                       for key in ("base_cost", "max_cost", "mark_confidence", "samples_to_max_cost"))


def test_node_outputs_as_the_layer_subscribes(ros, tiny_weights):
    namespace = "/nav2_layer_test"
    # As `segment.launch.py nav2:=true` starts it: labels remapped to mask, confidence on.
    node = SegmentationNode(namespace=namespace, cli_args=["--ros-args", "-r", "labels:=mask"],
                            parameter_overrides=[Parameter("weights", value=str(tiny_weights)),
                                                 Parameter("device", value="cpu"), Parameter("backend", value="torch"),
                                                 Parameter("publish_confidence", value=True),
                                                 Parameter("publish_points", value=True)])
    probe = rclpy.create_node("nav2_layer_probe")
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    try:
        source = layer_sources()["camvid"]
        topics = {key: source[key].replace("/segmentation", namespace)
                  for key in ("segmentation_topic", "confidence_topic", "labels_topic", "pointcloud_topic")}
        masks, confidences, clouds, label_infos = {}, {}, {}, []
        probe.create_subscription(PointCloud2, topics["pointcloud_topic"],
                                  lambda m: clouds.setdefault(stamp_ns(m.header.stamp), m), SENSOR_DATA)
        probe.create_subscription(Image, topics["segmentation_topic"],
                                  lambda m: masks.setdefault(stamp_ns(m.header.stamp), m), SENSOR_DATA)
        probe.create_subscription(Image, topics["confidence_topic"],
                                  lambda m: confidences.setdefault(stamp_ns(m.header.stamp), m), SENSOR_DATA)
        # Latched: subscribed after the node published it at start-up, it still arrives.
        spin_until(rclpy, executor, lambda: False, 0.5)
        probe.create_subscription(LabelInfo, topics["labels_topic"], label_infos.append, LATCHED)
        publisher = probe.create_publisher(Image, f"{namespace}/image", CAMERA_QOS)
        depth_publisher = probe.create_publisher(Image, f"{namespace}/depth", CAMERA_QOS)
        depth_info_publisher = probe.create_publisher(CameraInfo, f"{namespace}/depth_camera_info", CAMERA_QOS)
        k = [60.0, 0.0, 25.5, 0.0, 60.0, 17.5, 0.0, 0.0, 1.0]
        sent = {}

        def step():
            if len(sent) < 40:
                msg = bgr_image(Image, Header, Time, sec=100 + len(sent), frame_id="camera_optical", height=36, width=52)
                millimetres = np.full((36, 52), 1500 + 10 * len(sent), np.uint16)
                millimetres[:, :4] = 0  # no depth at the left edge
                depth_info_publisher.publish(CameraInfo(header=msg.header, height=36, width=52, k=k))
                depth_publisher.publish(Image(header=msg.header, height=36, width=52, encoding="16UC1", is_bigendian=0,
                                              step=104, data=millimetres.tobytes()))
                sent[stamp_ns(msg.header.stamp)] = (msg, millimetres)
                publisher.publish(msg)
            for _ in range(20):  # a node's own executor takes each callback as it comes; so does this one
                executor.spin_once(timeout_sec=0.005)

        def paired():  # the layer's ExactTime pairing: same stamp on mask, confidence and cloud
            return set(masks) & set(confidences) & set(clouds)

        assert spin_until(rclpy, executor, lambda: len(paired()) >= 3 and label_infos, 60, step)
        info = label_infos[0]
        announced = {c.class_id: c.class_name for c in info.class_map}
        assert configured_classes(source) <= set(announced.values())
        for stamp in sorted(paired()):
            mask, confidence, cloud = masks[stamp], confidences[stamp], clouds[stamp]
            frame, millimetres = sent[stamp]
            for out in (mask, confidence):
                assert (out.encoding, out.height, out.width, out.step) == ("mono8", 36, 52, 52)
                assert out.header.frame_id == "camera_optical" and len(out.data) == 36 * 52
            values = np.frombuffer(bytes(mask.data), np.uint8)
            assert set(np.unique(values).tolist()) <= set(announced)  # every mask value names a class
            levels = np.frombuffer(bytes(confidence.data), np.uint8)
            assert levels.min() >= 255 // len(CAMVID) and levels.max() <= 255
            assert frame.header.stamp == mask.header.stamp
            # The layer's size check: as many points as mask pixels; and what it reads from them.
            assert (cloud.height, cloud.width, cloud.header.frame_id) == (36, 52, "camera_optical")
            points = depth_cloud.cloud_to_points(cloud)
            assert np.all(np.isnan(points["z"][:, :4])) and np.allclose(points["z"][:, 4:], millimetres[0, 10] / 1000)
            assert points["x"][0, 51] == pytest.approx((51 - 25.5) * millimetres[0, 10] / 1000 / 60, rel=1e-5)
            assert np.array_equal(points["label"].ravel(), values)
            assert np.array_equal(points["confidence"].ravel(), levels)
        # Nothing is published under the old name once remapped, so the layer cannot read a stale topic.
        assert probe.count_publishers(f"{namespace}/labels") == 0
        assert probe.count_publishers(topics["segmentation_topic"]) == 1
    finally:
        executor.remove_node(node)
        executor.remove_node(probe)
        executor.shutdown()
        node.close()
        node.destroy_node()
        probe.destroy_node()
