"""`bisenetv2 segment BAG` on MCAP and sqlite3 rosbag2 recordings written here with rosbags:
headers, log times, label values, topic choice, skipped encodings, --copy-input, interruption."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from bisenetv2_ros.cli import bags
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.ros import messages

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
String = TYPESTORE.types["std_msgs/msg/String"]
H, W = 24, 40
MSG_FILE = Path(__file__).resolve().parents[1] / "msg" / "SegmentationInfo.msg"



def rgb_frame(seed: int, height: int = H, width: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def header(i: int, frame_id: str) -> object:
    return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 * i + 7), frame_id=frame_id)


def raw_image(i: int, rgb: np.ndarray, encoding: str, pad: int = 0) -> object:
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1], "32FC1": rgb[..., :1]}[encoding]
    height, width, channels = pixels.shape
    rows = np.zeros((height, width * channels + pad), np.uint8)  # row padding exercises `step`
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return Image(header=header(i, "camera_optical"), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * channels + pad, data=rows.reshape(-1))


def write_bag(path: Path, storage: StoragePlugin) -> dict:
    """A bag with /camera/image (raw: rgb8, bgr8 padded, mono8, one unsupported 32FC1), /camera/compressed
    (jpeg and png) and a /chatter String topic. Returns what the checks need."""
    expected: dict = {"raw": [], "compressed": []}
    with Writer(path, version=8, storage_plugin=storage) as writer:
        raw_conn = writer.add_connection("/camera/image", Image.__msgtype__, typestore=TYPESTORE)
        jpeg_conn = writer.add_connection("/camera/compressed", CompressedImage.__msgtype__, typestore=TYPESTORE)
        text_conn = writer.add_connection("/chatter", String.__msgtype__, typestore=TYPESTORE)
        for i, encoding in enumerate(("rgb8", "bgr8", "mono8", "32FC1", "rgb8")):
            rgb = rgb_frame(i)
            log_time = 5_000_000_000 + i * 100_000_000
            msg = raw_image(i, rgb, encoding, pad=4 if encoding == "bgr8" else 0)
            writer.write(raw_conn, log_time, TYPESTORE.serialize_cdr(msg, Image.__msgtype__))
            if encoding != "32FC1":
                seen = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
                expected["raw"].append((log_time, msg.header, seen))
            fmt = "jpeg" if i % 2 == 0 else "png"
            ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1])
            compressed = CompressedImage(header=header(i, "camera_compressed"), format=fmt, data=data.reshape(-1))
            writer.write(jpeg_conn, log_time + 1, TYPESTORE.serialize_cdr(compressed, CompressedImage.__msgtype__))
            expected["compressed"].append((log_time + 1, compressed.header, cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]))
            writer.write(text_conn, log_time + 2, TYPESTORE.serialize_cdr(String(data=f"hello {i}"), String.__msgtype__))
    return expected


def read_topic(bag: Path, topic: str) -> list[tuple[int, object]]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, TYPESTORE.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]


def image_array(msg) -> np.ndarray:
    channels = msg.step // msg.width
    return np.asarray(msg.data).reshape(msg.height, msg.width, channels).squeeze(-1 if channels == 1 else None)


def model_args(weights: Path) -> list[str]:
    """The eager torch backend: quickest to start, and the same as the `segmenter` fixture's."""
    return ["--weights", str(weights), "--backend", "torch", "--device", "cpu"]


@pytest.fixture(scope="module")
def segmenter(tiny_weights) -> Segmenter:
    return Segmenter(weights=tiny_weights, backend="torch", device="cpu")


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def recording(request, tmp_path_factory):
    storage = StoragePlugin.MCAP if request.param == "mcap" else StoragePlugin.SQLITE3
    path = tmp_path_factory.mktemp(request.param) / "drive"
    return request.param, path, write_bag(path, storage)


