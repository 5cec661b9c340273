"""ROS message <-> numpy conversions shared by the node and the CLI (rosbag input and output).

ROS-free: works on any object with the ROS message fields, i.e. rclpy messages (``data`` is an
``array.array('B')``) and rosbags message dataclasses (``data`` is a numpy uint8 array). Output
messages are built from a message *type* passed by the caller, so the same code fills both.

Hot-path rules (measured on a 2-core CPU at 1920x1080, see the ROS facts file):
- reading ``msg.data`` is a zero-copy ``np.frombuffer`` view; padded rows give a strided view;
- rclpy ``data`` fields are filled with ``ndarray.tobytes()`` (assigning an ndarray costs ~570 ms);
- colorizing is one table lookup (``classes.colorize``: ``cv2.applyColorMap`` with our palette, ~2.4 ms).

Limits, checked from the declared sizes before anything is allocated (a message's fields are untrusted):
width and height at most ``MAX_IMAGE_SIDE``, width x height at most ``max_pixels`` (the node's
``max_input_pixels``), ``step`` at least a row and at most ``MAX_STEP``, ``data`` exactly ``step x height``
bytes (the last row's padding may be left out; nv21/nv24 add their chroma plane, ``encodings``); a
compressed frame's size is read from its header (``image_headers``) before it is decoded. The encodings
and their conversions (16-bit, Bayer, nv21/nv24) are in ``encodings``. Memory per frame, beyond the
message itself: raw 8-bit rgb/bgr(a) frames none (views); mono, YUV, Bayer and 16-bit frames one
3-byte-per-pixel frame plus one copy of the input (contiguous or 8-bit): at most 5 bytes per pixel,
i.e. 5/3 of the decoded frame (H x W x 3 bytes);
compressed frames the decoded frame plus the decoder's workspace (test_message_limits checks both).
"""

from __future__ import annotations

import array
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..classes import IGNORE_INDEX, ClassSet
from ..conventions import DEFAULT_MAX_INPUT_PIXELS, MAX_IMAGE_SIDE
from ..image_files import frame_size_problem
from ..image_headers import declared_size
from . import encodings
from .encodings import (ENCODINGS, SUPPORTED_ENCODINGS, WIDEST_PIXEL_BYTES, EncodingInfo,  # noqa: F401 (re-exported)
                        ImageConversionError, encoding_info)


MAX_STEP = MAX_IMAGE_SIDE * WIDEST_PIXEL_BYTES  # the longest row: the widest image in the widest encoding


def _byte_view(data: Any) -> np.ndarray:
    """``msg.data`` (array.array, bytes, memoryview or numpy uint8) as a flat uint8 view, no copy."""
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return data
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError) as error:  # not a contiguous byte buffer
        raise ImageConversionError(f"image data is not a byte buffer ({type(data).__name__}: {error})") from None


