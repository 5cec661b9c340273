"""`bisenetv2 segment`'s doors: --max-input-pixels on images, videos and bags, bag messages that
cannot be deserialized, and special files (FIFOs, devices) refused instead of read."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenetv2_ros import fileio
from bisenetv2_ros.cli import bags, media
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.ros import messages

rosbag2 = pytest.importorskip("rosbags.rosbag2")
typesys = pytest.importorskip("rosbags.typesys")
TYPESTORE = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
H, W = 24, 32


def model_args(weights: Path) -> list[str]:
    return ["--weights", str(weights), "--backend", "torch", "--device", "cpu", "--quiet"]


def image_msg(i: int, height: int = H, width: int = W, step: int | None = None, data=None):
    step = 3 * width if step is None else step
    data = np.full(step * height, 40 + i, np.uint8) if data is None else data
    return Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=height, width=width,
                 encoding="rgb8", is_bigendian=0, step=step, data=data)


def write_bag(path: Path) -> None:
    """Frames 0 and 4 good; 1 a corrupt CDR payload (a data length beyond the message); 2 the 4 GB step;
    3 a compressed PNG whose header declares 20000x20000."""
    from test_message_limits import png_declaring

    with rosbag2.Writer(path, version=8, storage_plugin=rosbag2.StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image", Image.__msgtype__, typestore=TYPESTORE)
        compressed = writer.add_connection("/camera/compressed", CompressedImage.__msgtype__, typestore=TYPESTORE)
        good = TYPESTORE.serialize_cdr(image_msg(0), Image.__msgtype__)
        writer.write(conn, 1_000, good)
        corrupt = bytearray(good)
        length_at = len(corrupt) - H * W * 3 - 4  # the uint32 length of `data`, just before it
        corrupt[length_at:length_at + 4] = (2**31).to_bytes(4, "little")
        writer.write(conn, 2_000, bytes(corrupt))
        writer.write(conn, 3_000, TYPESTORE.serialize_cdr(
            image_msg(2, height=1, width=10, step=4294967295, data=np.zeros(30, np.uint8)), Image.__msgtype__))
        header = Header(stamp=Time(sec=3, nanosec=0), frame_id="cam")
        writer.write(compressed, 3_500, TYPESTORE.serialize_cdr(
            CompressedImage(header=header, format="png", data=np.frombuffer(png_declaring(20000, 20000), np.uint8)),
            CompressedImage.__msgtype__))
        writer.write(conn, 4_000, TYPESTORE.serialize_cdr(image_msg(4), Image.__msgtype__))


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "drive"
    write_bag(path)
    return path


def test_corrupt_cdr_payload_is_one_conversion_error(bag):
    with rosbag2.Reader(bag) as reader:
        raws = [raw for conn, _, raw in reader.messages() if conn.topic == "/camera/image"]
    with pytest.raises(messages.ImageConversionError,
                       match="^corrupt CDR payload: not a readable sensor_msgs/msg/Image$"):
        bags.deserialize(TYPESTORE, raws[1], Image.__msgtype__)
    assert bags.deserialize(TYPESTORE, raws[0], Image.__msgtype__).height == H


def test_bag_with_corrupt_and_oversized_frames_is_segmented_and_counted(bag, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["segment", str(bag), "--topic", "/camera/image", "-o", str(out), *model_args(tiny_weights)])
    err = capsys.readouterr().err
    assert code == 1  # frames were skipped and --skip-bad was not given; the output is kept
    assert "skipped 2 unsupported frame(s) of /camera/image:" in err
    assert "1 x corrupt CDR payload: not a readable sensor_msgs/msg/Image" in err
    assert "1 x step 4294967295 refused: above 262144 bytes per row" in err
    assert "error: 2 of 4 frames of /camera/image were skipped" in err
    with rosbag2.Reader(out) as reader:
        stamps = [TYPESTORE.deserialize_cdr(raw, c.msgtype).header.stamp.sec
                  for c, _, raw in reader.messages() if c.topic == bags.LABELS_TOPIC]
    assert stamps == [0, 4]
    code = cli.main(["segment", str(bag), "--topic", "/camera/image", "-o", str(tmp_path / "again"), "--skip-bad",
                     *model_args(tiny_weights)])
    assert code == 0 and "Traceback" not in capsys.readouterr().err


def test_bag_frames_above_max_input_pixels_name_the_option(bag, tiny_weights, tmp_path, capsys):
    code = cli.main(["segment", str(bag), "--topic", "/camera/compressed", "-o", str(tmp_path / "c"),
                     *model_args(tiny_weights)])
    err = capsys.readouterr().err
    assert code == 1
    assert ("no frame of /camera/compressed could be decoded:\n  1 x compressed image (png) of 20000x20000 pixels "
            "(400.0 MP) refused: above --max-input-pixels 16777216 (16.8 MP); raise --max-input-pixels") in err
    # the good raw frames fail the same way once the limit is below them
    code = cli.main(["segment", str(bag), "--topic", "/camera/image", "-o", str(tmp_path / "r"),
                     "--max-input-pixels", str(H * W - 1), *model_args(tiny_weights)])
    assert code == 1 and f"2 x image of {W}x{H} pixels" in capsys.readouterr().err


def test_image_above_max_input_pixels_is_refused_before_decoding(tmp_path, tiny_weights, capsys, monkeypatch):
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), np.zeros((H, W, 3), np.uint8))
    assert media.read_image(path, H * W).shape == (H, W, 3)
    monkeypatch.setattr(media.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(media.MediaError, match=rf"image {path} of {W}x{H} pixels \(0.0 MP\) refused: above "
                                               rf"--max-input-pixels {H * W - 1} "):
        media.read_image(path, H * W - 1)
    code = cli.main(["segment", str(path), "--max-input-pixels", "100", *model_args(tiny_weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "raise --max-input-pixels to accept such frames" in err[0]


def test_video_above_max_input_pixels_is_refused(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(3):
        writer.write(np.full((H, W, 3), 30 * i, np.uint8))
    writer.release()
    capture, info = media.open_video(path, H * W)
    capture.release()
    assert (info.width, info.height) == (W, H)
    with pytest.raises(media.MediaError, match=rf"video {path} \(frames\) of {W}x{H} pixels .* above --max-input-pixels"):
        media.open_video(path, H * W - 1)


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "camera.png"
    os.mkfifo(path)
    return path


def test_special_files_are_refused_not_read(fifo, tmp_path, capsys):
    """A FIFO blocks its reader until a writer comes; /dev/zero never ends. Both are refused at once."""
    assert fileio.special_file_kind(fifo) == "a FIFO (named pipe)"
    assert fileio.special_file_kind("/dev/zero") == "a character device"
    assert fileio.special_file_kind(tmp_path) is None and fileio.special_file_kind(tmp_path / "none") is None
    with pytest.raises(media.MediaError, match=rf"^input {fifo} is a FIFO \(named pipe\), not a regular file"):
        media.input_kind(fifo)
    with pytest.raises(media.MediaError, match="^image /dev/zero is a character device, not a regular file"):
        media.read_image("/dev/zero")
    with pytest.raises(media.MediaError, match="is a FIFO"):
        media.open_video(fifo)
    code = cli.main(["segment", str(fifo)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "is a FIFO (named pipe), not a regular file" in err


def test_bag_folder_holding_a_special_file_is_refused(tmp_path):
    folder = tmp_path / "bag"
    folder.mkdir()
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    os.mkfifo(folder / "bag_0.mcap")
    with pytest.raises(media.MediaError, match=r"^bag file .*bag_0\.mcap is a FIFO"):
        media.input_kind(folder)


def test_special_files_as_weights_classes_or_import_source_are_refused(fifo, tmp_path, capsys):
    from bisenetv2_ros.classes import ClassSet
    from bisenetv2_ros.weights.checkpoint import CheckpointError, read_checkpoint_file
    from bisenetv2_ros.weights.known_weights import resolve_weights

    with pytest.raises(CheckpointError, match=rf"^weights {fifo} is a FIFO \(named pipe\), not a regular file"):
        resolve_weights(str(fifo))
    with pytest.raises(CheckpointError, match="^checkpoint /dev/zero is a character device, not a regular file"):
        read_checkpoint_file("/dev/zero")
    with pytest.raises(ValueError, match=rf"^class file {fifo} is a FIFO"):
        ClassSet.from_file(fifo)
    assert cli.main(["import", str(fifo), str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bisenetv2 import: error: checkpoint {fifo} is a FIFO (named pipe), not a regular file; "
                   "reading it could block or never end: give a file"]
