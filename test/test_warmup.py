"""Start-up warm-up at the cameras' frame shapes (declared, or remembered from earlier runs), so the
first camera frame pays no graph build or shape specialisation. ROS-free (node_core, warmup)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from bisenetv2_ros.classes import CAMVID
from bisenetv2_ros.ros import pipeline as node_core
from bisenetv2_ros.ros import warmup
from bisenetv2_ros.ros.parameters import NodeSettings, SettingsError
from bisenetv2_ros.ros.stats import CameraState
from bisenetv2_ros.ros.warmup import MAX_REMEMBERED, RememberedShapes, WarmupShape, planned_shapes


def test_declared_sizes_are_checked_with_one_clear_line():
    assert NodeSettings.from_values({"warmup_frame_sizes": ["480x640", "720X1280"]}).warmup_sizes == [
        (480, 640), (720, 1280)]
    with pytest.raises(SettingsError, match=r"parameter 'warmup_frame_sizes': '640,480' is not HEIGHTxWIDTH"):
        NodeSettings.from_values({"warmup_frame_sizes": ["480x640", "640,480"]})
    with pytest.raises(SettingsError, match=r"'warmup_frame_sizes': 480x100000 exceeds"):
        NodeSettings.from_values({"warmup_frame_sizes": ["480x100000"]})


def test_planned_shapes_cover_orders_batches_and_remembered_ones():
    remembered = [WarmupShape(1, 360, 480, "rgb"), WarmupShape(1, 480, 640, "bgr")]  # the second is declared too
    shapes = planned_shapes((240, 320), [(480, 640)], cameras=2, compressed=False, remembered=remembered)
    assert shapes == [WarmupShape(1, 240, 320, "rgb"),  # the network input size, as before
                      WarmupShape(1, 480, 640, "bgr"), WarmupShape(1, 480, 640, "rgb"),
                      WarmupShape(2, 480, 640, "bgr"), WarmupShape(2, 480, 640, "rgb"),
                      WarmupShape(1, 360, 480, "rgb")]
    # Compressed frames always decode to bgr; max_batch caps the batch the node forms.
    assert planned_shapes((240, 320), [(480, 640)], 3, compressed=True, max_batch=2) == [
        WarmupShape(1, 240, 320, "rgb"), WarmupShape(1, 480, 640, "bgr"), WarmupShape(2, 480, 640, "bgr")]
    assert planned_shapes((240, 320), [], 1, compressed=False) == [WarmupShape(1, 240, 320, "rgb")]


def test_create_segmenter_warms_every_planned_shape_with_the_confidence_output():
    calls = []
    fake = SimpleNamespace(
        classes=CAMVID, input_size=(64, 96),
        segment=lambda frame, channel_order, **extra: calls.append((1, *frame.shape[:2], channel_order, extra)),
        segment_batch=lambda frames, channel_order, **extra: calls.append((*frames.shape[:3], channel_order, extra)))
    settings = NodeSettings(weights="w.pt", cameras=["front", "left"], warmup_frame_sizes=["48x64"],
                            publish_confidence=True)
    made = {}
    node_core.create_segmenter(settings, segmenter_factory=lambda **kwargs: made.update(kwargs) or fake,
                               remembered=[WarmupShape(1, 30, 40, "bgr")])
    assert made["frame_size"] == (48, 64), "auto measures at the declared camera size"
    on = {"confidence": True}
    assert calls == [(1, 64, 96, "rgb", on), (1, 48, 64, "bgr", on), (1, 48, 64, "rgb", on), (2, 48, 64, "bgr", on),
                     (2, 48, 64, "rgb", on), (1, 30, 40, "bgr", on)]


def _sessions(segmenter) -> int:
    return len(segmenter.backend._sessions)


def test_the_first_camera_frame_at_a_declared_size_builds_nothing(tiny_weights):
    """ONNX Runtime fp32: frames not at the model size run their own graph, exported at the first one
    (the labels-only graph: ood_check off, else the node runs the graph with confidence)."""
    settings = dict(weights=str(tiny_weights), backend="onnxruntime", device="cpu", precision="fp32", ood_check=False)
    cold, _ = node_core.create_segmenter(NodeSettings(**settings))
    warm, _ = node_core.create_segmenter(NodeSettings(**settings, warmup_frame_sizes=["120x160"]))
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = (_sessions(cold), _sessions(warm))
    cold.segment(frame, channel_order="bgr")
    warm.segment(frame, channel_order="bgr")
    assert _sessions(cold) == before[0] + 1, "without warm-up the first frame exports a graph"
    assert _sessions(warm) == before[1], "warmed at the declared size: the first frame builds nothing"


class CountingSegmenter:
    def __init__(self) -> None:
        self.calls = 0

    def segment_batch(self, frames, channel_order="rgb", **extra):
        self.calls += 1
        return np.zeros(frames.shape[:3], np.uint8)


def test_the_pipeline_reports_each_shape_it_was_not_warmed_for_once(types):
    from test_node_pipeline import image

    new_shapes = []
    camera = CameraState("", publish=lambda name, msg: None)
    pipeline = node_core.SegmentationPipeline(
        CountingSegmenter(), CAMVID, NodeSettings(weights="tiny", publish_color=False), [camera],
        image_type=types["sensor_msgs/msg/Image"], info_type=types["bisenetv2_ros/msg/SegmentationInfo"],
        warmed=[WarmupShape(1, 24, 32, "bgr")], on_new_shape=lambda shape, ms: new_shapes.append(shape))
    from bisenetv2_ros.ros.frame_worker import FrameItem

    for msg in (image(types), image(types, 30, 40), image(types, 30, 40), image(types, 30, 40, "rgb8")):
        assert pipeline.process(FrameItem(msg, 0.0)), msg.encoding
    assert new_shapes == [WarmupShape(1, 30, 40, "bgr"), WarmupShape(1, 30, 40, "rgb")]


@pytest.fixture(scope="module")
def types():
    rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")
    from bisenetv2_ros.ros import messages

    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)
    return messages.register_rosbags_types(store).types


def test_remembered_shapes_survive_a_restart_and_stay_few(tmp_path, caplog):
    path = warmup.remembered_shapes_file(tmp_path / "cache", "/robot/segmentation")
    assert path.name == "warmup-robot_segmentation.json"
    memory = RememberedShapes(path)
    assert memory.shapes == [] and memory.record(WarmupShape(1, 480, 640, "bgr"))
    assert not memory.record((1, 480, 640, "bgr")), "a known shape is not written again"
    assert RememberedShapes(path).shapes == [WarmupShape(1, 480, 640, "bgr")]
    for width in range(1, MAX_REMEMBERED + 3):
        memory.record(WarmupShape(1, 10, width, "rgb"))
    again = RememberedShapes(path).shapes
    assert len(again) == MAX_REMEMBERED and again[-1] == WarmupShape(1, 10, MAX_REMEMBERED + 2, "rgb")

    path.write_text(json.dumps({"shapes": [[1, 10, 10, "yuv"]]}))
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        assert RememberedShapes(path).shapes == []
    assert "unreadable" in caplog.text
    path.write_text("{not json")
    assert RememberedShapes(path).shapes == []
