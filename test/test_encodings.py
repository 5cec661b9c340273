"""ros/encodings.py through messages.image_to_frame: every encoding a camera publishes, padded rows,
big-endian 16-bit data, significant bits, the exact Bayer pattern, nv21/nv24, and clear refusals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bisenetv2_ros.ros import encodings, messages
from encoded_frames import BAYER_POSITIONS, COLOUR_ENCODINGS, MONO_ENCODINGS, bayer_mosaic, encode

EXACT = {"rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16", "8UC3", "16UC3"}


def smooth_rgb(height=24, width=32) -> np.ndarray:
    """Gradients in each channel: demosaicing and chroma subsampling are nearly exact on them."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([40 + 5 * cols, 30 + 6 * rows, 220 - 3 * cols - 2 * rows], axis=2)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def message(fields: dict) -> SimpleNamespace:
    return SimpleNamespace(header=SimpleNamespace(frame_id="camera"), **fields)


def as_rgb(msg, **kwargs) -> np.ndarray:
    frame, order = messages.image_to_frame(msg, **kwargs)
    assert frame.dtype == np.uint8 and frame.shape == (msg.height, msg.width, 3)
    return messages.to_rgb(frame, order)


# is_bigendian matters for 16-bit data only
ENDIAN_CASES = [(encoding, big_endian) for encoding in COLOUR_ENCODINGS for big_endian in (False, True)
                if not big_endian or "16" in encoding]


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding,big_endian", ENDIAN_CASES,
                         ids=[f"{e}-{'big' if b else 'little'}" for e, b in ENDIAN_CASES])
def test_every_colour_encoding_gives_the_rgb_frame(encoding, pad, big_endian):
    rgb = smooth_rgb()
    decoded = as_rgb(message(encode(rgb, encoding, pad=pad, big_endian=big_endian)))
    error = np.abs(decoded.astype(int) - rgb)
    if encoding in EXACT:
        assert error.max() == 0
    else:  # demosaic / YUV rounding; the border rows of a demosaic interpolate less
        assert error[2:-2, 2:-2].mean() < 3.0 and error[2:-2, 2:-2].max() <= 12, (error.mean(), error.max())


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", MONO_ENCODINGS)
def test_mono_encodings_give_grey_frames(encoding, pad):
    rgb = smooth_rgb()
    fields = encode(rgb, encoding, pad=pad, big_endian=encoding.endswith("16") or encoding == "16UC1")
    decoded = as_rgb(message(fields))
    expected = encode(rgb, "mono8")["data"].reshape(rgb.shape[:2])
    for channel in range(3):
        assert np.array_equal(decoded[..., channel], expected)


@pytest.mark.parametrize("encoding", ["rgb16", "mono16", "bayer_grbg16", "16UC1"])
def test_12_bit_data_needs_its_significant_bits(encoding):
    rgb = smooth_rgb()
    msg = message(encode(rgb, encoding, significant_bits=12))
    reference = as_rgb(message(encode(rgb, encoding)))  # the same frame as full-range 16-bit data
    assert as_rgb(msg).max() <= 16, "12-bit data read as 16-bit is nearly black"
    assert np.abs(as_rgb(msg, significant_bits=12).astype(int) - reference).max() <= 1
    # values above the significant range (hot pixels, a wrong setting) saturate instead of wrapping
    saturated = as_rgb(message(encode(np.full_like(rgb, 255), encoding)), significant_bits=12)
    assert saturated.min() == 255


def test_significant_bits_are_checked():
    with pytest.raises(ValueError, match="significant_bits must be an integer from 8 to 16"):
        encodings.check_significant_bits(17)
    with pytest.raises(ValueError, match="from 8 to 16"):
        encodings.to_8bit(np.zeros((2, 2), np.uint16), 7)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("pattern", list(BAYER_POSITIONS))
def test_each_bayer_pattern_keeps_red_red_and_blue_blue(pattern, bits):
    """Red left half, blue right half: a swapped pattern (or OpenCV's other naming) would swap them."""
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (230, 20, 10)
    rgb[:, 8:] = (10, 20, 230)
    decoded = as_rgb(message(encode(rgb, f"bayer_{pattern}{bits}", pad=2)))
    red, blue = decoded[2:-2, 1:6], decoded[2:-2, 10:-1]
    assert (red[..., 0] > 200).all() and (red[..., 2] < 40).all(), f"bayer_{pattern}: red came out {red[0, 0]}"
    assert (blue[..., 2] > 200).all() and (blue[..., 0] < 40).all(), f"bayer_{pattern}: blue came out {blue[0, 0]}"
    # the test tells patterns apart: the red/blue-swapped pattern of the same bytes reads blue on the left
    swapped = {"rggb": "bggr", "bggr": "rggb", "gbrg": "grbg", "grbg": "gbrg"}[pattern]
    mosaic = bayer_mosaic(rgb, pattern)
    wrong = as_rgb(message(dict(height=16, width=16, encoding=f"bayer_{swapped}8", is_bigendian=0, step=16,
                                data=mosaic.reshape(-1))))
    assert (wrong[2:-2, 1:6, 2] > 200).all()


