"""camera_info beside the outputs stays true: ros/camera_info.py (size with roi and binning, intrinsics of the
published image) and the pipeline, which republishes only a matching camera_info and warns about and
counts a mismatched one (also for the point cloud's depth camera_info)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bisenetv2_ros.ros import camera_info, depth_cloud, stats
from bisenetv2_ros.ros.frame_worker import FrameItem
from test_node_pipeline import header, image, make_pipeline, segmenter, types  # noqa: F401  (fixtures)


def info_msg(types, width=32, height=24, binning=(0, 0), roi=(0, 0, 0, 0), k=(100.0, 110.0, 15.5, 11.5)):  # noqa: F811
    fx, fy, cx, cy = k
    x_offset, y_offset, roi_height, roi_width = roi
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(types, sec=0, frame_id="calibration"), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], float), r=np.eye(3).ravel(), p=np.zeros(12),
        binning_x=binning[0], binning_y=binning[1],
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset, y_offset, roi_height, roi_width, False))


def test_described_size_applies_roi_then_binning(types):  # noqa: F811
    assert camera_info.described_size(info_msg(types, 640, 480)) == (640, 480)
    assert camera_info.described_size(info_msg(types, 640, 480, binning=(2, 2))) == (320, 240)
    assert camera_info.described_size(info_msg(types, 640, 480, roi=(100, 50, 200, 300))) == (300, 200)
    assert camera_info.described_size(info_msg(types, 640, 480, binning=(2, 4), roi=(100, 50, 200, 300))) == (150, 50)
    assert camera_info.described_size(info_msg(types, 0, 0)) is None  # uncalibrated: says nothing


def test_a_mismatch_names_both_sizes(types):  # noqa: F811
    camera_info.check_pairing(info_msg(types, 640, 480, binning=(2, 2)), 320, 240)
    with pytest.raises(camera_info.CameraInfoMismatch) as raised:
        camera_info.check_pairing(info_msg(types, 640, 480, binning=(2, 2)), 640, 480, "frame")
    assert str(raised.value) == ("camera_info (640x480, binning 2x2) describes a 320x240 image, but the frame it "
                                 "pairs with is 640x480")


def test_intrinsics_of_the_published_image_follow_roi_and_binning(types):  # noqa: F811
    full = info_msg(types, 640, 480, k=(500.0, 500.0, 319.5, 239.5))
    assert camera_info.image_intrinsics(full) == (500.0, 500.0, 319.5, 239.5, 640, 480)
    binned = info_msg(types, 640, 480, binning=(2, 2), k=(500.0, 500.0, 319.5, 239.5))
    assert camera_info.image_intrinsics(binned) == (250.0, 250.0, 159.5, 119.5, 320, 240)  # centre stays the centre
    cropped = info_msg(types, 640, 480, roi=(100, 40, 200, 300), k=(500.0, 500.0, 319.5, 239.5))
    assert camera_info.image_intrinsics(cropped) == (500.0, 500.0, 219.5, 199.5, 300, 200)


def test_matching_camera_info_is_republished_with_the_frame_header(types, segmenter):  # noqa: F811
    pipeline, published, warnings, counters = make_pipeline(types, segmenter)
    pipeline.cameras[0].camera_info = info_msg(types, 64, 48, binning=(2, 2))  # a binned 32x24 camera
    assert pipeline.process(FrameItem(image(types, sec=42, frame_id="front"), time.monotonic()))
    out = dict(published)["camera_info"]
    assert (out.header.stamp.sec, out.header.frame_id) == (42, "front")
    assert camera_info.described_size(out) == (dict(published)["labels"].width, dict(published)["labels"].height)
    assert warnings == [] and counters.camera_info_mismatched == 0


def test_mismatched_camera_info_is_warned_counted_and_not_republished(types, segmenter):  # noqa: F811
    pipeline, published, warnings, counters = make_pipeline(types, segmenter)
    pipeline.cameras[0].camera_info = info_msg(types, 640, 480)  # calibrated at another resolution
    for _ in range(2):
        counters.record_received()  # the node counts arrivals; the pipeline processes
        assert pipeline.process(FrameItem(image(types), time.monotonic()))
    assert "camera_info" not in dict(published) and "labels" in dict(published)
    assert warnings[0] == ("camera_info not republished: camera_info (640x480) describes a 640x480 image, but the "
                           "frame it pairs with is 32x24")
    assert counters.camera_info_mismatched == 2
    report = stats.diagnostics_report(counters.snapshot(), backend="torch", device="cpu", model="tiny")
    assert report.level == stats.WARN and report.message.startswith("2 camera_info message(s) did not match")
    assert ("camera_info mismatched", "2") in report.values


def test_the_cloud_refuses_a_depth_camera_info_of_another_size(types, segmenter):  # noqa: F811
    from test_depth_cloud import camera_info as depth_info, depth_image

    pipeline, published, warnings, counters = make_pipeline(types, segmenter, publish_points=True)
    camera = pipeline.cameras[0]
    frame = image(types, height=6, width=8, sec=42)
    depth = depth_image(types, np.full((6, 8), 2000, np.uint16), "16UC1")
    depth.header.stamp.sec = 42
    camera.depths.append(depth)
    camera.depth_info = depth_info(types, width=16, height=12)  # K for a 16x12 image, not this 8x6 one
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    assert "points" not in dict(published)
    assert warnings[-1] == ("no cloud: camera_info (16x12) describes a 16x12 image, but the depth image it pairs "
                            "with is 8x6")
    assert counters.camera_info_mismatched == 1
    camera.depth_info = depth_info(types, width=16, height=12)
    camera.depth_info.binning_x = camera.depth_info.binning_y = 2  # the same camera, binned: now it fits
    published.clear()
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    points = depth_cloud.cloud_to_points(dict(published)["points"])
    assert np.all(points["z"] == 2.0)
