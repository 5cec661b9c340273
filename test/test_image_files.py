"""One door for image files (issue 32, rules 3 and 4): the header's size is checked before decoding, and
every failure names the file and the reason, wherever a file is read (CLI, calibration, training)."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenetv2_ros.image_files import ImageFileError, read_image_file

REPO = Path(__file__).resolve().parents[1]
# Modules that may decode with OpenCV themselves: the door itself, ROS messages (their own door with the
# same size rule) and the corruption benchmark (decodes its own in-memory JPEG, never a file).
OWN_DECODERS = {"bisenetv2_ros/image_files.py", "bisenetv2_ros/ros/messages.py", "bisenetv2_ros/benchmarks/corruptions.py"}


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (grey, 8-bit): what a decompression bomb looks like."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_no_module_decodes_image_files_itself():
    offenders = []
    for path in sorted([*REPO.glob("bisenetv2_ros/**/*.py"), *REPO.glob("training/*.py")]):
        relative = path.relative_to(REPO).as_posix()
        if relative not in OWN_DECODERS and re.search(r"cv2\.(imread|imdecode)\(", path.read_text()):
            offenders.append(relative)
    assert offenders == [], f"read image files with bisenetv2_ros.image_files.read_image_file: {offenders}"


def test_a_good_image_reads_as_opencv_decodes_it(tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    assert np.array_equal(read_image_file(tmp_path / "a.png"), frame)
    cv2.imwrite(str(tmp_path / "grey.png"), frame[..., 0])
    assert read_image_file(tmp_path / "grey.png", cv2.IMREAD_UNCHANGED).shape == (20, 30)


@pytest.mark.parametrize("case, expected", [
    ("bomb", "image {path} of 30000x30000 pixels (900.0 MP) refused: above max_input_pixels 16777216"),
    ("side", "a side above 32768 pixels"),
    ("missing", "cannot read image {path}: No such file or directory"),
    ("text", "cannot read image {path}: not an image OpenCV can decode"),
    ("damaged", "cannot read image {path}: not an image OpenCV can decode, or damaged"),
    ("folder", "{path}"),
])
def test_every_failure_is_one_line_naming_the_file_and_the_reason(tmp_path, case, expected):
    path = tmp_path / f"{case}.png"
    if case == "bomb":
        path.write_bytes(png_declaring(30000, 30000))
    elif case == "side":
        path.write_bytes(png_declaring(40000, 10))
    elif case == "text":
        path.write_text("not an image")
    elif case == "damaged":
        path.write_bytes(png_declaring(64, 64)[:40] + b"\0" * 30)
    elif case == "folder":
        path.mkdir()
    with pytest.raises(ImageFileError) as raised:
        read_image_file(path)
    message = str(raised.value)
    assert expected.format(path=path) in message and "\n" not in message


def test_calibration_and_training_readers_refuse_a_bomb_before_decoding(tmp_path, monkeypatch):
    """The size rule holds at every door that reads image files, not only `bisenetv2 segment`'s."""
    from bisenetv2_ros.inference import int8
    from bisenetv2_ros.inference.backends import BackendError
    from training.datasets import DatasetError, read_image, read_label

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(30000, 30000))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a frame the header refuses"))
    with pytest.raises(BackendError, match=r"int8 calibration image .*bomb.png of 30000x30000 pixels"):
        int8.load_calibration_frames([bomb], (32, 32), "rgb")
    with pytest.raises(DatasetError, match=r"image .*bomb.png of 30000x30000 pixels"):
        read_image(bomb)
    with pytest.raises(DatasetError, match=r"label image .*bomb.png of 30000x30000 pixels"):
        read_label(bomb)
