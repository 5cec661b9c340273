"""Resource limits at the node's and the CLI's doors: declared sizes are checked against the limits and
the data before anything is allocated, compressed frames by their header before decoding, and the
memory a conversion uses stays within the bound ros/messages.py states (a fuzz run under a memory cap)."""

from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from bisenetv2_ros import image_headers
from bisenetv2_ros.classes import CAMVID
from bisenetv2_ros.cli import media
from bisenetv2_ros.conventions import DEFAULT_MAX_INPUT_PIXELS, MAX_IMAGE_SIDE
from bisenetv2_ros.ros import messages
from bisenetv2_ros.ros import pipeline as node_core
from bisenetv2_ros.ros.frame_worker import FrameItem
from bisenetv2_ros.ros.parameters import NodeSettings
from bisenetv2_ros.ros.stats import CameraState

REPO = Path(__file__).resolve().parents[1]
FUZZ = Path(__file__).with_name("message_fuzz.py")
SMALL_ALLOCATION = 64 * 1024


def raw(height, width, step, data, encoding="rgb8"):
    return SimpleNamespace(header=SimpleNamespace(frame_id="cam"), height=height, width=width, encoding=encoding,
                           is_bigendian=0, step=step, data=data)


def compressed(data, fmt="png"):
    return SimpleNamespace(header=SimpleNamespace(frame_id="cam"), format=fmt, data=data)


def peak_allocation(function) -> tuple[int, BaseException | None]:
    """(bytes allocated at the peak of ``function()`` as tracemalloc sees them, what it raised)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        try:
            function()
            raised = None
        except BaseException as error:  # noqa: BLE001
            raised = error
        return tracemalloc.get_traced_memory()[1] - before, raised
    finally:
        tracemalloc.stop()


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG (signature, IHDR with a correct CRC, one small IDAT, IEND) whose header declares
    width x height 8-bit grey pixels: what a huge one-colour image compresses to, cut short."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return image_headers.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG with its frame header (SOF0) patched to declare width x height."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if OpenCV is asked to decode: the refusal must come from the header."""
    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(messages.cv2, "imdecode", refuse)
    monkeypatch.setattr(media.cv2, "imdecode", refuse)


# --------------------------------------------------------------------------------------------
# Raw images: the declared sizes


@pytest.mark.parametrize("data_kind", ["numpy", "array.array"])
def test_a_4gb_step_is_refused_instantly_without_allocating(data_kind):
    """height 1, width 10, step 4294967295, 30 bytes: once 4.4 GB resident, now a refusal."""
    data = np.arange(30, dtype=np.uint8)
    msg = raw(1, 10, 4294967295, data if data_kind == "numpy" else array.array("B", data.tobytes()))
    started = time.monotonic()
    peak, raised = peak_allocation(lambda: messages.image_to_frame(msg))
    assert isinstance(raised, messages.ImageConversionError)
    assert str(raised) == "step 4294967295 refused: above 262144 bytes per row (width 10 x 3 bytes per pixel needs 30)"
    assert peak < SMALL_ALLOCATION
    assert time.monotonic() - started < 5.0  # generous: the old code took seconds to fill 4 GB


def test_rosbags_message_with_a_4gb_step_is_refused():
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    Image = store.types["sensor_msgs/msg/Image"]
    header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                frame_id="cam")
    msg = Image(header=header, height=1, width=10, encoding="rgb8", is_bigendian=0, step=4294967295,
                data=np.zeros(30, np.uint8))
    msg = store.deserialize_cdr(store.serialize_cdr(msg, Image.__msgtype__), Image.__msgtype__)  # as a bag holds it
    with pytest.raises(messages.ImageConversionError, match="step 4294967295 refused"):
        messages.image_to_frame(msg)


def test_an_8000x8000_raw_frame_is_refused_above_the_limit():
    msg = raw(8000, 8000, 24000, np.zeros(30, np.uint8))  # the data need not even be there: the size decides
    peak, raised = peak_allocation(lambda: messages.image_to_frame(msg))
    assert str(raised) == ("image of 8000x8000 pixels (64.0 MP) refused: above max_input_pixels 16777216 (16.8 MP); "
                           "raise max_input_pixels to accept such frames")
    assert peak < SMALL_ALLOCATION
    # with the limit raised the same message meets the next check: the limit was the reason
    with pytest.raises(messages.ImageConversionError, match="truncated image data: 30 bytes, 192000000 needed"):
        messages.image_to_frame(msg, max_pixels=64_000_000)


