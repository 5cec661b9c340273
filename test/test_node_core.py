"""The node's ROS-free logic: parameters, newest-frame slot and worker, pipeline, statistics, diagnostics."""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from bisenetv2_ros import messages, node_core
from bisenetv2_ros.classes import CAMVID, ClassSet
from bisenetv2_ros.node_core import (CameraState, FrameItem, FrameSlots, FrameWorker, NodeSettings, NodeStats,
                                     SettingsError, StartupError)

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


# ---------------------------------------------------------------------------------------------
# Parameters


def test_defaults_are_valid_and_match_specs():
    settings = NodeSettings.from_values({})
    assert settings == NodeSettings()
    assert settings.input_size is None
    assert set(node_core.RUNTIME_PARAMETERS) == {"publish_color", "publish_overlay", "overlay_alpha", "max_rate_hz",
                                                 "only_when_subscribed", "max_batch"}
    assert settings.cameras == [] and settings.camera_names == [""]


@pytest.mark.parametrize("values,message", [
    ({"backend": "cuda"}, "parameter 'backend' must be one of auto, torch, onnxruntime, tensorrt; got 'cuda'"),
    ({"overlay_alpha": 1.5}, "parameter 'overlay_alpha' must be within 0..1; got 1.5"),
    ({"overlay_alpha": float("nan")}, "parameter 'overlay_alpha' must be within 0..1"),
    ({"max_rate_hz": -1.0}, "parameter 'max_rate_hz' must be within 0..1000"),
    ({"input_height": 512}, "input_height and input_width must both be 0"),
    ({"input_width": -2}, "parameter 'input_width' must be within 0..8192"),
    ({"publish_color": 1}, "parameter 'publish_color' must be a bool, got int 1"),
    ({"input_height": True}, "parameter 'input_height' must be a int, got bool"),
    ({"image_qos": "best_effort"}, "parameter 'image_qos' must be one of sensor_data, reliable"),
    ({"input_transport": "theora"}, "parameter 'input_transport' must be one of raw, compressed"),
    ({"weights": " "}, "parameter 'weights' is empty"),
    ({"wieghts": "x"}, "unknown parameter(s) wieghts"),
])
def test_invalid_settings_are_named(values, message):
    with pytest.raises(SettingsError) as caught:
        NodeSettings.from_values(values)
    assert message in str(caught.value)


def test_valid_settings_are_converted():
    settings = NodeSettings.from_values({"overlay_alpha": 1, "input_height": 480, "input_width": 640,
                                         "backend": "onnxruntime", "max_rate_hz": 5})
    assert settings.overlay_alpha == 1.0 and isinstance(settings.overlay_alpha, float)
    assert settings.input_size == (480, 640) and settings.backend == "onnxruntime"


@pytest.mark.parametrize("name,value,accepted,reason", [
    ("publish_overlay", True, True, ""),
    ("overlay_alpha", 0.2, True, ""),
    ("max_rate_hz", 10, True, ""),
    ("overlay_alpha", 2.0, False, "must be within 0..1"),
    ("publish_color", "yes", False, "must be a bool"),
    ("weights", "other.pt", False, "parameter 'weights' is read at start-up only; restart the node"),
    ("backend", "torch", False, "read at start-up only"),
    ("use_sim_time", True, True, ""),  # not ours: left to rclpy
])
def test_runtime_updates(name, value, accepted, reason):
    ok, text = node_core.check_runtime_update(name, value)
    assert ok is accepted
    assert reason in text and (text == "") == accepted


def test_settings_update_in_place():
    settings = NodeSettings()
    settings.update("max_rate_hz", 3)
    settings.update("publish_overlay", True)
    assert settings.max_rate_hz == 3.0 and isinstance(settings.max_rate_hz, float) and settings.publish_overlay


def test_resolve_device():
    assert node_core.resolve_device("cpu") == "cpu" and node_core.resolve_device("cuda:1") == "cuda:1"
    import torch

    assert node_core.resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")


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


# ---------------------------------------------------------------------------------------------
# Newest-frame slot and worker


def test_slot_keeps_only_the_newest():
    slot = FrameSlots()
    assert slot.take(timeout=0) is None
    assert slot.put(0, 1) is False
    assert slot.put(0, 2) is True and slot.put(0, 3) is True
    assert slot.replaced == [2] and slot.pending == 1
    assert slot.take(timeout=0) == [(0, 3)]
    assert slot.take(timeout=0) is None and not slot.pending
    slot.close()
    started = time.monotonic()
    assert slot.take(timeout=5) is None and time.monotonic() - started < 1  # closed: returns at once