def check_output(out: Path, expected: list, segmenter: Segmenter) -> None:
    labels = read_topic(out, bags.LABELS_TOPIC)
    colors = read_topic(out, bags.COLOR_TOPIC)
    assert len(labels) == len(colors) == len(expected)
    for (log_time, head, rgb), (label_time, label_msg), (color_time, color_msg) in zip(expected, labels, colors):
        assert label_time == color_time == log_time
        for msg in (label_msg, color_msg):
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (head.stamp.sec, head.stamp.nanosec)
            assert msg.header.frame_id == head.frame_id
        assert (label_msg.encoding, label_msg.step, color_msg.encoding, color_msg.step) == ("mono8", W, "rgb8", 3 * W)
        want = segmenter.segment(np.ascontiguousarray(rgb), channel_order="rgb")
        assert len(np.unique(want)) > 1  # the comparisons below are not trivially all one class
        np.testing.assert_array_equal(image_array(label_msg), want)
        np.testing.assert_array_equal(image_array(color_msg), segmenter.colorize(want))


def test_segment_raw_topic(recording, tiny_weights, segmenter, tmp_path, capsys):
    storage, bag, expected = recording
    out = tmp_path / "out"
    code = cli.main(["segment", str(bag), "--topic", "/camera/image", *model_args(tiny_weights),
                     "--batch", "3", "--output", str(out), "--quiet"])
    assert code == 1  # a frame was skipped: the bag is written, the run says so and fails (no --skip-bad)
    captured = capsys.readouterr()
    assert ("skipped 1 unsupported frame(s) of /camera/image:\n  1 x unsupported image encoding '32FC1'; "
            "supported: rgb8, bgr8") in captured.err
    assert captured.err.strip().splitlines()[-1] == (
        "bisenetv2 segment: error: 1 of 5 frames of /camera/image were skipped (listed above; the others are "
        "written); pass --skip-bad to accept that")
    assert "segmented 4 frames of /camera/image" in captured.out
    assert bags.storage_of(out) == storage
    check_output(out, expected["raw"], segmenter)
    with Reader(out) as reader:
        assert sorted(c.topic for c in reader.connections) == [bags.COLOR_TOPIC, "/segmentation/info", bags.LABELS_TOPIC]
    check_info(out, expected["raw"], segmenter, skipped_before=[0, 0, 0, 1])  # the 4th message (32FC1) is skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def msg_fields(text: str) -> list[str]:
    """A message definition's field lines, without comments and spacing."""
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return [" ".join(line.split()) for line in lines if line]