def _declared_int(msg: Any, name: str) -> int:
    value = getattr(msg, name, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageConversionError(f"image field {name} must be an integer, got {type(value).__name__}")
    return int(value)


def check_frame_size(width: int, height: int, max_pixels: int, what: str = "image",
                     limit_name: str = "max_input_pixels") -> None:
    """Refuses an empty frame, a side above MAX_IMAGE_SIDE or more than ``max_pixels`` pixels
    (``limit_name``: what the user raises, the node's parameter or the CLI's option)."""
    problem = frame_size_problem(width, height, max_pixels, what, limit_name)
    if problem:
        raise ImageConversionError(problem)


def _rows(data: np.ndarray, offset: int, rows: int, stride: int, row_bytes: int) -> np.ndarray:
    """``rows`` x ``row_bytes`` view of ``data`` from ``offset``, rows ``stride`` bytes apart (sizes checked)."""
    if rows * stride <= data.size - offset:
        return data[offset:offset + rows * stride].reshape(rows, stride)[:, :row_bytes]
    # the last row's padding is missing: a strided view that stays inside the data
    return np.lib.stride_tricks.as_strided(data[offset:], shape=(rows, row_bytes), strides=(stride, 1), writeable=False)


def image_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                   limit_name: str = "max_input_pixels") -> tuple[Any, EncodingInfo]:
    """``sensor_msgs/Image`` -> (pixel array, encoding) without copying the data.

    The array is HxWxC in the message's own layout (C = 3 rgb/bgr, 4 rgba/bgra, 1 mono and Bayer,
    2 for the packed YUV 4:2:2 encodings), uint8, or uint16 in the message's byte order
    (``is_bigendian``) for 16-bit encodings; for nv21 / nv24 a (luma HxW, chroma) pair of views
    (``encodings``). Rows padded beyond ``width * bytes_per_pixel`` give strided views. Every
    declared size is checked against the limits and the data before anything is allocated.
    """
    info = encoding_info(msg.encoding)
    height, width, step = (_declared_int(msg, name) for name in ("height", "width", "step"))
    check_frame_size(width, height, max_pixels, limit_name=limit_name)
    row_bytes = width * info.bytes_per_pixel
    if info.layout in ("uyvy", "yuyv") and width % 2:
        raise ImageConversionError(f"{info.name} images need an even width, got {width}")
    if info.planar:
        encodings.check_planar_size(info, width, height)
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width {width} x {info.bytes_per_pixel} bytes per pixel ({info.name})")
    if step > MAX_STEP:
        raise ImageConversionError(f"step {step} refused: above {MAX_STEP} bytes per row "
                                   f"(width {width} x {info.bytes_per_pixel} bytes per pixel needs {row_bytes})")
    if info.bits == 16 and step % 2:
        raise ImageConversionError(f"step {step} of a 16-bit {info.name} image is odd: rows must start on whole values")
    data = _byte_view(msg.data)
    chroma_rows, chroma_stride, chroma_bytes = (encodings.chroma_plane_shape(info, width, height, step)
                                                if info.planar else (0, 0, 0))
    luma_bytes = step * height
    if info.planar:
        needed, most = luma_bytes + chroma_stride * (chroma_rows - 1) + chroma_bytes, luma_bytes + chroma_stride * chroma_rows
    else:  # the last row's padding may be left out
        needed, most = step * (height - 1) + row_bytes, luma_bytes
    if data.size < needed:
        raise ImageConversionError(
            f"truncated image data: {data.size} bytes, {needed} needed for {width}x{height} "
            f"{info.name} with step {step}")
    if data.size > most:
        layout = (f"the {most} bytes of {width}x{height} {info.name} with step {step}" if info.planar
                  else f"step {step} x height {height} = {most} bytes")
        raise ImageConversionError(f"image data of {data.size} bytes is more than {layout}")
    if info.planar:
        chroma = _rows(data, luma_bytes, chroma_rows, chroma_stride, chroma_bytes)
        chroma_width = width // 2 if info.layout == "nv21" else width
        return (_rows(data, 0, height, step, row_bytes), chroma.reshape(chroma_rows, chroma_width, 2)), info
    rows = _rows(data, 0, height, step, row_bytes)
    if info.bits == 16:
        order = ">" if getattr(msg, "is_bigendian", 0) else "<"
        rows = rows.view(np.dtype(order + "u2"))  # a view (unaligned at an odd address): the last axis is contiguous
        return rows.reshape(height, width, info.channels), info
    return rows.reshape(height, width, info.bytes_per_pixel), info


