"""Does a ``sensor_msgs/CameraInfo`` describe the image it pairs with? ROS-free.

sensor_msgs/CameraInfo: ``width`` x ``height`` is the resolution the camera was calibrated at (K and
P refer to it); ``roi`` is a window of that full-resolution, unbinned image (all zeros: the whole
image); ``binning_x`` / ``binning_y`` combine that many pixels into one (0 counts as 1). The image a
camera_info belongs to is therefore ``(roi.width or width) / binning_x`` x ``(roi.height or height) /
binning_y`` pixels. A camera_info with width and height 0 is uncalibrated: it says nothing about size.

The node republishes the input camera_info beside the labels, colour and confidence images (which are
the frame's size) only when it matches the frame; otherwise it warns (throttled), counts it in the
camera's diagnostics and publishes none. The point cloud checks the depth image against its own
camera_info the same way and back-projects with the intrinsics of the image as published
(``image_intrinsics``: roi offset and binning applied to K).
"""

from __future__ import annotations

import math
from typing import Any

from ..conventions import MAX_IMAGE_SIDE
from .encodings import ImageConversionError


class CameraInfoMismatch(ImageConversionError):
    """A camera_info that does not describe the image it pairs with; the message says how."""


def _binning(value: Any) -> int:
    return max(1, int(value or 0))


def described_size(info: Any) -> tuple[int, int] | None:
    """(width, height) of the image ``info`` describes, or None for an uncalibrated (0 x 0) camera_info."""
    width, height = int(info.width), int(info.height)
    if width == 0 and height == 0:
        return None
    roi = getattr(info, "roi", None)
    roi_width = int(getattr(roi, "width", 0) or 0) if roi is not None else 0
    roi_height = int(getattr(roi, "height", 0) or 0) if roi is not None else 0
    full_width, full_height = (roi_width, roi_height) if roi_width and roi_height else (width, height)
    return (full_width // _binning(getattr(info, "binning_x", 0)),
            full_height // _binning(getattr(info, "binning_y", 0)))


def check_pairing(info: Any, width: int, height: int, what: str = "image") -> None:
    """Raises CameraInfoMismatch when ``info`` describes an image other than ``width`` x ``height``."""
    size = described_size(info)
    if size is None or size == (width, height):
        return
    roi, bx, by = getattr(info, "roi", None), _binning(getattr(info, "binning_x", 0)), _binning(getattr(info, "binning_y", 0))
    how = f"{int(info.width)}x{int(info.height)}"
    if roi is not None and int(getattr(roi, "width", 0) or 0) and int(getattr(roi, "height", 0) or 0):
        how += f", roi {int(roi.width)}x{int(roi.height)}"
    if (bx, by) != (1, 1):
        how += f", binning {bx}x{by}"
    raise CameraInfoMismatch(f"camera_info ({how}) describes a {size[0]}x{size[1]} image, but the {what} it pairs "
                             f"with is {width}x{height}")


def image_intrinsics(info: Any) -> tuple[float, float, float, float, int, int]:
    """(fx, fy, cx, cy, width, height) of the image as published: K moved by the roi offset and divided
    by the binning, with the described size (``described_size``; the calibrated size when uncalibrated)."""
    k = [float(v) for v in info.k]
    # NaN or inf in K gave an all-NaN cloud (inf: every point on the optical axis), without a word
    if len(k) != 9 or not all(math.isfinite(v) for v in k) or k[0] <= 0 or k[4] <= 0:
        raise ImageConversionError(f"camera_info has no usable intrinsics (K = {k}); a calibrated camera_info "
                                   "(finite K, focal lengths > 0) is needed for the point cloud")
    bx, by = _binning(getattr(info, "binning_x", 0)), _binning(getattr(info, "binning_y", 0))
    roi = getattr(info, "roi", None)
    x0 = int(getattr(roi, "x_offset", 0) or 0) if roi is not None else 0
    y0 = int(getattr(roi, "y_offset", 0) or 0) if roi is not None else 0
    width, height = described_size(info) or (0, 0)
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageConversionError(f"camera_info declares {width}x{height} pixels, above {MAX_IMAGE_SIDE} a side")
    # pixel centres: a binned pixel covers bx full-resolution pixels, its centre at (bx - 1) / 2
    return (k[0] / bx, k[4] / by, (k[2] - x0 - (bx - 1) / 2) / bx, (k[5] - y0 - (by - 1) / 2) / by, width, height)