def test_bayer_frames_keep_the_image_size_and_refuse_less_than_a_cell():
    fields = encode(smooth_rgb(6, 10), "bayer_rggb8")
    assert as_rgb(message(fields)).shape == (6, 10, 3)
    with pytest.raises(messages.ImageConversionError, match="at least 2x2 pixels"):
        messages.image_to_frame(message(dict(height=1, width=4, encoding="bayer_rggb8", is_bigendian=0, step=4,
                                             data=np.zeros(4, np.uint8))))


def test_nv21_needs_even_sides_and_its_chroma_plane():
    with pytest.raises(messages.ImageConversionError, match="nv21 images .* even width and height, got 5x4"):
        messages.image_to_frame(message(dict(height=4, width=5, encoding="nv21", is_bigendian=0, step=5,
                                             data=np.zeros(30, np.uint8))))
    fields = encode(smooth_rgb(8, 8), "nv21")
    fields["data"] = fields["data"][:8 * 8 + 8]  # the luma plane and half the chroma plane
    with pytest.raises(messages.ImageConversionError, match=r"truncated image data: 72 bytes, 96 needed"):
        messages.image_to_frame(message(fields))


def test_nv24_odd_sides_decode_with_the_last_colour_repeated():
    rgb = smooth_rgb(7, 9)
    luma = encode(rgb, "mono8")["data"].reshape(7, 9)
    step, chroma = 9, np.full((7, 18), 128, np.uint8)  # grey chroma: the frame is its luma
    data = np.concatenate([luma.reshape(-1), chroma.reshape(-1)])
    decoded = as_rgb(message(dict(height=7, width=9, encoding="nv24", is_bigendian=0, step=step, data=data)))
    assert decoded.shape == (7, 9, 3)
    assert np.abs(decoded[:6, :8, 1].astype(int) - (luma[:6, :8].astype(int) - 16) * 255 / 219).max() <= 2


def test_16_bit_rows_must_start_on_whole_values():
    with pytest.raises(messages.ImageConversionError, match="step 7 of a 16-bit mono16 image is odd"):
        messages.image_to_frame(message(dict(height=2, width=3, encoding="mono16", is_bigendian=0, step=7,
                                             data=np.zeros(14, np.uint8))))


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_16_bit_data_at_an_odd_address_is_read_right(big_endian):
    rgb = smooth_rgb(4, 6)
    fields = encode(rgb, "rgb16", big_endian=big_endian)
    shifted = np.empty(fields["data"].size + 1, np.uint8)[1:]
    shifted[:] = fields["data"]
    assert shifted.ctypes.data % 2 == 1
    assert np.array_equal(as_rgb(message({**fields, "data": shifted})), rgb)


@pytest.mark.parametrize("encoding", ["32FC1", "8UC4", "bayer_rggb12", "nv12", "yuv420"])
def test_other_encodings_stay_unsupported_with_the_list(encoding):
    with pytest.raises(messages.ImageConversionError) as raised:
        messages.image_to_frame(message(dict(height=2, width=2, encoding=encoding, is_bigendian=0, step=8,
                                             data=np.zeros(16, np.uint8))))
    text = str(raised.value)
    assert text.startswith(f"unsupported image encoding {encoding!r}; supported: rgb8, bgr8")
    for name in ("bayer_grbg16", "mono16", "nv21", "nv24", "16UC3", "yuv422_yuy2"):
        assert name in text


def test_every_encoding_of_sensor_msgs_that_a_camera_publishes_is_supported():
    # sensor_msgs/image_encodings names the issue lists (32FC1 depth, 8UC4 etc. deliberately left out)
    wanted = {"rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16", "mono8", "mono16",
              "yuv422", "yuv422_yuy2", "uyvy", "yuyv", "nv21", "nv24", "8UC1", "8UC3", "16UC1", "16UC3",
              *(f"bayer_{p}{b}" for p in BAYER_POSITIONS for b in (8, 16))}
    assert wanted == set(encodings.SUPPORTED_ENCODINGS)
    assert set(COLOUR_ENCODINGS) | set(MONO_ENCODINGS) == wanted