def array_to_color(pixels: Any, info: EncodingInfo, significant_bits: int = 16) -> tuple[np.ndarray, str]:
    """Pixel array from :func:`image_to_array` -> (HxWx3 uint8 frame, channel order 'rgb'|'bgr').

    8-bit rgb8 / bgr8 stay views; rgba/bgra drop alpha as a view; 16-bit data is scaled from its
    ``significant_bits``; mono, Bayer and YUV are converted (one copy)."""
    layout = info.layout
    if info.planar:
        return encodings.planar_to_rgb(*pixels, layout), "rgb"
    if info.bits == 16:
        pixels = encodings.to_8bit(pixels, significant_bits)
    if layout in ("rgb", "bgr"):
        return pixels, layout
    if layout in ("rgba", "bgra"):
        return pixels[..., :3], layout[:3]
    if layout == "mono":
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., 0]), cv2.COLOR_GRAY2RGB), "rgb"
    if layout.startswith("bayer"):
        return encodings.bayer_to_rgb(pixels[..., 0], layout), "rgb"
    return encodings.packed_yuv_to_rgb(pixels, layout), "rgb"


def image_to_frame(msg: Any, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                   limit_name: str = "max_input_pixels", significant_bits: int = 16) -> tuple[np.ndarray, str]:
    """``sensor_msgs/Image`` -> (HxWx3 uint8 frame, 'rgb' | 'bgr'); raises ImageConversionError.
    ``significant_bits``: the bits of 16-bit data that carry the value (12 for a 12-bit camera)."""
    pixels, info = image_to_array(msg, max_pixels, limit_name)
    return array_to_color(pixels, info, significant_bits)


def to_rgb(frame: np.ndarray, channel_order: str) -> np.ndarray:
    """HxWx3 frame in ``channel_order`` -> RGB (a copy only for bgr)."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if channel_order == "bgr" else frame


def compressed_to_frame(msg: Any, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                        limit_name: str = "max_input_pixels") -> tuple[np.ndarray, str]:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> (HxWx3 uint8 BGR frame, 'bgr').

    The size its header declares is checked against ``max_pixels`` before decoding."""
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressed depth images are not supported (format {msg.format!r})")
    data = _byte_view(msg.data)
    if data.size == 0:
        raise ImageConversionError(f"empty compressed image (format {msg.format!r})")
    size = declared_size(data)
    if size is None:
        raise ImageConversionError(f"cannot decode compressed image of {data.size} bytes (format {msg.format!r}): "
                                   "no JPEG or PNG header; JPEG and PNG are supported")
    check_frame_size(*size, max_pixels, what=f"compressed image ({msg.format})", limit_name=limit_name)
    try:
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV mostly returns None, but some damaged streams raise
        frame = None
    if frame is None or frame.size == 0:
        raise ImageConversionError(
            f"cannot decode compressed image of {data.size} bytes (format {msg.format!r}); JPEG and PNG are supported")
    return frame, "bgr"


# --------------------------------------------------------------------------------------------
# Outputs


def _is_rosbags_type(msg_type: Any) -> bool:
    return hasattr(msg_type, "__msgtype__")  # rosbags dataclasses; rclpy messages have no such attribute


def _uint8_data(msg_type: Any, contiguous: np.ndarray) -> Any:
    # rosbags wants a numpy array (a view is fine); rclpy must get bytes (an ndarray costs ~570 ms).
    return contiguous.reshape(-1) if _is_rosbags_type(msg_type) else contiguous.tobytes()


def array_to_image(msg_type: Any, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """HxW or HxWxC uint8 array -> an Image of ``msg_type`` (rclpy or rosbags) with ``header``."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxW or HxWxC array, got {pixels.dtype} {pixels.shape}")
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return msg_type(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                    step=width * channels, data=_uint8_data(msg_type, pixels))


def labels_to_image(msg_type: Any, labels: np.ndarray, header: Any) -> Any:
    """HxW uint8 class ids (255 = unlabelled) -> mono8 Image."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be HxW, got shape {labels.shape}")
    return array_to_image(msg_type, header, labels, "mono8")


# compressed_image_transport's `format` for PNG: "<encoding>; png compressed " plus, for colour images,
# the channel order of the PNG data (OpenCV writes BGR).
PNG_FORMAT = "{encoding}; png compressed {stored}"
PNG_LEVEL = 1  # zlib level: label maps are flat regions, so level 1 is already small and fast