def test_slow_worker_drops_stale_frames_without_growing():
    slot, stats = FrameSlots(), NodeStats()
    processed, started = [], threading.Event()
    release = threading.Event()

    def slow_process(item):
        started.set()
        release.wait(5)  # the model is busy while the camera floods the slot
        processed.append(item)

    worker = FrameWorker(slot, slow_process).start()
    slot.put(0, -1)
    assert started.wait(5)
    for index in range(1000):
        stats.record_received()
        if slot.put(0, index):
            stats.record_stale_drop()
    release.set()
    deadline = time.monotonic() + 5
    while len(processed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert processed == [[(0, -1)], [(0, 999)]], "the worker must skip straight to the newest frame"
    assert stats.dropped_stale == 999 == slot.replaced[0]
    assert not slot.pending


def test_worker_survives_errors_and_respects_rate():
    slots = FrameSlots()
    errors, done = [], []
    intervals = {"value": 0.0}

    def process(batch):
        ((_, item),) = batch
        if item == "bad":
            raise RuntimeError("boom")
        done.append((item, time.monotonic()))

    slot = SimpleNamespace(put=lambda item: slots.put(0, item))

    worker = FrameWorker(slots, process, on_error=errors.append, min_interval_s=lambda: intervals["value"]).start()
    slot.put("bad")
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.005)
    slot.put("good")
    while not done and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [str(e) for e in errors] == ["boom"] and done[0][0] == "good"
    intervals["value"] = 0.3
    slot.put("a")
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    slot.put("b")
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.stop()
    assert [d[0] for d in done] == ["good", "a", "b"]
    assert done[2][1] - done[1][1] >= 0.3 - 0.01  # frame starts spaced by 1 / max_rate_hz


def test_min_interval_for_rate():
    assert node_core.min_interval_for_rate(0.0) == 0.0
    assert node_core.min_interval_for_rate(4.0) == 0.25


# ---------------------------------------------------------------------------------------------
# Statistics and diagnostics


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_stats_snapshot_rates_and_percentiles():
    clock = FakeClock()
    stats = NodeStats(window=100, clock=clock)
    for _ in range(30):
        stats.record_received()
    for latency in range(1, 101):
        stats.record_processed(inference_ms=latency / 2, latency_ms=float(latency))
    stats.record_stale_drop()
    stats.record_invalid()
    clock.now += 2.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(15.0) and snap.processed_rate_hz == pytest.approx(50.0)
    assert snap.latency_p50_ms == pytest.approx(50.5) and snap.latency_p99_ms == pytest.approx(99.01)
    assert snap.inference_p50_ms == pytest.approx(25.25)
    assert snap.frames_dropped == 2 and snap.new_drops == 2 and snap.new_invalid == 1
    clock.now += 1.0
    stats.record_received()
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(1.0) and snap.processed_rate_hz == 0.0
    assert snap.new_drops == 0 and snap.frames_received == 31


def test_latency_window_is_bounded():
    stats = NodeStats(window=10, clock=FakeClock())
    for latency in range(1000):
        stats.record_processed(1.0, float(latency))
    assert stats.snapshot().latency_p50_ms == pytest.approx(994.5)


def snapshot(**overrides):
    values = dict(frames_received=10, frames_processed=8, frames_dropped_stale=1, frames_dropped_invalid=1,
                  frames_failed=0, frames_skipped=0, input_rate_hz=10.0, processed_rate_hz=8.0,
                  latency_p50_ms=40.0, latency_p99_ms=80.0, inference_p50_ms=30.0, interval_s=1.0, new_drops=0,
                  new_invalid=0, new_failed=0)
    values.update(overrides)
    return node_core.StatsSnapshot(**values)


