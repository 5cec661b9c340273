"""Every ``sensor_msgs/Image`` encoding a camera driver publishes -> an 8-bit 3-channel frame, ROS-free.

``ros/messages.py`` is the entry point (size checks, limits, views); this module knows the encodings:
their byte layout (``ENCODINGS``) and the conversions beyond plain 8-bit rgb/bgr(a):

- 16-bit data (rgb16 ... bgra16, mono16, 16UC1/16UC3, bayer_*16), little- or big-endian
  (``is_bigendian``), scaled to 8 bits from its ``significant_bits`` (a 12-bit camera in a 16-bit
  container: 12), saturating values above that range;
- Bayer mosaics (``bayer_{rggb,bggr,gbrg,grbg}{8,16}``): OpenCV's bilinear demosaic to a frame of the
  image's own size (chosen over 2x2 binning by measurement, docs/node.md "Input encodings");
- the semi-planar YUV encodings nv21 (4:2:0, V before U) and nv24 (4:4:4, U before V): a luma plane
  of ``height`` rows of ``step`` bytes, then the interleaved chroma plane: for nv21 ``height / 2`` rows
  of ``step`` bytes (``width`` used), for nv24 ``height`` rows of ``2 x step`` bytes (``2 x width`` used).

Memory beyond the message (the bound test_message_limits checks): the 3-byte frame, plus for 16-bit
data the 8-bit copy (1-4 bytes per pixel; for big-endian data byte-swapped in blocks of rows, never
the whole frame), for nv24 a quarter-size chroma plane (0.5 bytes per pixel): at most 5 bytes per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """A frame that cannot be converted; the message names the problem (encoding, size, data)."""


@dataclass(frozen=True)
class EncodingInfo:
    """How a ``sensor_msgs/Image`` encoding lays out its bytes."""

    name: str             # canonical name (aliases resolved)
    bytes_per_pixel: int  # of a row of the (first) plane; uyvy/yuyv: 2 (4 per pixel pair); nv21/nv24: 1 (luma)
    layout: str           # rgb, bgr, rgba, bgra, mono, uyvy, yuyv, bayer_rggb/bggr/gbrg/grbg, nv21, nv24
    bits: int = 8         # bits per channel value: 8 or 16

    @property
    def channels(self) -> int:
        return self.bytes_per_pixel * 8 // self.bits

    @property
    def planar(self) -> bool:
        return self.layout in ("nv21", "nv24")


def _table() -> dict[str, EncodingInfo]:
    table: dict[str, EncodingInfo] = {}
    for bits in (8, 16):
        size = bits // 8
        for layout, channels in (("rgb", 3), ("bgr", 3), ("rgba", 4), ("bgra", 4), ("mono", 1)):
            table[f"{layout}{bits}"] = EncodingInfo(f"{layout}{bits}", channels * size, layout, bits)
        for pattern in ("rggb", "bggr", "gbrg", "grbg"):
            name = f"bayer_{pattern}{bits}"
            table[name] = EncodingInfo(name, size, f"bayer_{pattern}", bits)
        # Generic OpenCV types some drivers (and cv_bridge users) publish; xUC3 is OpenCV's BGR order.
        table[f"{bits}UC1"] = EncodingInfo(f"{bits}UC1", size, "mono", bits)
        table[f"{bits}UC3"] = EncodingInfo(f"{bits}UC3", 3 * size, "bgr", bits)
    # The yuv422 names are the older (Humble) aliases of uyvy / yuyv; Jazzy publishers may use either.
    table["uyvy"] = table["yuv422"] = EncodingInfo("uyvy", 2, "uyvy")
    table["yuyv"] = table["yuv422_yuy2"] = EncodingInfo("yuyv", 2, "yuyv")
    table["nv21"] = EncodingInfo("nv21", 1, "nv21")
    table["nv24"] = EncodingInfo("nv24", 1, "nv24")
    return table


ENCODINGS: dict[str, EncodingInfo] = _table()
SUPPORTED_ENCODINGS = tuple(ENCODINGS)
WIDEST_PIXEL_BYTES = max(info.bytes_per_pixel for info in ENCODINGS.values())  # rgba16 / bgra16: 8

# OpenCV names a Bayer pattern by the top-left 2x2 cell since 4.x/5.x (older builds: by the second
# row, so BayerRGGB == BayerBG); test_encodings proves each against a hand-built mosaic.
_BAYER_TO_RGB = {"bayer_rggb": cv2.COLOR_BayerRGGB2RGB, "bayer_bggr": cv2.COLOR_BayerBGGR2RGB,
                 "bayer_gbrg": cv2.COLOR_BayerGBRG2RGB, "bayer_grbg": cv2.COLOR_BayerGRBG2RGB}
_YUV_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
_SWAP_BLOCK_VALUES = 1 << 14  # big-endian data is byte-swapped this many values at a time (32 KiB)


def encoding_info(encoding: str) -> EncodingInfo:
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    return info


def check_significant_bits(bits: int, what: str = "significant_bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 8 <= bits <= 16:
        raise ValueError(f"{what} must be an integer from 8 to 16 (bits of 16-bit image data), got {bits!r}")
    return int(bits)


def to_8bit(values: np.ndarray, significant_bits: int = 16) -> np.ndarray:
    """HxW or HxWxC uint16 (any byte order or alignment, rows may be strided) -> uint8 of the same shape:
    ``round(value x 255 / (2**significant_bits - 1))``, saturating at 255."""
    scale = 255.0 / ((1 << check_significant_bits(significant_bits)) - 1)
    if values.dtype.isnative and values.flags.aligned:  # OpenCV drops a last axis of 1: the shape is restored
        return cv2.convertScaleAbs(values, alpha=scale).reshape(values.shape)
    # big-endian or unaligned (odd address) data: a bounded native, aligned copy at a time (tiles of rows, and
    # of columns for rows longer than a tile), never the whole frame
    flat = values.reshape(values.shape[0], -1)  # a view: each row's values are contiguous
    out = np.empty(flat.shape, np.uint8)
    columns = min(flat.shape[1], _SWAP_BLOCK_VALUES)
    rows = max(1, _SWAP_BLOCK_VALUES // columns)
    for top in range(0, flat.shape[0], rows):
        for left in range(0, flat.shape[1], columns):
            tile = flat[top:top + rows, left:left + columns]
            out[top:top + rows, left:left + columns] = cv2.convertScaleAbs(tile.astype(tile.dtype.newbyteorder("=")),
                                                                           alpha=scale)
    return out.reshape(values.shape)


def bayer_to_rgb(mosaic: np.ndarray, layout: str) -> np.ndarray:
    """HxW uint8 Bayer mosaic (rows may be strided) -> HxWx3 RGB of the same size (bilinear demosaic)."""
    if mosaic.shape[0] < 2 or mosaic.shape[1] < 2:
        raise ImageConversionError(f"{layout} images need at least 2x2 pixels (one Bayer cell), "
                                   f"got {mosaic.shape[1]}x{mosaic.shape[0]}")
    return cv2.cvtColor(mosaic, _BAYER_TO_RGB[layout])


def packed_yuv_to_rgb(pixels: np.ndarray, layout: str) -> np.ndarray:
    """HxWx2 uyvy / yuyv -> HxWx3 RGB."""
    return cv2.cvtColor(np.ascontiguousarray(pixels), _YUV_TO_RGB[layout])


def chroma_plane_shape(info: EncodingInfo, width: int, height: int, step: int) -> tuple[int, int, int]:
    """(rows, row stride in bytes, used bytes per row) of the chroma plane of nv21 / nv24."""
    if info.layout == "nv21":
        return height // 2, step, width
    return height, 2 * step, 2 * width


def check_planar_size(info: EncodingInfo, width: int, height: int) -> None:
    if info.layout == "nv21" and (width % 2 or height % 2):
        raise ImageConversionError(f"nv21 images (4:2:0) need an even width and height, got {width}x{height}")


def planar_to_rgb(luma: np.ndarray, chroma: np.ndarray, layout: str) -> np.ndarray:
    """Luma HxW and interleaved chroma (nv21: H/2 x W/2 x 2 VU; nv24: H x W x 2 UV) -> HxWx3 RGB.

    nv24's chroma is averaged to 4:2:0 first (OpenCV converts the semi-planar forms only at 4:2:0), which
    keeps the same BT.601 conversion as nv21 and the packed 4:2:2 encodings; the network sees a
    downscaled frame, where full-resolution chroma makes no difference (docs/node.md)."""
    if layout == "nv21":
        return cv2.cvtColorTwoPlane(luma, chroma, cv2.COLOR_YUV2RGB_NV21)
    height, width = luma.shape
    even_h, even_w = height - height % 2, width - width % 2
    if even_h == 0 or even_w == 0:
        raise ImageConversionError(f"nv24 images need at least 2x2 pixels, got {width}x{height}")
    half = cv2.resize(chroma[:even_h, :even_w], (even_w // 2, even_h // 2), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColorTwoPlane(luma[:even_h, :even_w], half, cv2.COLOR_YUV2RGB_NV12)
    if (even_h, even_w) != (height, width):  # an odd last row / column repeats its neighbour's colour
        rgb = cv2.copyMakeBorder(rgb, 0, height - even_h, 0, width - even_w, cv2.BORDER_REPLICATE)
    return rgb