def test_the_limit_is_inclusive_and_follows_the_argument():
    rgb = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    msg = raw(10, 12, 36, rgb.reshape(-1).copy())
    frame, order = messages.image_to_frame(msg, max_pixels=120)
    assert order == "rgb" and np.array_equal(frame, rgb)
    with pytest.raises(messages.ImageConversionError, match=r"10x12 .* above max_input_pixels 119 "):
        messages.image_to_frame(raw(12, 10, 30, np.zeros(360, np.uint8)), max_pixels=119)
    assert DEFAULT_MAX_INPUT_PIXELS == 4096 * 4096


@pytest.mark.parametrize("height,width,match", [
    (1, MAX_IMAGE_SIDE + 1, f"{MAX_IMAGE_SIDE + 1}x1 pixels refused: a side above 32768 pixels"),
    (2**32 - 1, 1, "a side above 32768 pixels"),
])
def test_sides_above_the_maximum_are_refused(height, width, match):
    with pytest.raises(messages.ImageConversionError, match=match):
        messages.image_to_frame(raw(height, width, width * 3, np.zeros(30, np.uint8)), max_pixels=2**40)


def test_data_longer_than_step_times_height_is_refused():
    with pytest.raises(messages.ImageConversionError,
                       match=r"image data of 25 bytes is more than step 12 x height 2 = 24 bytes"):
        messages.image_to_frame(raw(2, 4, 12, np.zeros(25, np.uint8)))


def test_missing_last_row_padding_is_a_view_not_a_copy():
    rgb = np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    rows = np.zeros((3, 20), np.uint8)
    rows[:, :12] = rgb.reshape(3, 12)
    data = rows.reshape(-1)[:-8].copy()  # step 20, the last row's 8 padding bytes left out
    frame, _ = messages.image_to_frame(raw(3, 4, 20, data))
    assert np.array_equal(frame, rgb) and np.shares_memory(frame, data)


def test_data_that_is_no_buffer_is_our_error():
    with pytest.raises(messages.ImageConversionError, match="image data is not a byte buffer"):
        messages.image_to_frame(raw(1, 1, 3, [1, 2, 3]))
    with pytest.raises(messages.ImageConversionError, match="image field step must be an integer, got str"):
        messages.image_to_frame(raw(1, 1, "3", b"abc"))


# --------------------------------------------------------------------------------------------
# Compressed images: the header decides before decoding


def test_a_20000x20000_png_is_refused_from_its_header(no_decoding):
    data = png_declaring(20000, 20000)
    assert len(data) < 200 and image_headers.declared_size(data) == (20000, 20000)
    peak, raised = peak_allocation(lambda: messages.compressed_to_frame(compressed(np.frombuffer(data, np.uint8))))
    assert isinstance(raised, messages.ImageConversionError)
    assert str(raised) == ("compressed image (png) of 20000x20000 pixels (400.0 MP) refused: above max_input_pixels "
                           "16777216 (16.8 MP); raise max_input_pixels to accept such frames")
    assert peak < SMALL_ALLOCATION


def test_a_jpeg_declaring_20000x20000_is_refused_from_its_header(no_decoding):
    with pytest.raises(messages.ImageConversionError, match=r"compressed image \(jpeg\) of 20000x20000 pixels"):
        messages.compressed_to_frame(compressed(jpeg_declaring(20000, 20000), "jpeg"))


def test_compressed_bytes_without_a_known_header_are_not_decoded(no_decoding):
    with pytest.raises(messages.ImageConversionError,
                       match=r"cannot decode compressed image of 6 bytes \(format 'png'\): no JPEG or PNG header"):
        messages.compressed_to_frame(compressed(b"GIF89a"))


def test_compressed_frames_within_the_limit_decode():
    bgr = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    png = cv2.imencode(".png", bgr)[1]
    frame, order = messages.compressed_to_frame(compressed(png), max_pixels=1200)
    assert order == "bgr" and np.array_equal(frame, bgr)
    with pytest.raises(messages.ImageConversionError, match="above max_input_pixels 1199"):
        messages.compressed_to_frame(compressed(png), max_pixels=1199)