def check_info(out: Path, expected: list, segmenter: Segmenter, skipped_before: list[int]) -> None:
    """One SegmentationInfo per segmented frame on /segmentation/info, filled as the node fills it, and
    stored with the package's own message definition."""
    with Reader(out) as reader:
        (conn,) = [c for c in reader.connections if c.topic == "/segmentation/info"]
        assert conn.msgtype == "bisenetv2_ros/msg/SegmentationInfo"
        own, *dependencies = conn.msgdef.data.split("=" * 80 + "\n")
        assert msg_fields(own) == msg_fields(MSG_FILE.read_text())
        assert [d.splitlines()[0] for d in dependencies] == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time"]
    store = messages.register_rosbags_types(get_typestore(Stores.ROS2_JAZZY))
    with Reader(out) as reader:
        conns = [c for c in reader.connections if c.topic == "/segmentation/info"]
        infos = [(t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]
    assert len(infos) == len(expected)
    for i, ((log_time, head, rgb), (info_time, info)) in enumerate(zip(expected, infos)):
        assert info_time == log_time
        assert (info.header.stamp.sec, info.header.stamp.nanosec, info.header.frame_id) == (
            head.stamp.sec, head.stamp.nanosec, head.frame_id)
        assert (info.model, info.backend, info.device, info.camera) == (str(segmenter.weights), "torch", "cpu", "")
        assert (info.frames_processed, info.frames_dropped, info.frames_failed) == (i + 1, skipped_before[i], 0)
        assert info.frames_received == i + 1 + skipped_before[i]
        assert info.inference_ms > 0 and info.latency_ms >= 0 and info.batch_size >= 1
        want = segmenter.segment(np.ascontiguousarray(rgb), channel_order="rgb")
        np.testing.assert_allclose(info.class_fractions, np.bincount(want.ravel(), minlength=256)[:11] / want.size,
                                   atol=1e-6)
        assert len(info.class_confidence) == 0  # as the node: only with the confidence output
        assert not info.ood_calibrated and not info.ood and 0.0 <= info.ood_score <= 1.0  # tiny weights: uncalibrated


def test_segment_compressed_topic_with_copy_input(recording, tiny_weights, segmenter, tmp_path, capsys):
    storage, bag, expected = recording
    other = "sqlite3" if storage == "mcap" else "mcap"
    out = tmp_path / "out"
    code = cli.main(["segment", str(bag), "--topic", "/camera/compressed", *model_args(tiny_weights),
                     "--batch", "2", "--copy-input", "--storage", other, "--output", str(out), "--quiet"])
    assert code == 0
    assert "copied 15 input messages" in capsys.readouterr().out
    assert bags.storage_of(out) == other
    check_output(out, expected["compressed"], segmenter)
    for topic in ("/camera/image", "/camera/compressed", "/chatter"):
        original, copied = read_topic(bag, topic), read_topic(out, topic)
        assert [t for t, _ in copied] == [t for t, _ in original]
        assert [TYPESTORE.serialize_cdr(m, type(m).__msgtype__).tobytes() for _, m in copied] == \
               [TYPESTORE.serialize_cdr(m, type(m).__msgtype__).tobytes() for _, m in original]
    with Reader(out) as reader:  # written in log-time order
        times = [t for _, t, _ in reader.messages()]
    assert times == sorted(times)
    # segmenting that output again with --copy-input: one connection per topic, the old outputs not copied
    again = tmp_path / "again"
    assert cli.main(["segment", str(out), "--topic", "/camera/compressed", *model_args(tiny_weights), "--copy-input",
                     "--output", str(again), "--quiet"]) == 0
    assert f"warning: not copying {bags.LABELS_TOPIC} from the input: this run writes it" in capsys.readouterr().err
    with Reader(again) as reader:
        topics = [c.topic for c in reader.connections]
    assert len(topics) == len(set(topics)) and bags.LABELS_TOPIC in topics
    assert len(read_topic(again, bags.LABELS_TOPIC)) == len(expected["compressed"])


def test_default_output_and_topic_choice(recording, tiny_weights, capsys):
    _, bag, _ = recording
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"bisenetv2 segment: error: bag {bag} has 2 image topics; choose one with --topic: "
                   "/camera/compressed (CompressedImage), /camera/image (Image)")
    assert cli.main(["segment", str(bag), "--topic", "/chatter", *model_args(tiny_weights)]) == 1
    assert "has no image topic '/chatter'" in capsys.readouterr().err
    assert not (bag.parent / "drive_segmented").exists()


def test_only_image_topic_is_the_default(tmp_path, tiny_weights, segmenter):
    bag = tmp_path / "single"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam", Image.__msgtype__, typestore=TYPESTORE)
        msg = raw_image(0, rgb_frame(42), "rgb8")
        writer.write(conn, 123, TYPESTORE.serialize_cdr(msg, Image.__msgtype__))
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--quiet"]) == 0
    check_output(tmp_path / "single_segmented", [(123, msg.header, rgb_frame(42))], segmenter)


def _send_sigterm() -> None:
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a launch system's shutdown would
    time.sleep(5)  # the CLI's handler interrupts this sleep


