"""The package's shared vocabulary and defaults: each one defined here once and imported everywhere."""

from __future__ import annotations

import argparse

# What the node, the CLI, the Segmenter and the benchmarks open when no weights are given (a name of
# weights/known_weights.py). Here, not there, so that the node's --help and parameters need no torch.
DEFAULT_WEIGHTS = "camvid"

# Network input (height, width) when neither the user nor the checkpoint says: half a Cityscapes frame.
DEFAULT_INPUT_SIZE: tuple[int, int] = (512, 1024)

# Files treated as images by folder inputs, datasets and calibration folders.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Largest frame (width x height) any input door accepts: raw and compressed ROS images, image files,
# video frames (node parameter / CLI option max_input_pixels). 4096x4096: above every common camera
# (a 20 MP sensor needs the limit raised), and a decoded frame of 48 MiB at 3 bytes per pixel.
DEFAULT_MAX_INPUT_PIXELS: int = 4096 * 4096
# Largest side in pixels, whatever the pixel limit (OpenCV's resize and colour conversions use int sizes).
MAX_IMAGE_SIDE: int = 32768

# The channel orders a frame can arrive in; the network's own order is stored with its weights.
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")

# ImageNet statistics, which every public BiSeNetV2 checkpoint and our training recipe normalise with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# TensorRT builder workspace limit in GiB (enough for BiSeNetV2 at 1024x2048 with fp16 tactics).
DEFAULT_WORKSPACE_GIB: float = 2.0

# State-dict prefix of the training-only booster (auxiliary) heads; deployment drops these keys.
AUX_HEAD_PREFIX = "aux_heads."


def is_image_file(path) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def strip_aux_heads(state: dict) -> dict:
    """The state dict without the booster heads' keys (they only exist for training)."""
    return {k: v for k, v in state.items() if not k.startswith(AUX_HEAD_PREFIX)}


def parse_size(text: str, max_pixels: int | None = DEFAULT_MAX_INPUT_PIXELS) -> tuple[int, int]:
    """'HEIGHTxWIDTH' (the order of the node's input_height/input_width) -> (height, width).

    Raises ValueError with a message that can be shown as it is. ``max_pixels`` None: the caller
    checks the size against its own limit (the node's max_input_pixels).
    """
    parts = str(text).strip().lower().split("x")
    try:
        height, width = (int(v) for v in parts)
    except ValueError:
        raise ValueError(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    # Checked before anything is allocated: no size flag asks for a frame no input door accepts
    # (`tune --frame-size 8192x8192` grew past 15 GB before).
    if max_pixels is not None and (max(height, width) > MAX_IMAGE_SIDE or height * width > max_pixels):
        raise ValueError(f"a size must be at most {MAX_IMAGE_SIDE} a side and {max_pixels} pixels "
                         f"(4096x4096), got {text!r}")
    return height, width


def size_argument(text: str) -> tuple[int, int]:
    """argparse ``type=`` for every size flag: HEIGHTxWIDTH."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def normalization_scale_shift(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (scale, shift) such that ``pixel * scale + shift == (pixel / 255 - mean) / std``
    for 0..255 pixels: the normalisation as one multiply-add, as inference, evaluation and training apply it."""
    scale = tuple(1.0 / (255.0 * float(s)) for s in std)
    shift = tuple(-float(m) / float(s) for m, s in zip(mean, std))
    return scale, shift