def test_diagnostics_values_and_levels():
    report = node_core.diagnostics_report(snapshot(), backend="torch", device="cpu", model="tiny.pt",
                                          input_topic="/segmentation/image")
    values = dict(report.values)
    assert report.level == node_core.OK and report.message == "segmenting at 8.0 Hz"
    assert values["input rate (Hz)"] == "10.00" and values["processed rate (Hz)"] == "8.00"
    assert values["frames dropped"] == "2" and values["latency p50 (ms)"] == "40.0"
    assert values["latency p99 (ms)"] == "80.0" and values["backend"] == "torch" and values["device"] == "cpu"
    assert values["input topic"] == "/segmentation/image"

    idle = node_core.diagnostics_report(snapshot(input_rate_hz=0.0, processed_rate_hz=0.0, latency_p50_ms=math.nan),
                                        backend="torch", device="cpu", model="m", input_topic="/segmentation/image")
    assert idle.level == node_core.WARN and idle.message == "no images received on /segmentation/image"
    assert dict(idle.values)["latency p50 (ms)"] == "n/a"
    invalid = node_core.diagnostics_report(snapshot(new_invalid=3), backend="b", device="d", model="m")
    assert invalid.level == node_core.WARN and invalid.message == "3 invalid frame(s) dropped"
    idle = node_core.diagnostics_report(snapshot(processed_rate_hz=0.0, frames_skipped=5), backend="b",
                                        device="d", model="m")
    assert idle.level == node_core.OK and idle.message.startswith("idle: no one subscribes")
    stuck = node_core.diagnostics_report(snapshot(processed_rate_hz=0.0), backend="b", device="d", model="m")
    assert stuck.level == node_core.WARN and stuck.message == "receiving images but none processed"
    failed = node_core.diagnostics_report(snapshot(new_failed=1), backend="b", device="d", model="m")
    assert failed.level == node_core.ERROR


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
        info_type=types["bisenetv2_ros/msg/SegmentationInfo"], warn=warnings.append)
    return pipeline, published, warnings, camera.stats


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


def test_pipeline_counts_and_warns_about_bad_frames(types, segmenter):
    pipeline, published, warnings, stats = make_pipeline(types, segmenter)
    bad = image(types, encoding="mono8", frame_id="cam7")
    bad.encoding = "mono16"
    assert pipeline.process(FrameItem(bad, time.monotonic())) is False
    truncated = image(types)
    truncated.data = truncated.data[:100]
    assert pipeline.process(FrameItem(truncated, time.monotonic())) is False
    assert published == [] and stats.dropped_invalid == 2 and stats.dropped == 2
    assert "unsupported image encoding 'mono16'" in warnings[0] and "cam7" in warnings[0]
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


def test_intake_floods_slot_while_worker_is_slow_without_growth():
    slot, camera = FrameSlots(), CameraState("", publish=lambda name, msg: None)
    stats = camera.stats
    intake = node_core.FrameIntake(slot, [camera], NodeSettings())
    release, taken = threading.Event(), []

    def slow_process(batch):
        taken.append(batch[0][1].msg)
        release.wait(5)

    worker = FrameWorker(slot, slow_process).start()
    assert intake.offer("first") == "stored"
    deadline = time.monotonic() + 5
    while not taken and time.monotonic() < deadline:
        time.sleep(0.005)
    outcomes = [intake.offer(index) for index in range(1000)]
    assert outcomes[0] == "stored" and set(outcomes[1:]) == {"replaced"}
    assert slot.take(timeout=0)[0][1].msg == 999 and not slot.pending  # one slot, newest frame only
    release.set()
    assert worker.stop()
    assert (stats.received, stats.dropped_stale, stats.processed) == (1001, 999, 0)


def test_intake_skips_without_subscribers_when_asked():
    slot, camera = FrameSlots(), CameraState("", publish=lambda name, msg: None)
    stats = camera.stats
    listening = {"value": False}
    settings = NodeSettings(only_when_subscribed=True)
    intake = node_core.FrameIntake(slot, [camera], settings, lambda index: listening["value"], clock=lambda: 7.0)
    assert intake.offer("a") == "skipped" and not slot.pending
    listening["value"] = True
    assert intake.offer("b", compressed=True) == "stored"
    ((index, item),) = slot.take(timeout=0)
    assert (index, item.msg, item.arrival, item.compressed) == (0, "b", 7.0, True)
    settings.update("only_when_subscribed", False)
    listening["value"] = False
    assert intake.offer("c") == "stored"
    assert (stats.received, stats.skipped, stats.dropped) == (3, 1, 0)


# ---------------------------------------------------------------------------------------------
# Several cameras: parameters, slots and fairness, batching, per-camera stats and diagnostics


def test_cameras_parameter():
    settings = NodeSettings.from_values({"cameras": ("front", "rear_left", "roof/wide"), "max_batch": 2})
    assert settings.cameras == ["front", "rear_left", "roof/wide"] and settings.camera_names == settings.cameras
    assert settings.max_batch == 2
    for value, message in [
        (["front", "front"], "parameter 'cameras' names front more than once"),
        (["front", "2nd"], "parameter 'cameras': '2nd' cannot prefix a topic"),
        (["", "x"], "parameter 'cameras': '' cannot prefix a topic"),
        (["a b"], "'a b' cannot prefix a topic"),
        ("front,left", "parameter 'cameras' must be a list of strings, got str"),
        ([1, 2], "must be a list of strings, got list [1, 2]"),
    ]:
        with pytest.raises(SettingsError) as caught:
            NodeSettings.from_values({"cameras": value})
        assert message in str(caught.value)
    assert node_core.check_runtime_update("cameras", ["x"])[0] is False
    assert node_core.check_runtime_update("max_batch", 65) == (False, "parameter 'max_batch' must be within 0..64; "
                                                                      "got 65")
    assert node_core.camera_topic("front", "image/compressed") == "front/image/compressed"
    assert node_core.camera_topic("", "labels") == "labels"