def _press_ctrl_c() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("stop, code, message", [(_press_ctrl_c, 130, "interrupted"), (_send_sigterm, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_stopped_bag_run_leaves_no_output(recording, tiny_weights, tmp_path, monkeypatch, capsys, stop, code, message):
    import signal

    _, bag, _ = recording
    real = Segmenter.segment_batch
    frames_done = []

    def stop_after_two_frames(self, frames, channel_order="rgb", **options):
        if len(frames_done) >= 2:
            stop()
        frames_done.extend(range(len(frames)))
        return real(self, frames, channel_order, **options)

    monkeypatch.setattr(Segmenter, "segment_batch", stop_after_two_frames)
    handler_before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    result = cli.main(["segment", str(bag), "--topic", "/camera/image", *model_args(tiny_weights),
                       "--output", str(out), "--quiet"])
    assert result == code and len(frames_done) == 2
    assert f"{message}; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the CLI's handler is removed again


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_decode_frame_keeps_the_declared_channel_order(encoding):
    rgb = rgb_frame(3)
    frame, order = bags.decode_frame(raw_image(0, rgb, encoding, pad=3), Image.__msgtype__)
    assert order == ("bgr" if encoding == "bgr8" else "rgb")
    want = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(frame if order == "rgb" else frame[..., ::-1], want)


def test_malformed_and_unsupported_messages_name_the_problem():
    msg = raw_image(0, rgb_frame(1), "rgb8")
    short = Image(header=msg.header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=3 * W,
                  data=msg.data[: 10])
    with pytest.raises(messages.ImageConversionError, match=r"truncated image data: 10 bytes, 2880 needed for 40x24 rgb8"):
        bags.decode_frame(short, Image.__msgtype__)
    with pytest.raises(messages.ImageConversionError, match="unsupported image encoding '32FC1'"):
        bags.decode_frame(Image(header=msg.header, height=H, width=W, encoding="32FC1", is_bigendian=0,
                                step=4 * W, data=msg.data[: 4 * W * H]), Image.__msgtype__)
    broken = CompressedImage(header=msg.header, format="jpeg", data=np.zeros(50, np.uint8))
    with pytest.raises(messages.ImageConversionError, match="cannot decode compressed image of 50 bytes"):
        bags.decode_frame(broken, CompressedImage.__msgtype__)


def packed_image(i: int, pixels: np.ndarray, encoding: str, pad: int = 0) -> object:
    """An Image of HxWxC bytes already in ``encoding``'s layout, rows padded by ``pad`` bytes."""
    height, width, channels = pixels.shape
    rows = np.full((height, width * channels + pad), 99, np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return Image(header=header(i, "camera_optical"), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * channels + pad, data=rows.reshape(-1))


def test_every_node_encoding_is_segmented_in_its_own_channel_order(tmp_path, tiny_weights, segmenter, monkeypatch,
                                                                   capsys):
    """YUV 4:2:2 (both byte orders and the Humble aliases), padded bgr8/bgra8, 8UC3, a frame of another
    size and an unsupported one: labels equal Segmenter.segment on the frame converted independently
    here, and each batch holds frames of one size and channel order."""
    rgb, big = rgb_frame(7), rgb_frame(8, 2 * H, 2 * W)
    yuv = np.ascontiguousarray(rgb_frame(9)[..., :2])  # any bytes are valid packed YUV 4:2:2
    alpha = np.full((H, W, 1), 200, np.uint8)
    # (encoding, pixels in that layout, row padding, frame the segmenter must see, its channel order)
    cases = [
        ("yuyv", yuv, 0, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_YUY2), "rgb"),
        ("uyvy", yuv, 6, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_UYVY), "rgb"),
        ("yuv422_yuy2", yuv, 0, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_YUY2), "rgb"),
        ("bgr8", rgb[..., ::-1], 5, rgb[..., ::-1], "bgr"),
        ("yuv422", yuv, 2, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_UYVY), "rgb"),
        ("bgra8", np.concatenate([rgb[..., ::-1], alpha], axis=2), 4, rgb[..., ::-1], "bgr"),
        ("8UC3", rgb[..., ::-1], 0, rgb[..., ::-1], "bgr"),
        ("rgba8", np.concatenate([big, np.full((2 * H, 2 * W, 1), 9, np.uint8)], axis=2), 0, big, "rgb"),
        ("32FC1", np.concatenate([yuv, yuv], axis=2), 0, None, None),  # depth: not a camera image
        ("8UC1", rgb[..., 1:2], 3, np.repeat(rgb[..., 1:2], 3, axis=2), "rgb"),
    ]
    bag = tmp_path / "encodings"
    expected = []
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam", Image.__msgtype__, typestore=TYPESTORE)
        for i, (encoding, pixels, pad, frame, order) in enumerate(cases):
            msg = packed_image(i, np.ascontiguousarray(pixels), encoding, pad)
            writer.write(conn, 1000 + i, TYPESTORE.serialize_cdr(msg, Image.__msgtype__))
            if frame is not None:
                expected.append((1000 + i, msg.header, np.ascontiguousarray(frame), order))

    batches = []
    real = Segmenter.segment_batch

    def record_batches(self, frames, channel_order="rgb", **options):
        batches.append((len(frames), frames.shape[1:3], channel_order))
        return real(self, frames, channel_order, **options)

    monkeypatch.setattr(Segmenter, "segment_batch", record_batches)
    out = tmp_path / "out"
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--batch", "2", "--output", str(out),
                     "--quiet", "--skip-bad"]) == 0
    assert "skipped 1 unsupported frame(s) of /cam:\n  1 x unsupported image encoding '32FC1'" in capsys.readouterr().err
    assert batches == [(2, (H, W), "rgb"), (1, (H, W), "rgb"), (1, (H, W), "bgr"), (1, (H, W), "rgb"),
                       (2, (H, W), "bgr"), (1, (2 * H, 2 * W), "rgb"), (1, (H, W), "rgb")]
    monkeypatch.undo()

    labels, colors = read_topic(out, bags.LABELS_TOPIC), read_topic(out, bags.COLOR_TOPIC)
    assert [t for t, _ in labels] == [t for t, _ in colors] == [t for t, _, _, _ in expected]
    for (_, head, frame, order), (_, label_msg), (_, color_msg) in zip(expected, labels, colors):
        assert label_msg.header.stamp == head.stamp and color_msg.header.frame_id == head.frame_id
        want = segmenter.segment(frame, channel_order=order)
        assert len(np.unique(want)) > 1
        np.testing.assert_array_equal(image_array(label_msg), want)
        np.testing.assert_array_equal(image_array(color_msg), segmenter.colorize(want))


