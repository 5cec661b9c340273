"""Reading an image file, every time the same way: the size its header declares is checked before a
pixel is decoded, and every failure is one line naming the file and the reason.

The one door for image files in the package and training/ (``bisenetv2 segment``'s inputs, int8 and
out-of-distribution calibration frames, training and evaluation images and labels, benchmarks):
``test_image_files`` fails when a module decodes files with OpenCV itself. ROS messages have their own
door (``ros/messages.py``) with the same size rule (``frame_size_problem``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .conventions import DEFAULT_MAX_INPUT_PIXELS, MAX_IMAGE_SIDE
from .fileio import special_file_problem
from .image_headers import HEADER_FORMATS, declared_size


class ImageFileError(ValueError):
    """An image file that cannot be read as one (missing, special, too large, not an image)."""


def frame_size_problem(width: int, height: int, max_pixels: int, what: str = "image",
                       limit_name: str = "max_input_pixels") -> str | None:
    """Why a frame of ``width`` x ``height`` is refused (empty, a side above MAX_IMAGE_SIDE, more than
    ``max_pixels`` pixels; ``limit_name``: what the user raises), or None."""
    if width <= 0 or height <= 0:
        return f"empty {what} ({width}x{height} pixels)"
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        return f"{what} of {width}x{height} pixels refused: a side above {MAX_IMAGE_SIDE} pixels"
    if width * height > max_pixels:
        return (f"{what} of {width}x{height} pixels ({width * height / 1e6:.1f} MP) refused: above {limit_name} "
                f"{max_pixels} ({max_pixels / 1e6:.1f} MP); raise {limit_name} to accept such frames")
    return None


def read_image_file(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                    what: str = "image", limit_name: str = "max_input_pixels") -> np.ndarray:
    """The decoded image (``flags`` as ``cv2.imdecode``'s: colour gives HxWx3 uint8 BGR) or ImageFileError."""
    special = special_file_problem(path, what)
    if special:
        raise ImageFileError(special)
    try:
        data = np.fromfile(path, np.uint8)
    except (OSError, ValueError) as error:
        raise ImageFileError(f"cannot read {what} {path}: {getattr(error, 'strerror', None) or error}") from None
    size = declared_size(data)
    if size is None:
        raise ImageFileError(f"cannot read {what} {path}: not an image OpenCV can decode ({HEADER_FORMATS}), "
                             f"or cut short")
    problem = frame_size_problem(*size, max_pixels, what=f"{what} {path}", limit_name=limit_name)
    if problem:
        raise ImageFileError(problem)
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error:
        image = None
    if image is None:
        raise ImageFileError(f"cannot read {what} {path}: not an image OpenCV can decode, or damaged")
    return image