def test_slots_hand_over_every_camera_in_round_robin_order():
    slots = FrameSlots(3)
    for camera in (2, 0):
        slots.put(camera, f"frame{camera}")
    assert slots.pending == 2
    assert slots.take(timeout=0) == [(0, "frame0"), (2, "frame2")]
    # next turn starts after camera 2, i.e. at camera 0 again
    for camera in range(3):
        slots.put(camera, camera)
    assert [index for index, _ in slots.take(timeout=0)] == [0, 1, 2]


@pytest.mark.parametrize("limit,expected", [
    (1, [[0], [1], [2], [0], [1], [2]]),
    (2, [[0, 1], [2, 0], [1, 2], [0, 1], [2, 0], [1, 2]]),
])
def test_capped_batches_take_turns(limit, expected):
    slots = FrameSlots(3, max_items=lambda: limit)
    turns = []
    for _ in range(6):
        for camera in range(3):  # every camera always has a new frame: the worker is behind
            slots.put(camera, camera)
        turns.append([index for index, _ in slots.take(timeout=0)])
    assert turns == expected


def test_no_camera_starves_a_slow_worker():
    cameras = [CameraState(f"cam{i}", publish=lambda name, msg: None) for i in range(4)]
    slots = FrameSlots(4, max_items=lambda: 1)  # one frame per network call: the hardest case for fairness
    intake = node_core.FrameIntake(slots, cameras, NodeSettings(cameras=[c.name for c in cameras]))
    served = []

    def process(batch):
        served.extend(index for index, _ in batch)
        time.sleep(0.002)

    worker = FrameWorker(slots, process).start()
    stop = threading.Event()

    def flood(index):  # camera 0 floods 10x faster than the others
        while not stop.is_set():
            intake.offer(f"{index}", camera=index)
            time.sleep(0.0002 if index == 0 else 0.002)

    feeders = [threading.Thread(target=flood, args=(i,)) for i in range(4)]
    for feeder in feeders:
        feeder.start()
    deadline = time.monotonic() + 20
    while len(served) < 80 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for feeder in feeders:
        feeder.join()
    assert worker.stop()
    counts = [served.count(i) for i in range(4)]
    assert min(counts) >= 0.6 * max(counts), f"unfair service {counts}"
    assert cameras[0].stats.received > 2 * cameras[1].stats.received  # it did flood
    assert cameras[0].stats.dropped_stale > 0


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
    intake = node_core.FrameIntake(slots, pipeline.cameras, pipeline.settings)
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

    reports = dict(node_core.camera_diagnostics(pipeline.cameras, node_name="/segmentation/segmentation_node",
                                                backend="torch", device="cpu", model="tiny",
                                                input_topic=lambda camera: f"/segmentation/{camera.topic('image')}"))
    assert list(reports) == ["/segmentation/segmentation_node: segmentation front",
                             "/segmentation/segmentation_node: segmentation rear"]
    front_values = dict(reports["/segmentation/segmentation_node: segmentation front"].values)
    rear_report = reports["/segmentation/segmentation_node: segmentation rear"]
    assert front_values["camera"] == "front" and front_values["dropped stale"] == "2"
    assert front_values["frames processed"] == "1"
    assert rear_report.level == node_core.WARN and rear_report.message == "1 invalid frame(s) dropped"


def test_single_camera_diagnostics_keep_their_name(types, segmenter):
    pipeline, _, _, _ = make_pipeline(types, segmenter)
    ((name, report),) = node_core.camera_diagnostics(pipeline.cameras, node_name="/seg/node", backend="b",
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


def test_parameter_descriptions_name_commands_that_exist():
    import re

    from bisenetv2_ros.cli import build_parser

    commands = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    mentioned = [m for spec in node_core.PARAMETER_SPECS for m in re.findall(r"`bisenetv2 ([\w-]+)", spec.description)]
    assert "download" in mentioned  # the weights parameter points at `bisenetv2 download --list`
    assert set(mentioned) <= commands, f"descriptions name unknown commands: {set(mentioned) - commands}"


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