def array_to_png(msg_type: Any, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """HxW mono8 or HxWx3 rgb8 uint8 array -> a lossless PNG ``sensor_msgs/CompressedImage``
    in compressed_image_transport's format (so `image_transport republish` and rqt decode it)."""
    if encoding not in ("mono8", "rgb8") or pixels.dtype != np.uint8 or pixels.ndim != (2 if encoding == "mono8" else 3):
        raise ValueError(f"PNG outputs are mono8 HxW or rgb8 HxWx3 uint8, got {encoding} {pixels.dtype} {pixels.shape}")
    color = encoding == "rgb8"
    stored = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if color else np.ascontiguousarray(pixels)
    ok, data = cv2.imencode(".png", stored, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ValueError(f"PNG encoding of a {pixels.shape} {encoding} image failed")
    return msg_type(header=header, format=PNG_FORMAT.format(encoding=encoding, stored="bgr8" if color else ""),
                    data=_uint8_data(msg_type, data))


def png_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """A PNG ``sensor_msgs/CompressedImage`` of ``array_to_png`` -> the exact array: HxW for mono8
    (e.g. class ids), HxWx3 RGB for rgb8; raises ImageConversionError for anything else. The size
    the PNG header declares is checked against ``max_pixels`` before decoding."""
    encoding = str(msg.format).split(";")[0].strip()
    if "png" not in str(msg.format).lower() or encoding not in ("mono8", "rgb8"):
        raise ImageConversionError(f"expected a PNG mono8 or rgb8 CompressedImage, got format {msg.format!r}")
    data = _byte_view(msg.data)
    size = declared_size(data) if data.size else None
    if size is None:
        raise ImageConversionError(f"a {msg.format!r} CompressedImage of {data.size} bytes has no PNG header")
    check_frame_size(*size, max_pixels, what=f"compressed image ({msg.format})")
    try:
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None:
        raise ImageConversionError(f"cannot decode the PNG data of a {msg.format!r} CompressedImage")
    if encoding == "rgb8":
        if pixels.ndim != 3:
            raise ImageConversionError(f"format {msg.format!r} but the PNG holds one channel")
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.ndim != 2:
        raise ImageConversionError(f"format {msg.format!r} but the PNG holds {pixels.shape[2]} channels")
    return pixels


def blend(frame: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * frame + alpha * colors``, rounded, uint8 (both HxWx3 in the same channel order)."""
    frame = np.ascontiguousarray(frame)
    return cv2.addWeighted(frame, 1.0 - float(alpha), colors, float(alpha), 0.0)


def class_fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of pixels per class id 0..num_classes-1 (float32; unlabelled pixels count in the total)."""
    labels = np.ascontiguousarray(labels)
    if labels.size == 0:
        return np.zeros(num_classes, np.float32)
    histogram = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()
    return (histogram[:num_classes] / labels.size).astype(np.float32)


def class_confidence(labels: np.ndarray, confidence: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean confidence (0-255) of the pixels of each class id 0..num_classes-1 (float32; NaN for a
    class with no pixel)."""
    labels, confidence = np.ascontiguousarray(labels).ravel(), np.ascontiguousarray(confidence).ravel()
    counts = np.bincount(labels, minlength=256)[:num_classes]
    sums = np.bincount(labels, weights=confidence, minlength=256)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(np.float32)


def _has_field(msg_type: Any, name: str) -> bool:
    """Whether a message type (rclpy class or rosbags dataclass) has the field ``name``: code generated
    from an older msg/SegmentationInfo.msg (before class_confidence) still gets the older message."""
    return name in getattr(msg_type, "__dataclass_fields__", ()) or f"_{name}" in getattr(msg_type, "__slots__", ())


def _float32_sequence(msg_type: Any, values: Sequence[float] | np.ndarray) -> Any:
    values = np.asarray(values, np.float32)
    return values if _is_rosbags_type(msg_type) else array.array("f", values.tobytes())


def info_message(msg_type: Any, header: Any, *, model: str, backend: str, device: str,
                 inference_ms: float, latency_ms: float, frames_received: int, frames_processed: int,
                 frames_dropped: int, fractions: np.ndarray | Sequence[float], camera: str = "",
                 batch_size: int = 1, frames_failed: int = 0,
                 confidences: np.ndarray | Sequence[float] = (), ood: Mapping[str, Any] | None = None) -> Any:
    """A ``bisenetv2_ros/msg/SegmentationInfo``; ``confidences``: per-class mean confidence or empty;
    ``ood``: {"ood_score", "ood", "ood_calibrated"} (``ros/ood_monitor.py``), None: NaN score."""
    ood = ood or {"ood_score": float("nan"), "ood": False, "ood_calibrated": False}
    extra = {key: value for key, value in ood.items() if _has_field(msg_type, key)}
    if _has_field(msg_type, "class_confidence"):
        extra["class_confidence"] = _float32_sequence(msg_type, confidences)
    return msg_type(header=header, model=str(model), backend=str(backend), device=str(device), camera=str(camera),
                    inference_ms=float(inference_ms), batch_size=int(batch_size), latency_ms=float(latency_ms),
                    frames_received=int(frames_received), frames_processed=int(frames_processed),
                    frames_dropped=int(frames_dropped), frames_failed=int(frames_failed),
                    class_fractions=_float32_sequence(msg_type, fractions), **extra)


UNLABELLED_NAME = "unlabelled"


def label_info_message(label_info_type: Any, vision_class_type: Any, classes: ClassSet, header: Any,
                       threshold: float = 0.0) -> Any:
    """``vision_msgs/LabelInfo``: class id -> name, plus 255 = unlabelled (the labels image's void id)."""
    class_map = [vision_class_type(class_id=i, class_name=name) for i, name in enumerate(classes.names)]
    class_map.append(vision_class_type(class_id=IGNORE_INDEX, class_name=UNLABELLED_NAME))
    return label_info_type(header=header, class_map=class_map, threshold=float(threshold))


def with_header(msg: Any, header: Any) -> Any:
    """Sets ``msg.header`` (e.g. the stored CameraInfo, republished with a frame's header)."""
    msg.header = header
    return msg


# --------------------------------------------------------------------------------------------
# rosbags support: our message and vision_msgs (absent from rosbags' stores) from their definitions

VISION_CLASS_MSG = "uint16 class_id\nstring class_name\n"
LABEL_INFO_MSG = "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n"


# The fields of msg/SegmentationInfo.msg (test_messages checks they match), so pip installs without the
# ROS share folder can still write it to bags.
SEGMENTATION_INFO_MSG = """std_msgs/Header header
string model
string backend
string device
string camera
float32 inference_ms
uint32 batch_size
float32 latency_ms
uint64 frames_received
uint64 frames_processed
uint64 frames_dropped
uint64 frames_failed
float32[] class_fractions
float32[] class_confidence
float32 ood_score
bool ood
bool ood_calibrated
"""


def register_rosbags_types(typestore: Any) -> Any:
    """Adds bisenetv2_ros/msg/SegmentationInfo and vision_msgs LabelInfo/VisionClass to a rosbags
    typestore (when missing) and returns it."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    if "vision_msgs/msg/VisionClass" not in typestore.types:
        types.update(get_types_from_msg(VISION_CLASS_MSG, "vision_msgs/msg/VisionClass"))
        types.update(get_types_from_msg(LABEL_INFO_MSG, "vision_msgs/msg/LabelInfo"))
    if "bisenetv2_ros/msg/SegmentationInfo" not in typestore.types:
        types.update(get_types_from_msg(SEGMENTATION_INFO_MSG, "bisenetv2_ros/msg/SegmentationInfo"))
    if types:
        typestore.register(types)
    return typestore
