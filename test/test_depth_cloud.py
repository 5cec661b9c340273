"""depth_cloud: registered depth (16UC1 mm, 32FC1 m) + CameraInfo -> an organised cloud aligned with the
labels, without ROS (rosbags message types)."""

from __future__ import annotations

import numpy as np
import pytest

from bisenetv2_ros.ros import depth_cloud
from bisenetv2_ros.ros.messages import ImageConversionError

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")


@pytest.fixture(scope="module")
def types():
    return rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY).types


def header(types, sec=5, frame_id="camera_optical"):
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=7), frame_id=frame_id)


def depth_image(types, values: np.ndarray, encoding: str, big_endian=False, pad=0):
    dtype = np.dtype(np.uint16 if encoding == "16UC1" else np.float32).newbyteorder(">" if big_endian else "<")
    rows = values.astype(dtype).view(np.uint8).reshape(values.shape[0], -1)
    rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    return types["sensor_msgs/msg/Image"](header=header(types), height=values.shape[0], width=values.shape[1],
                                          encoding=encoding, is_bigendian=int(big_endian), step=rows.shape[1],
                                          data=rows.reshape(-1))


def camera_info(types, fx=100.0, fy=110.0, cx=3.5, cy=2.5, width=8, height=6):
    k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(types), height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5), k=k,
        r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False))


def test_depth_encodings_and_invalid_values(types):
    millimetres = np.array([[0, 1000, 2500], [65535, 1, 400]], np.uint16)
    metres = depth_cloud.depth_to_metres(depth_image(types, millimetres, "16UC1", pad=2))
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.0) and metres[1, 0] == pytest.approx(65.535)
    big = depth_cloud.depth_to_metres(depth_image(types, millimetres, "16UC1", big_endian=True))
    assert np.array_equal(np.isnan(big), np.isnan(metres)) and np.nanmax(np.abs(big - metres)) == 0
    floats = np.array([[1.5, np.nan, np.inf], [-1.0, 0.0, 3.25]], np.float32)
    metres = depth_cloud.depth_to_metres(depth_image(types, floats, "32FC1", pad=4))
    assert metres.dtype == np.float32
    assert np.array_equal(np.isnan(metres), np.array([[False, True, True], [True, True, False]]))
    assert metres[0, 0] == 1.5 and metres[1, 2] == 3.25


def test_bad_depth_inputs_are_named(types):
    with pytest.raises(ImageConversionError, match="unsupported depth encoding 'bgr8'.*16UC1"):
        depth_cloud.depth_to_metres(types["sensor_msgs/msg/Image"](
            header=header(types), height=2, width=2, encoding="bgr8", is_bigendian=0, step=6, data=np.zeros(12, np.uint8)))
    short = depth_image(types, np.ones((4, 4), np.uint16), "16UC1")
    short.data = short.data[:-1]
    with pytest.raises(ImageConversionError, match="do not hold 8 bytes per row"):
        depth_cloud.depth_to_metres(short)
    with pytest.raises(ImageConversionError, match="no usable intrinsics"):
        depth_cloud.aligned_points(np.ones((6, 8), np.float32), camera_info(types, fx=0.0), np.zeros((6, 8), np.uint8))


def test_points_back_project_every_pixel(types):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, (6, 8)).astype(np.float32)
    depth[2, 5] = np.nan
    labels = rng.integers(0, 11, (6, 8), dtype=np.uint8)
    confidence = rng.integers(23, 256, (6, 8), dtype=np.uint8)
    points = depth_cloud.aligned_points(depth, camera_info(types), labels, confidence)
    assert points.shape == (6, 8)
    v, u = 4, 1
    assert points["z"][v, u] == depth[v, u]
    assert points["x"][v, u] == pytest.approx((u - 3.5) * depth[v, u] / 100.0, rel=1e-6)
    assert points["y"][v, u] == pytest.approx((v - 2.5) * depth[v, u] / 110.0, rel=1e-6)
    assert np.isnan(points["x"][2, 5]) and np.isnan(points["y"][2, 5]) and np.isnan(points["z"][2, 5])
    assert np.array_equal(points["label"], labels) and np.array_equal(points["confidence"], confidence)
    assert np.isfinite(points["z"]).sum() == 6 * 8 - 1
    without = depth_cloud.aligned_points(depth, camera_info(types), labels)
    assert not without["confidence"].any()


def test_depth_at_another_resolution_is_resized_with_its_intrinsics(types):
    # A 4x3 depth image of a plane 2 m away, calibrated at 4x3, for 8x6 labels: same rays, same points.
    small_info = camera_info(types, fx=50.0, fy=55.0, cx=1.5, cy=1.0, width=4, height=3)
    depth = np.full((3, 4), 2.0, np.float32)
    points = depth_cloud.aligned_points(depth, small_info, np.zeros((6, 8), np.uint8))
    full = depth_cloud.aligned_points(np.full((6, 8), 2.0, np.float32), camera_info(types, fx=100.0, fy=110.0,
                                      cx=3.5, cy=2.5), np.zeros((6, 8), np.uint8))
    for field in ("x", "y", "z"):
        assert np.allclose(points[field], full[field], atol=1e-6)


def test_cloud_message_layout(types):
    depth = np.linspace(1, 2, 48, dtype=np.float32).reshape(6, 8)
    labels = np.arange(48, dtype=np.uint8).reshape(6, 8) % 11
    points = depth_cloud.aligned_points(depth, camera_info(types), labels, np.full((6, 8), 200, np.uint8))
    msg = depth_cloud.cloud_message(types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"],
                                    header(types, sec=9), points)
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense, msg.is_bigendian) == (
        6, 8, 16, 128, False, False)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("label", 12, 2, 1), ("confidence", 13, 2, 1)]
    assert len(msg.data) == 6 * 8 * 16 and msg.header.stamp.sec == 9
    back = depth_cloud.cloud_to_points(msg)
    assert np.array_equal(back["label"], labels) and np.array_equal(back["z"], depth)
    # Readable the way a C++ PointCloud2 iterator reads it: float32 at the field's offset, row-major.
    raw = np.asarray(msg.data).reshape(6, 8, 16)
    assert raw[3, 5, 8:12].view("<f4")[0] == depth[3, 5] and raw[3, 5, 12] == labels[3, 5]
    # And it serialises as a real message.
    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)
    assert store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"),
                                 "sensor_msgs/msg/PointCloud2").row_step == 128