def test_a_bag_without_a_decodable_frame_is_an_error(tmp_path, tiny_weights, capsys):
    bag = tmp_path / "depth"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/depth", Image.__msgtype__, typestore=TYPESTORE)
        for i in range(3):
            msg = raw_image(i, rgb_frame(i), "32FC1")
            writer.write(conn, 10 + i, TYPESTORE.serialize_cdr(msg, Image.__msgtype__))
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error: no frame of /depth could be decoded:\n  3 x unsupported image encoding '32FC1'" in err
    assert not (tmp_path / "depth_segmented").exists()


def test_a_bare_storage_file_is_read_too(recording, tiny_weights, segmenter, tmp_path):
    storage, bag, expected = recording
    storage_file = next(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    out = tmp_path / "out"
    assert cli.main(["segment", str(storage_file), "--topic", "/camera/image", *model_args(tiny_weights),
                     "--output", str(out), "--quiet", "--skip-bad"]) == 0  # the recording has one 32FC1 frame
    assert bags.storage_of(out) == storage
    check_output(out, expected["raw"], segmenter)


@pytest.mark.parametrize("metadata,message", [
    ("rosbag2_bagfile_information:\n  version: [8\n", "Could not load YAML"),
    ("something_else: 1\n", "metadata key is missing"),
])
def test_a_bag_folder_with_an_invalid_metadata_file_is_one_clear_error(tmp_path, metadata, message, capsys):
    bag = tmp_path / "badbag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text(metadata)
    assert cli.main(["segment", str(bag), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"bisenetv2 segment: error: cannot open rosbag2 {bag}: ") and message in err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "badbag_segmented").exists()


def test_confidence_and_compressed_outputs_are_read_back(recording, tiny_weights, segmenter, tmp_path, capsys):
    storage, bag, expected = recording
    out = tmp_path / "out"
    assert cli.main(["segment", str(bag), "--topic", "/camera/compressed", *model_args(tiny_weights), "--batch", "2",
                     "--outputs", "labels/compressed,color/compressed,confidence", "--output", str(out),
                     "--quiet"]) == 0
    assert ("(/segmentation/labels/compressed, /segmentation/color/compressed, /segmentation/confidence)"
            in capsys.readouterr().out)
    with Reader(out) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/segmentation/labels/compressed": "sensor_msgs/msg/CompressedImage",
            "/segmentation/color/compressed": "sensor_msgs/msg/CompressedImage",
            "/segmentation/confidence": "sensor_msgs/msg/Image"}
    labels = list(bags.read_segmentation(out, "/segmentation/labels/compressed"))
    colors = list(bags.read_segmentation(out, "/segmentation/color/compressed"))
    confidences = list(bags.read_segmentation(out, "/segmentation/confidence"))
    assert len(labels) == len(colors) == len(confidences) == len(expected["compressed"])
    for (log_time, head, rgb), label, color, confidence in zip(expected["compressed"], labels, colors, confidences):
        assert label[0] == color[0] == confidence[0] == log_time
        assert label[1].stamp.sec == head.stamp.sec and label[1].frame_id == head.frame_id
        want_labels, want_confidence = segmenter.segment(np.ascontiguousarray(rgb), "rgb", confidence=True)
        np.testing.assert_array_equal(label[2], want_labels)  # PNG: lossless
        np.testing.assert_array_equal(color[2], segmenter.colorize(want_labels))
        np.testing.assert_array_equal(confidence[2], want_confidence)
    # A bag recorded from the node (camera + its outputs) gives the camera as the only candidate topic.
    topics = {"/camera/image": bags.IMAGE_TYPE, "/segmentation/labels": bags.IMAGE_TYPE,
              "/segmentation/labels/compressed": bags.COMPRESSED_TYPE, "/segmentation/confidence": bags.IMAGE_TYPE}
    assert bags.choose_topic(topics, None, bag) == "/camera/image"
    with pytest.raises(bags.BagError, match="has no topic '/segmentation/points'"):
        list(bags.read_segmentation(out, "/segmentation/points"))


