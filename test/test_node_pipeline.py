"""The node's pipeline without ROS (node_core): building the segmenter from the settings, the cameras and
the batched pipeline with a real (tiny) Segmenter and real ROS message definitions."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from bisenetv2_ros.classes import CAMVID, ClassSet
from bisenetv2_ros.ros import frame_worker, messages
from bisenetv2_ros.ros import pipeline as node_core
from bisenetv2_ros.ros import stats as node_stats
from bisenetv2_ros.ros.frame_worker import FrameItem, FrameSlots
from bisenetv2_ros.ros.parameters import NodeSettings
from bisenetv2_ros.ros.pipeline import StartupError
from bisenetv2_ros.ros.stats import CameraState

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")


@pytest.fixture(scope="module")
def types():
    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)
    return messages.register_rosbags_types(store).types


def header(types, sec=3, nanosec=4, frame_id="cam"):
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def image(types, height=24, width=32, encoding="bgr8", sec=3, frame_id="cam", seed=0):
    info = messages.encoding_info(encoding)
    data = np.random.default_rng(seed).integers(0, 256, height * width * info.bytes_per_pixel, dtype=np.uint8)
    return types["sensor_msgs/msg/Image"](header=header(types, sec=sec, frame_id=frame_id), height=height,
                                          width=width, encoding=encoding, is_bigendian=0,
                                          step=width * info.bytes_per_pixel, data=data)


def test_startup_errors_are_one_line(tmp_path):
    missing = NodeSettings(weights=str(tmp_path / "missing.pt"), device="cpu")
    with pytest.raises(StartupError) as caught:
        node_core.create_segmenter(missing)
    assert "cannot start the segmentation node: weights" in str(caught.value)
    assert "missing.pt" in str(caught.value) and "\n" not in str(caught.value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StartupError) as caught:
        node_core.create_segmenter(NodeSettings(weights=str(garbage), device="cpu"))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("cannot start the segmentation node:")

    def no_gpu(**kwargs):
        raise RuntimeError("the tensorrt backend needs a CUDA GPU\nand none is visible")

    with pytest.raises(StartupError, match="needs a CUDA GPU and none is visible"):
        node_core.create_segmenter(NodeSettings(backend="tensorrt", device="cuda:0"), segmenter_factory=no_gpu)


def test_create_segmenter_passes_settings_and_classes_file(tmp_path):
    seen = {}

    def factory(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(classes=CAMVID, input_size=(64, 96),
                               segment=lambda frame, channel_order: seen.setdefault("warm_up", frame.shape))

    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(f"thing{i} {i} {i} {i}" for i in range(11)))
    settings = NodeSettings(weights="w.pt", backend="torch", device="cpu", input_height=64, input_width=96,
                            engine_cache_dir="", classes_file=str(classes_file))
    segmenter, classes = node_core.create_segmenter(settings, segmenter_factory=factory)
    assert segmenter.classes is CAMVID, "the segmenter itself is left alone"
    assert seen == dict(weights="w.pt", backend="torch", device="cpu", precision="auto", input_size=(64, 96),
                        engine_cache_dir=None, backend_options=None, warm_up=(64, 96, 3))
    assert classes.names[3] == "thing3" and classes.palette[3] == (3, 3, 3)
    no_file = NodeSettings(weights="w.pt")
    assert node_core.create_segmenter(no_file, segmenter_factory=factory)[1] is CAMVID

    classes_file.write_text("only\ntwo\n")
    with pytest.raises(StartupError, match="lists 2 classes but the model predicts 11"):
        node_core.create_segmenter(settings, segmenter_factory=factory)


def test_camera_topic():
    assert node_stats.camera_topic("front", "image/compressed") == "front/image/compressed"
    assert node_stats.camera_topic("", "labels") == "labels"


# ---------------------------------------------------------------------------------------------
# The pipeline with a real (tiny) Segmenter and real ROS message definitions


@pytest.fixture(scope="module")
def segmenter(tiny_weights):
    return node_core.create_segmenter(NodeSettings(weights=str(tiny_weights), device="cpu"))[0]


def make_pipeline(types, segmenter, classes=CAMVID, **settings):
    published = []
    warnings = []
    camera = CameraState("", publish=lambda name, msg: published.append((name, msg)))
    pipeline = node_core.SegmentationPipeline(
        segmenter, classes, NodeSettings(weights="tiny", **settings), [camera], image_type=types["sensor_msgs/msg/Image"],
        info_type=types["bisenetv2_ros/msg/SegmentationInfo"], compressed_type=types["sensor_msgs/msg/CompressedImage"],
        cloud_types=(types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"]), warn=warnings.append)
    return pipeline, published, warnings, camera.stats


def test_confidence_and_compressed_outputs(types, segmenter):
    pipeline, published, _, stats = make_pipeline(types, segmenter, publish_confidence=True, publish_compressed=True)
    first, second = image(types, sec=7, frame_id="left", seed=1), image(types, sec=8, frame_id="right", seed=2)
    pipeline.cameras.append(CameraState("b", publish=lambda name, msg: published.append(("b/" + name, msg))))
    assert pipeline.process_batch([(0, FrameItem(first, time.monotonic())), (1, FrameItem(second, time.monotonic()))]) == 2
    outputs = dict(published)
    assert [name for name, _ in published if not name.startswith("b/")] == [
        "labels", "confidence", "labels/compressed", "color", "color/compressed", "info"]
    for prefix, msg in (("", first), ("b/", second)):
        frame_bgr = np.asarray(msg.data).reshape(24, 32, 3)
        labels, confidence = segmenter.segment(frame_bgr, channel_order="bgr", confidence=True)
        out = outputs[prefix + "confidence"]
        assert (out.encoding, out.height, out.width, out.step) == ("mono8", 24, 32, 32)
        assert out.header.stamp.sec == msg.header.stamp.sec and out.header.frame_id == msg.header.frame_id
        assert np.array_equal(np.asarray(out.data).reshape(24, 32), confidence)
        # The PNG outputs decode to exactly the raw ones, in compressed_image_transport's format.
        png = outputs[prefix + "labels/compressed"]
        assert png.format == "mono8; png compressed " and png.header.stamp.sec == msg.header.stamp.sec
        assert np.array_equal(messages.png_to_array(png), labels)
        color = outputs[prefix + "color/compressed"]
        assert color.format == "rgb8; png compressed bgr8"
        assert np.array_equal(messages.png_to_array(color), CAMVID.lookup_table()[labels])
        assert bytes(np.asarray(png.data)[:8]) == b"\x89PNG\r\n\x1a\n"
        info = outputs[prefix + "info"]  # mean confidence per class beside the pixel fractions
        expected = messages.class_confidence(labels, confidence, len(CAMVID))
        assert np.array_equal(np.isnan(info.class_confidence), np.isnan(expected))
        assert np.allclose(info.class_confidence[~np.isnan(expected)], expected[~np.isnan(expected)])
        present = np.unique(labels)
        assert np.all(info.class_confidence[present] >= 255 // len(CAMVID)) and np.isnan(info.class_confidence).any() == (
            len(present) < len(CAMVID))


def test_points_from_the_closest_depth_image(types, segmenter):
    from test_depth_cloud import camera_info, depth_image

    from bisenetv2_ros.ros import depth_cloud

    pipeline, published, warnings, _ = make_pipeline(types, segmenter, publish_points=True, publish_confidence=True)
    camera = pipeline.cameras[0]
    frame = image(types, height=6, width=8, sec=42)  # stamp 42 s + 4 ns
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    assert "points" not in dict(published) and "no depth image received yet on depth" in warnings[-1]
    for sec, metres in ((41, 1.0), (42, 2.0), (43, 3.0)):  # the frame's own stamp is the middle one
        depth = depth_image(types, np.full((6, 8), metres * 1000, np.uint16), "16UC1")
        depth.header.stamp.sec = sec
        camera.depths.append(depth)
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    assert "no depth camera_info received yet" in warnings[-1]
    camera.depth_info = camera_info(types)
    published.clear()
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    outputs = dict(published)
    cloud = outputs["points"]
    assert (cloud.height, cloud.width) == (outputs["labels"].height, outputs["labels"].width) == (6, 8)
    assert cloud.header.stamp.sec == 42 and cloud.header.frame_id == frame.header.frame_id
    points = depth_cloud.cloud_to_points(cloud)
    assert np.all(points["z"] == 2.0)  # the depth image of the frame's own time
    assert np.array_equal(points["label"], np.asarray(outputs["labels"].data).reshape(6, 8))
    assert np.array_equal(points["confidence"], np.asarray(outputs["confidence"].data).reshape(6, 8))
    # Depth images all too far from the frame: no cloud, and the warning says why.
    camera.depths.clear()
    far = depth_image(types, np.full((6, 8), 1000, np.uint16), "16UC1")
    far.header.stamp.sec = 50
    camera.depths.append(far)
    published.clear()
    assert pipeline.process(FrameItem(frame, time.monotonic()))
    assert "points" not in dict(published) and "closest depth image is 8.000 s from the frame" in warnings[-1]


def test_pipeline_outputs_keep_header_and_resolution(types, segmenter):
    pipeline, published, warnings, stats = make_pipeline(types, segmenter, publish_overlay=True, overlay_alpha=0.5)
    camera_info = types["sensor_msgs/msg/CameraInfo"]
    pipeline.cameras[0].camera_info = camera_info(header=header(types, sec=0, frame_id="old"), height=24, width=32,
                                       distortion_model="plumb_bob", d=np.zeros(5), k=np.eye(3).ravel(),
                                       r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
                                       roi=types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False))
    msg = image(types, sec=42, frame_id="front")
    stats.record_received()
    assert pipeline.process(FrameItem(msg, time.monotonic() - 0.010)) is True
    names = [name for name, _ in published]
    assert names == ["labels", "color", "overlay", "camera_info", "info"]
    outputs = dict(published)
    for name, out in outputs.items():
        assert out.header.stamp.sec == 42 and out.header.stamp.nanosec == 4 and out.header.frame_id == "front", name
    frame_bgr = np.asarray(msg.data).reshape(24, 32, 3)
    expected = segmenter.segment(frame_bgr, channel_order="bgr")
    labels = outputs["labels"]
    assert (labels.encoding, labels.height, labels.width, labels.step) == ("mono8", 24, 32, 32)
    assert np.array_equal(np.asarray(labels.data).reshape(24, 32), expected)
    color = outputs["color"]
    assert color.encoding == "rgb8" and color.step == 96
    assert np.array_equal(np.asarray(color.data).reshape(24, 32, 3), CAMVID.lookup_table()[expected])
    overlay = np.asarray(outputs["overlay"].data).reshape(24, 32, 3).astype(int)
    reference = frame_bgr[..., ::-1] * 0.5 + CAMVID.lookup_table()[expected] * 0.5
    assert outputs["overlay"].encoding == "rgb8" and np.abs(overlay - reference).max() <= 1
    info = outputs["info"]
    assert (info.model, info.backend, info.frames_received, info.frames_processed, info.frames_dropped) == (
        "tiny", segmenter.backend_name, 1, 1, 0)
    assert (info.camera, info.batch_size, info.frames_failed) == ("", 1, 0)
    assert len(info.class_confidence) == 0  # publish_confidence off: no confidence to average
    assert info.latency_ms >= 10.0 and 0 < info.inference_ms <= info.latency_ms
    assert len(info.class_fractions) == 11 and info.class_fractions.sum() == pytest.approx(1.0, abs=1e-5)
    assert outputs["camera_info"].distortion_model == "plumb_bob"
    assert warnings == []


def test_pipeline_optional_outputs_follow_settings(types, segmenter):
    pipeline, published, _, _ = make_pipeline(types, segmenter, publish_color=False)
    pipeline.process(FrameItem(image(types, encoding="mono8"), time.monotonic()))
    assert [name for name, _ in published] == ["labels", "info"]
    pipeline.settings.update("publish_color", True)  # a runtime change takes effect on the next frame
    published.clear()
    pipeline.process(FrameItem(image(types, encoding="rgba8"), time.monotonic()))
    assert [name for name, _ in published] == ["labels", "color", "info"]


def test_outputs_no_one_listens_to_are_not_computed(types, segmenter, monkeypatch):
    """Checked per frame: an output switched on but without a subscriber is neither built nor
    published; when one appears, the next frame builds it; when it leaves, the next one stops."""
    # ood_check off: the out-of-distribution alarm reads the confidence pass on every frame (checked below)
    pipeline, published, _, _ = make_pipeline(types, segmenter, publish_color=True, publish_overlay=True,
                                              publish_confidence=True, publish_compressed=True, ood_check=False)
    listeners: set[str] = set()
    pipeline.cameras[0].listening = lambda output: output in listeners
    colorized, network_calls = [], []
    real_colorize, real_segment = node_core.colorize, segmenter.segment_batch
    monkeypatch.setattr(node_core, "colorize", lambda *a: colorized.append(1) or real_colorize(*a))
    monkeypatch.setattr(segmenter, "segment_batch", lambda *a, **k: network_calls.append(k) or real_segment(*a, **k))

    def frame():
        published.clear()
        colorized.clear()
        network_calls.clear()
        assert pipeline.process(FrameItem(image(types), time.monotonic()))
        return [name for name, _ in published]

    assert frame() == ["labels", "info"]  # nothing optional is listened to: no colour, no confidence pass
    assert not colorized and network_calls == [{"channel_order": "bgr"}]
    listeners.add("overlay")
    assert frame() == ["labels", "overlay", "info"] and len(colorized) == 1
    listeners.add("confidence")
    assert frame() == ["labels", "confidence", "overlay", "info"] and network_calls[0].get("confidence") is True
    listeners.clear()
    listeners.add("color/compressed")  # the compressed colour needs the colours, not the raw topic
    assert frame() == ["labels", "color/compressed", "info"] and len(colorized) == 1
    listeners.clear()
    listeners.add("info")  # info carries each class's mean confidence, so its readers need the pass
    assert frame() == ["labels", "info"] and network_calls[0].get("confidence") is True and not colorized
    listeners.clear()
    assert frame() == ["labels", "info"] and not colorized and "confidence" not in network_calls[0]
    assert pipeline.computed == {"overlay": 2, "confidence": 1, "color/compressed": 1}
    # Switched off wins over listened to.
    pipeline.settings.update("publish_overlay", False)
    listeners.add("overlay")
    assert frame() == ["labels", "info"] and not colorized
    # With the alarm on (the default), the confidence pass runs for it although no one listens; nothing else does.
    alarmed, published, _, _ = make_pipeline(types, segmenter, publish_color=True, publish_confidence=True)
    alarmed.cameras[0].listening = lambda output: False
    network_calls.clear()
    assert alarmed.process(FrameItem(image(types), time.monotonic()))
    assert [name for name, _ in published] == ["labels", "info"] and network_calls[0].get("confidence") is True


def test_pipeline_counts_and_warns_about_bad_frames(types, segmenter):
    pipeline, published, warnings, stats = make_pipeline(types, segmenter)
    bad = image(types, encoding="mono8", frame_id="cam7")
    bad.encoding = "32FC1"
    assert pipeline.process(FrameItem(bad, time.monotonic())) is False
    truncated = image(types)
    truncated.data = truncated.data[:100]
    assert pipeline.process(FrameItem(truncated, time.monotonic())) is False
    assert published == [] and stats.dropped_invalid == 2 and stats.dropped == 2
    assert "unsupported image encoding '32FC1'" in warnings[0] and "cam7" in warnings[0]
    assert "truncated image data: 100 bytes" in warnings[1]
    assert pipeline.process(FrameItem(image(types), time.monotonic())) is True  # keeps going


def test_pipeline_compressed_input(types, segmenter):
    import cv2

    pipeline, published, _, _ = make_pipeline(types, segmenter)
    bgr = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    msg = types["sensor_msgs/msg/CompressedImage"](header=header(types, sec=8), format="png", data=png.reshape(-1))
    assert pipeline.process(FrameItem(msg, time.monotonic(), compressed=True))
    labels = dict(published)["labels"]
    assert (labels.height, labels.width, labels.header.stamp.sec) == (20, 30, 8)
    assert np.array_equal(np.asarray(labels.data).reshape(20, 30), segmenter.segment(bgr, channel_order="bgr"))


def test_classes_file_palette_is_used_for_color(types, segmenter):
    classes = ClassSet(tuple(f"c{i}" for i in range(11)), tuple((i * 20, 0, 255 - i * 20) for i in range(11)))
    pipeline, published, _, _ = make_pipeline(types, segmenter, classes=classes)
    pipeline.process(FrameItem(image(types), time.monotonic()))
    outputs = dict(published)
    labels = np.asarray(outputs["labels"].data).reshape(24, 32)
    assert np.array_equal(np.asarray(outputs["color"].data).reshape(24, 32, 3), classes.lookup_table()[labels])


@pytest.mark.parametrize("encoding", ["bgra8", "yuv422"])
def test_pipeline_overlay_from_padded_non_rgb_frames(types, segmenter, encoding):
    pipeline, published, _, _ = make_pipeline(types, segmenter, publish_overlay=True, overlay_alpha=1.0)
    msg = image(types, height=10, width=16, encoding=encoding)
    info = messages.encoding_info(encoding)
    rows = np.asarray(msg.data).reshape(10, 16 * info.bytes_per_pixel)
    msg.data = np.concatenate([rows, np.zeros((10, 3), np.uint8)], axis=1).reshape(-1)  # padded rows
    msg.step = 16 * info.bytes_per_pixel + 3
    assert pipeline.process(FrameItem(msg, time.monotonic()))
    outputs = dict(published)
    labels = np.asarray(outputs["labels"].data).reshape(10, 16)
    # alpha 1: the overlay is exactly the colour mask
    assert np.array_equal(np.asarray(outputs["overlay"].data).reshape(10, 16, 3), CAMVID.lookup_table()[labels])


class SpySegmenter:
    """The real tiny Segmenter, recording the shape and channel order of every network call."""

    def __init__(self, segmenter, fail_shape=None):
        self.segmenter, self.calls, self.fail_shape = segmenter, [], fail_shape
        self.backend_name, self.device = segmenter.backend_name, segmenter.device

    def segment_batch(self, frames, channel_order="rgb"):
        self.calls.append((tuple(np.shape(frames)), channel_order))
        if self.fail_shape is not None and tuple(np.shape(frames)[1:3]) == self.fail_shape:
            raise RuntimeError("out of memory\nwhile segmenting")
        return self.segmenter.segment_batch(frames, channel_order)


def make_cameras_pipeline(types, segmenter, names, **settings):
    published = {name: [] for name in names}
    cameras = [CameraState(name, publish=lambda output, msg, name=name: published[name].append((output, msg)))
               for name in names]
    warnings, failures = [], []
    pipeline = node_core.SegmentationPipeline(
        segmenter, CAMVID, NodeSettings(weights="tiny", cameras=list(names), **settings), cameras,
        image_type=types["sensor_msgs/msg/Image"], info_type=types["bisenetv2_ros/msg/SegmentationInfo"],
        warn=warnings.append, on_failure=failures.append)
    return pipeline, published, warnings, failures


def test_frames_of_one_size_share_one_network_call(types, segmenter):
    spy = SpySegmenter(segmenter)
    names = ["front", "left", "right", "rear"]
    pipeline, published, warnings, failures = make_cameras_pipeline(types, spy, names)
    frames = {
        "front": image(types, sec=10, frame_id="front_optical", seed=1),
        "left": image(types, sec=11, frame_id="left_optical", seed=2),
        "right": image(types, height=20, width=30, sec=12, frame_id="right_optical", seed=3),
        "rear": image(types, encoding="rgb8", sec=13, frame_id="rear_optical", seed=4),  # same size, other order
    }
    batch = [(index, FrameItem(frames[name], time.monotonic())) for index, name in enumerate(names)]
    assert pipeline.process_batch(batch) == 4
    assert spy.calls == [((2, 24, 32, 3), "bgr"), ((1, 20, 30, 3), "bgr"), ((1, 24, 32, 3), "rgb")]
    assert warnings == [] and failures == []
    for name in names:
        outputs = dict(published[name])
        msg = frames[name]
        assert [output for output, _ in published[name]] == ["labels", "color", "info"]
        for output, out in outputs.items():
            assert out.header.frame_id == f"{name}_optical" and out.header.stamp.sec == msg.header.stamp.sec, output
        order = "rgb" if msg.encoding == "rgb8" else "bgr"
        expected = segmenter.segment(np.asarray(msg.data).reshape(msg.height, msg.width, 3), channel_order=order)
        assert np.array_equal(np.asarray(outputs["labels"].data).reshape(msg.height, msg.width), expected), name
        info = outputs["info"]
        assert info.camera == name and info.frames_processed == 1
        assert info.batch_size == {"front": 2, "left": 2, "right": 1, "rear": 1}[name]
    # the two frames of one call report that call's time
    assert dict(published["front"])["info"].inference_ms == dict(published["left"])["info"].inference_ms


def test_per_camera_counters_and_camera_info(types, segmenter):
    pipeline, published, warnings, _ = make_cameras_pipeline(types, segmenter, ["front", "rear"])
    front, rear = pipeline.cameras
    camera_info = types["sensor_msgs/msg/CameraInfo"]
    rear.camera_info = camera_info(header=header(types, sec=0, frame_id="old"), height=24, width=32,
                                   distortion_model="rational_polynomial", d=np.zeros(8), k=np.eye(3).ravel(),
                                   r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
                                   roi=types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False))
    slots = FrameSlots(2)
    intake = frame_worker.FrameIntake(slots, pipeline.cameras, pipeline.settings)
    for sec in range(3):
        intake.offer(image(types, sec=sec, frame_id="f"), camera=0)  # two of these go stale
    bad = image(types, frame_id="r")
    bad.encoding = "32FC1"
    intake.offer(bad, camera=1)
    assert pipeline.process_batch(slots.take(timeout=0)) == 1
    assert "camera 'rear': dropped an invalid frame (frame_id 'r'): unsupported image encoding '32FC1'" in warnings[0]
    intake.offer(image(types, sec=7, frame_id="r"), camera=1)
    assert pipeline.process_batch(slots.take(timeout=0)) == 1
    assert (front.stats.received, front.stats.processed, front.stats.dropped_stale, front.stats.dropped) == (3, 1, 2, 2)
    assert (rear.stats.received, rear.stats.processed, rear.stats.dropped_invalid, rear.stats.dropped) == (2, 1, 1, 1)
    assert "camera_info" not in dict(published["front"])
    rear_info = dict(published["rear"])["camera_info"]
    assert rear_info.distortion_model == "rational_polynomial" and rear_info.header.stamp.sec == 7
    info = dict(published["rear"])["info"]
    assert (info.frames_received, info.frames_processed, info.frames_dropped) == (2, 1, 1)

    reports = dict(node_stats.camera_diagnostics(pipeline.cameras, node_name="/segmentation/segmentation_node",
                                                backend="torch", device="cpu", model="tiny",
                                                input_topic=lambda camera: f"/segmentation/{camera.topic('image')}"))
    assert list(reports) == ["/segmentation/segmentation_node: segmentation front",
                             "/segmentation/segmentation_node: out-of-distribution front",
                             "/segmentation/segmentation_node: segmentation rear",
                             "/segmentation/segmentation_node: out-of-distribution rear"]
    ood_values = dict(reports["/segmentation/segmentation_node: out-of-distribution rear"].values)
    assert ood_values["camera"] == "rear" and ood_values["ood calibrated"] == "false"  # the tiny test weights
    front_values = dict(reports["/segmentation/segmentation_node: segmentation front"].values)
    rear_report = reports["/segmentation/segmentation_node: segmentation rear"]
    assert front_values["camera"] == "front" and front_values["dropped stale"] == "2"
    assert front_values["frames processed"] == "1"
    assert rear_report.level == node_stats.WARN and rear_report.message == "1 invalid frame(s) dropped"


def test_single_camera_diagnostics_keep_their_name(types, segmenter):
    pipeline, _, _, _ = make_pipeline(types, segmenter)
    ((name, report),) = node_stats.camera_diagnostics(pipeline.cameras, node_name="/seg/node", backend="b",
                                                     device="d", model="m", input_topic=lambda camera: "/seg/image")
    assert name == "/seg/node: segmentation" and "camera" not in dict(report.values)
    assert report.message == "no images received on /seg/image"


def test_a_failed_call_loses_only_its_frames(types, segmenter):
    spy = SpySegmenter(segmenter, fail_shape=(20, 30))
    pipeline, published, _, failures = make_cameras_pipeline(types, spy, ["front", "left", "right"])
    batch = [(0, FrameItem(image(types, frame_id="a"), time.monotonic())),
             (1, FrameItem(image(types, height=20, width=30, frame_id="b"), time.monotonic())),
             (2, FrameItem(image(types, height=20, width=30, frame_id="c"), time.monotonic()))]
    assert pipeline.process_batch(batch) == 1
    assert failures == ["segmentation failed for 2 frame(s) (left, right): RuntimeError: out of memory while "
                        "segmenting"]
    assert [c.stats.failed for c in pipeline.cameras] == [0, 1, 1]
    assert [c.stats.dropped for c in pipeline.cameras] == [0, 1, 1]
    assert published["left"] == [] and published["right"] == [] and len(published["front"]) == 3

    def broken_publish(output, msg):
        raise RuntimeError("publisher's context is not valid")

    pipeline.cameras[0].publish = broken_publish
    assert pipeline.process_batch(batch[:1]) == 0
    assert failures[-1] == "camera 'front': publishing failed: RuntimeError: publisher's context is not valid"
    assert pipeline.cameras[0].stats.failed == 1


def test_free_model_memory_releases_a_dropped_segmenter(tiny_weights):
    import weakref

    segmenter = node_core.create_segmenter(NodeSettings(weights=str(tiny_weights), device="cpu"))[0]
    backend = weakref.ref(segmenter.backend)
    del segmenter
    node_core.free_model_memory()
    assert backend() is None, "the backend (and its network) must be gone after cleanup"


def test_pipeline_runs_a_bisenetv1_checkpoint(types, tiny_v1_weights):
    settings = NodeSettings(weights=str(tiny_v1_weights), device="cpu", backend="onnxruntime")
    v1, classes = node_core.create_segmenter(settings)
    assert type(v1.backend.model).__name__ == "BiSeNetV1"
    pipeline, published, warnings, _ = make_pipeline(types, v1, classes=classes)
    msg = image(types, sec=7, frame_id="front", seed=5)
    assert pipeline.process(FrameItem(msg, time.monotonic())) is True
    outputs = dict(published)
    expected = v1.segment(np.asarray(msg.data).reshape(24, 32, 3), channel_order="bgr")
    assert np.array_equal(np.asarray(outputs["labels"].data).reshape(24, 32), expected)
    assert outputs["labels"].header.frame_id == "front" and warnings == []


# ---------------------------------------------------------------------------------------------
# Device resolution: the node and the CLI build their Segmenter through one path


@pytest.fixture
def gpu_visible_with_cpu_onnxruntime(monkeypatch):
    """A CUDA GPU reported visible (to torch and to the backends), no TensorRT, and an ONNX Runtime
    build without CUDAExecutionProvider. There is no real GPU here, so the torch backend is replaced by
    one that only records where it was asked to run (its output: all class 0)."""
    import onnxruntime
    import torch

    from bisenetv2_ros.inference import backends, torch_backend

    class RecordingTorchBackend(backends.Backend):
        name = "torch"

        def __init__(self, model, normalization, input_size, device, precision, **options):
            super().__init__(device, precision, input_size)

        def _run(self, frames, channel_order):
            return np.zeros(frames.shape[:3], np.uint8)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_importable", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch_backend, "TorchBackend", RecordingTorchBackend)


@pytest.mark.parametrize("backend,expected", [
    ("onnxruntime", ("onnxruntime", "cpu")),  # this ONNX Runtime cannot use the GPU: its CPU, as the CLI does
    ("auto", ("torch", "cuda")),              # no TensorRT: torch on the GPU
])
@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_node_and_cli_resolve_device_auto_alike(tiny_weights, gpu_visible_with_cpu_onnxruntime, backend, expected,
                                                precision):
    from bisenetv2_ros.cli import commands as cli

    settings = NodeSettings(weights=str(tiny_weights), backend=backend, device="auto", precision=precision)
    node_segmenter, _ = node_core.create_segmenter(settings)  # warms up: a device it cannot use fails here
    args = cli.build_parser().parse_args(["segment", "frame.png", "--weights", str(tiny_weights),
                                          "--backend", backend, "--device", "auto", "--precision", precision])
    cli_segmenter = cli._make_segmenter(args)
    cli_segmenter.segment(np.zeros((64, 96, 3), np.uint8))
    assert (node_segmenter.backend_name, node_segmenter.device) == expected
    assert (cli_segmenter.backend_name, cli_segmenter.device, cli_segmenter.precision) == (
        node_segmenter.backend_name, node_segmenter.device, node_segmenter.precision)


def test_device_auto_for_onnxruntime_needs_its_cuda_provider(monkeypatch):
    from bisenetv2_ros.inference import backend_base as base

    monkeypatch.setattr(base, "cuda_available", lambda: True)
    monkeypatch.setattr(base, "onnxruntime_cuda_available", lambda: False)
    assert base.resolve_device("auto", "onnxruntime") == "cpu"
    assert base.resolve_device("auto", "torch") == base.resolve_device("auto") == "cuda"
    monkeypatch.setattr(base, "onnxruntime_cuda_available", lambda: True)
    assert base.resolve_device("auto", "onnxruntime") == "cuda"
    monkeypatch.setattr(base, "cuda_available", lambda: False)
    assert base.resolve_device("auto", "onnxruntime") == base.resolve_device(None, "torch") == "cpu"
