"""Registered depth + CameraInfo -> an organised PointCloud2 aligned pixel for pixel with the labels.

ROS-free (rclpy or rosbags message types are passed in, as in ``messages``). The cloud has the labels'
height and width, one point per pixel in row-major order, fields x, y, z (float32, metres, the camera's
optical frame: x right, y down, z forward), label and confidence (uint8), and the labels' header, so a
consumer pairs it with the mask by exact stamp (nav2's semantic_segmentation_layer reads x, y, z and
skips non-finite points). Pixels without a valid depth (0 mm, NaN, inf, <= 0 m) give NaN points.

The depth must be registered to the colour camera (same viewpoint; e.g. a driver's aligned depth). At
another resolution it is resized by nearest neighbour (never blending depths across edges) and the
intrinsics are scaled alike.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..conventions import DEFAULT_MAX_INPUT_PIXELS, MAX_IMAGE_SIDE
from . import camera_info
from .messages import ImageConversionError, _byte_view, _uint8_data

DEPTH_ENCODINGS = {"16UC1": (np.dtype(np.uint16), 0.001), "mono16": (np.dtype(np.uint16), 0.001),
                   "32FC1": (np.dtype(np.float32), 1.0)}
POINT_STEP = 16  # x, y, z float32 + label, confidence uint8 + 2 bytes padding (16-byte aligned points)
FIELDS = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 2), ("confidence", 13, 2))  # PointField datatypes
POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "label", "confidence"],
                        "formats": ["<f4", "<f4", "<f4", "u1", "u1"], "offsets": [0, 4, 8, 12, 13],
                        "itemsize": POINT_STEP})


def depth_to_metres(msg: Any, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """A depth ``sensor_msgs/Image`` (16UC1 / mono16 in millimetres, 32FC1 in metres) -> HxW float32
    metres, NaN where there is no measurement; ImageConversionError naming the problem otherwise.
    The size is checked against ``max_pixels`` (the node's max_input_pixels) before any allocation."""
    layout = DEPTH_ENCODINGS.get(msg.encoding)
    if layout is None:
        raise ImageConversionError(f"unsupported depth encoding {msg.encoding!r}; supported: "
                                   f"{', '.join(DEPTH_ENCODINGS)} (a registered depth image)")
    dtype, scale = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if max(height, width) > MAX_IMAGE_SIDE or height * width > max_pixels:
        raise ImageConversionError(f"depth image of {width}x{height} pixels refused: above max_input_pixels "
                                   f"{max_pixels} or {MAX_IMAGE_SIDE} a side")
    data = _byte_view(msg.data)
    if height < 1 or width < 1 or step < width * dtype.itemsize or data.size < step * height:
        raise ImageConversionError(f"depth image {width}x{height} {msg.encoding}: step {step} and {data.size} "
                                   f"bytes do not hold {width * dtype.itemsize} bytes per row")
    rows = data[:step * height].reshape(height, step)[:, :width * dtype.itemsize]
    values = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    metres = values.astype(np.float32) * np.float32(scale)
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def intrinsics(info: Any) -> tuple[float, float, float, float, int, int]:
    """(fx, fy, cx, cy, width, height) of the depth image a CameraInfo describes (its roi and binning
    applied, ``camera_info.image_intrinsics``); a clear error when K is unset."""
    try:
        return camera_info.image_intrinsics(info)
    except ImageConversionError as error:
        raise ImageConversionError(f"depth {error}") from None


def aligned_points(depth_m: np.ndarray, info: Any, labels: np.ndarray,
                   confidence: np.ndarray | None = None) -> np.ndarray:
    """HxW structured array (POINT_DTYPE) of the labels' size: back-projected depth with each pixel's
    label and confidence (0 without one)."""
    fx, fy, cx, cy, info_width, info_height = intrinsics(info)
    height, width = labels.shape
    depth_height, depth_width = depth_m.shape
    camera_info.check_pairing(info, depth_width, depth_height, "depth image")  # else K is for another image
    # K belongs to the depth image as calibrated; camera_info's size says for which resolution.
    base_width, base_height = (info_width, info_height) if info_width and info_height else (depth_width, depth_height)
    if (depth_height, depth_width) != (height, width):
        depth_m = cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)
    sx, sy = width / base_width, height / base_height
    fx, cx, fy, cy = fx * sx, (cx + 0.5) * sx - 0.5, fy * sy, (cy + 0.5) * sy - 0.5
    points = np.empty((height, width), POINT_DTYPE)
    u = (np.arange(width, dtype=np.float32) - np.float32(cx)) / np.float32(fx)
    v = (np.arange(height, dtype=np.float32) - np.float32(cy)) / np.float32(fy)
    points["z"] = depth_m
    points["x"] = depth_m * u[None, :]
    points["y"] = depth_m * v[:, None]
    points["label"] = labels
    points["confidence"] = 0 if confidence is None else confidence
    return points


def cloud_message(cloud_type: Any, field_type: Any, header: Any, points: np.ndarray) -> Any:
    """An organised ``sensor_msgs/PointCloud2`` of ``points`` (from ``aligned_points``) with ``header``."""
    height, width = points.shape
    fields = [field_type(name=name, offset=offset, datatype=datatype, count=1) for name, offset, datatype in FIELDS]
    raw = np.ascontiguousarray(points).view(np.uint8).reshape(-1)
    return cloud_type(header=header, height=height, width=width, fields=fields, is_bigendian=False,
                      point_step=POINT_STEP, row_step=POINT_STEP * width, data=_uint8_data(cloud_type, raw),
                      is_dense=False)


def cloud_to_points(msg: Any) -> np.ndarray:
    """A PointCloud2 of ``cloud_message`` -> HxW structured array (for tests and bag readers)."""
    return np.frombuffer(bytes(_byte_view(msg.data)), POINT_DTYPE).reshape(int(msg.height), int(msg.width))