def test_bag_outputs_are_checked(recording, tiny_weights, tmp_path, capsys):
    _, bag, _ = recording
    assert cli.main(["segment", str(bag), "--topic", "/camera/image", *model_args(tiny_weights),
                     "--outputs", "labels,overlay", "--output", str(tmp_path / "o")]) == 1
    assert "--outputs overlay applies to images and videos; a bag gets labels,color,confidence" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def rosidl_type_hash(msg_file: Path, work: Path) -> str:
    """RIHS01 hash of a .msg as a ROS build computes it (rosidl_adapter + rosidl_generator_type_description,
    the Jazzy wheels of the test venv), against the std_msgs / builtin_interfaces type descriptions."""
    import json
    import sys

    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_generator_type_description import generate_type_hash

    share = Path(sys.prefix) / "share"
    if not (share / "std_msgs" / "msg" / "Header.json").exists():
        pytest.skip(f"no std_msgs type descriptions in {share} (scripts/setup_ros_wheels.sh installs them)")
    convert_msg_to_idl(msg_file.parents[1], "bisenetv2_ros", Path("msg") / msg_file.name, work / "idl" / "msg")
    arguments = {"package_name": "bisenetv2_ros", "output_dir": str(work / "json"),
                 "idl_tuples": [f"{work / 'idl'}:msg/{msg_file.stem}.idl"],
                 "include_paths": [f"{name}:{share / name}" for name in ("std_msgs", "builtin_interfaces")]}
    (work / "arguments.json").write_text(json.dumps(arguments))
    (description,) = generate_type_hash(str(work / "arguments.json"))
    return json.loads(description.read_text())["type_hashes"][0]["hash_string"]


def test_info_topic_has_the_type_hash_ros_computes_from_the_msg_file(recording, tiny_weights, tmp_path, capsys):
    """The bag records the SegmentationInfo type hash a ROS build of the package has (type_description_hash)."""
    pytest.importorskip("rosidl_generator_type_description", reason="the rosidl wheels of scripts/setup_ros_wheels.sh")
    _, bag, expected = recording
    out = tmp_path / "out"
    assert cli.main(["segment", str(bag), "--topic", "/camera/compressed", *model_args(tiny_weights),
                     "--outputs", "info", "--output", str(out), "--quiet"]) == 0
    with Reader(out) as reader:
        (conn,) = reader.connections
        assert (conn.topic, conn.msgtype) == ("/segmentation/info", "bisenetv2_ros/msg/SegmentationInfo")
        assert conn.msgcount == len(expected["compressed"])
    assert conn.digest == rosidl_type_hash(MSG_FILE, tmp_path / "rosidl")
    assert conn.digest.startswith("RIHS01_")