@pytest.mark.parametrize("extension,params", [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".webp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", []), (".ppm", []), (".pgm", []),
])
def test_header_sizes_match_what_opencv_decodes(extension, params):
    pixels = np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    encoded = cv2.imencode(extension, pixels[..., 0] if extension == ".pgm" else pixels, params)[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    assert image_headers.declared_size(encoded) == (decoded.shape[1], decoded.shape[0]) == (53, 37)
    assert image_headers.declared_size(encoded[:6]) is None  # a header cut short is unknown, not small


def test_jpeg_header_after_large_metadata_segments_is_found():
    jpeg = jpeg_declaring(300, 200)
    app = b"\xff\xe1" + (65535).to_bytes(2, "big") + b"\x00" * 65533  # a full EXIF-sized segment
    assert image_headers.declared_size(jpeg[:2] + app * 3 + jpeg[2:]) == (300, 200)


# --------------------------------------------------------------------------------------------
# The node's pipeline: an oversized frame is counted and warned about, the next one goes through


def test_pipeline_counts_and_warns_about_frames_above_max_input_pixels(tiny_weights):
    typesys = pytest.importorskip("rosbags.typesys")
    types = messages.register_rosbags_types(typesys.get_typestore(typesys.Stores.ROS2_JAZZY)).types
    settings = NodeSettings(weights=str(tiny_weights), device="cpu", max_input_pixels=24 * 32)
    segmenter, classes = node_core.create_segmenter(settings)
    published, warnings = [], []
    camera = CameraState("", publish=lambda name, msg: published.append(name))
    pipeline = node_core.SegmentationPipeline(segmenter, CAMVID, settings, [camera],
                                              image_type=types["sensor_msgs/msg/Image"],
                                              info_type=types["bisenetv2_ros/msg/SegmentationInfo"],
                                              warn=warnings.append)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                          frame_id="front_cam")
    big = types["sensor_msgs/msg/CompressedImage"](header=header, format="png",
                                                   data=np.frombuffer(png_declaring(20000, 20000), np.uint8))
    assert pipeline.process(FrameItem(big, time.monotonic(), compressed=True)) is False
    assert camera.stats.dropped_invalid == 1 and published == []
    assert "dropped an invalid frame (frame_id 'front_cam')" in warnings[0]
    assert "20000x20000 pixels (400.0 MP) refused: above max_input_pixels 768" in warnings[0]
    fits = types["sensor_msgs/msg/Image"](header=header, height=24, width=32, encoding="bgr8", is_bigendian=0,
                                          step=96, data=np.zeros(24 * 96, np.uint8))
    assert pipeline.process(FrameItem(fits, time.monotonic())) is True
    assert camera.stats.dropped_invalid == 1 and "labels" in published


# --------------------------------------------------------------------------------------------
# Fuzzing and the stated memory bound, each in its own capped process


def run_helper(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(FUZZ), *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_fuzzed_messages_raise_only_conversion_errors_within_the_memory_bound():
    """900 seeded random raw and compressed messages (declared sizes up to 2**32-1, steps, encodings,
    buffer types, truncated, corrupted and header-patched JPEG/PNG/BMP/WebP) under a 512 MiB address
    space cap: nothing but ImageConversionError, and each conversion's peak within the stated bound."""
    report = run_helper("fuzz", "--seed", "20", "--count", "900", "--max-pixels", str(1 << 20), "--cap-mib", "512")
    assert report["cases"] == 900 and report["cap_enforced"]
    assert report["unexpected"] == []
    assert report["over_bound"] == []
    assert report["refused"] > 300 and report["accepted"] > 50  # both sides of the checks were exercised
    assert report["worst_ratio"] <= 5 / 3


@pytest.mark.parametrize("kind", ["progressive-jpeg-444", "png"])
def test_decoding_peak_stays_within_four_decoded_frames(tmp_path, kind):
    """The compressed bound of ros/messages.py, measured as resident-memory growth in a fresh process."""
    side = 2048
    small = np.random.default_rng(5).integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    pixels = cv2.resize(small, (side, side))
    params = ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
              if kind.startswith("progressive") else [])
    path = tmp_path / "frame.bin"
    cv2.imencode(".jpg" if "jpeg" in kind else ".png", pixels, params)[1].tofile(path)
    report = run_helper("decode-peak", "--image", str(path), "--cap-mib", "512")
    assert report["cap_enforced"]
    assert report["frame_bytes"] == side * side * 3
    assert report["frame_bytes"] <= report["peak_growth_bytes"] <= 4 * report["frame_bytes"]  # measured: 2.0x PNG, 3.0x JPEG
