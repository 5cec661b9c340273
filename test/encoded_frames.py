"""Builds the bytes of a ``sensor_msgs/Image`` in any supported encoding from an 8-bit RGB frame, the way
a camera driver would lay them out (independently of bisenetv2_ros.ros.encodings, which reads them).

``encode(rgb, encoding, pad, big_endian, significant_bits)`` -> dict of the Image fields height,
width, encoding, is_bigendian, step, data (a flat uint8 array). Bayer mosaics are sampled from the
RGB frame by hand (R, G, B at the pattern's positions); 16-bit values are ``v x 257`` (full range) or
``round(v x (2**bits - 1) / 255)``; YUV comes from OpenCV's BT.601 RGB->YUV (I420 for nv21/nv24, the
packed 4:2:2 converters for uyvy/yuyv).
"""

from __future__ import annotations

import cv2
import numpy as np

# position (row, column) of R and B in the 2x2 cell; G fills the other two
BAYER_POSITIONS = {"rggb": ((0, 0), (1, 1)), "bggr": ((1, 1), (0, 0)),
                   "gbrg": ((1, 0), (0, 1)), "grbg": ((0, 1), (1, 0))}
COLOUR_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16", "8UC3", "16UC3",
                    *(f"bayer_{p}{b}" for p in BAYER_POSITIONS for b in (8, 16)),
                    "uyvy", "yuv422", "yuyv", "yuv422_yuy2", "nv21", "nv24"]
MONO_ENCODINGS = ["mono8", "mono16", "8UC1", "16UC1"]


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    (r_row, r_col), (b_row, b_col) = BAYER_POSITIONS[pattern]
    mosaic = rgb[..., 1].copy()
    mosaic[r_row::2, r_col::2] = rgb[r_row::2, r_col::2, 0]
    mosaic[b_row::2, b_col::2] = rgb[b_row::2, b_col::2, 2]
    return mosaic


def _i420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    luma = i420[:height * width].reshape(height, width)
    quarter = height * width // 4
    u = i420[height * width:height * width + quarter].reshape(height // 2, width // 2)
    v = i420[height * width + quarter:].reshape(height // 2, width // 2)
    return luma, u, v


def _pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """HxW[xC] array of the encoding's values (uint8, or uint16 for 16-bit) before any padding."""
    base = encoding.rstrip("0123456789") if not encoding.endswith("UC1") and not encoding.endswith("UC3") else encoding
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    if encoding in ("uyvy", "yuv422"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
    if encoding in ("yuyv", "yuv422_yuy2"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2)
    if encoding.startswith("bayer_"):
        return bayer_mosaic(rgb, encoding[6:10])
    return {"rgb": rgb, "bgr": rgb[..., ::-1], "rgba": np.concatenate([rgb, alpha], 2),
            "bgra": np.concatenate([rgb[..., ::-1], alpha], 2), "mono": gray, "8UC1": gray, "16UC1": gray,
            "8UC3": rgb[..., ::-1], "16UC3": rgb[..., ::-1]}[base]


def encode(rgb: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False,
           significant_bits: int = 16) -> dict:
    height, width = rgb.shape[:2]
    if encoding in ("nv21", "nv24"):
        luma, u, v = _i420_planes(rgb)
        if encoding == "nv21":
            chroma = np.stack([v, u], axis=2).reshape(height // 2, width)
        else:  # full-resolution chroma: each 4:2:0 sample repeated over its 2x2 cell
            chroma = np.stack([u, v], axis=2).repeat(2, axis=0).repeat(2, axis=1).reshape(height, 2 * width)
        step = width + pad
        luma_rows = np.full((height, step), 77, np.uint8)
        luma_rows[:, :width] = luma
        chroma_stride = step if encoding == "nv21" else 2 * step
        chroma_rows = np.full((chroma.shape[0], chroma_stride), 77, np.uint8)
        chroma_rows[:, :chroma.shape[1]] = chroma
        data = np.concatenate([luma_rows.reshape(-1), chroma_rows.reshape(-1)])
        return dict(height=height, width=width, encoding=encoding, is_bigendian=0, step=step, data=data)
    values = np.ascontiguousarray(_pixels(rgb, encoding))
    sixteen = encoding.endswith("16") or encoding.startswith("16UC")
    if sixteen:
        wide = values.astype(np.uint32)
        scaled = wide * 257 if significant_bits == 16 else (wide * ((1 << significant_bits) - 1) + 127) // 255
        values = scaled.astype(">u2" if big_endian else "<u2")
    rows = values.view(np.uint8).reshape(height, -1)
    if pad:
        rows = np.concatenate([rows, np.full((height, pad), 77, np.uint8)], axis=1)
    return dict(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian and sixteen),
                step=rows.shape[1], data=rows.reshape(-1).copy())
