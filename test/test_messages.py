"""ros/messages.py with real ROS 2 message definitions (rosbags typestores), no ROS install needed."""

from __future__ import annotations

import array
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from bisenetv2_ros.classes import CAMVID, colorize
from bisenetv2_ros.ros import messages

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")

STORES = [rosbags_typesys.Stores.ROS2_HUMBLE, rosbags_typesys.Stores.ROS2_JAZZY]
MSG_FILE = Path(__file__).resolve().parents[1] / "msg" / "SegmentationInfo.msg"


@pytest.fixture(scope="module", params=STORES, ids=["humble", "jazzy"])
def types(request):
    store = messages.register_rosbags_types(rosbags_typesys.get_typestore(request.param))
    return store.types


def make_header(types, sec=12, nanosec=345, frame_id="camera_optical"):
    Time = types["builtin_interfaces/msg/Time"]
    return types["std_msgs/msg/Header"](stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def make_image(types, pixels: np.ndarray, encoding: str, pad: int = 0, is_bigendian: int = 0, data=None):
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    if pad:
        row = np.concatenate([row, np.full((height, pad), 77, np.uint8)], axis=1)
    return types["sensor_msgs/msg/Image"](
        header=make_header(types), height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
        step=row.shape[1], data=row.reshape(-1).copy() if data is None else data)


def reference_rgb(height=6, width=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_encodings_give_exact_rgb(types, encoding, pad):
    rgb = reference_rgb()
    layout = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}.get(encoding)
    if layout is None:
        alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
        layout = np.concatenate([rgb if encoding == "rgba8" else rgb[..., ::-1], alpha], axis=2)
    msg = make_image(types, np.ascontiguousarray(layout), encoding, pad=pad)
    frame, order = messages.image_to_frame(msg)
    assert order == encoding[:3]
    assert np.array_equal(messages.to_rgb(frame, order), rgb)
    assert np.shares_memory(frame, msg.data), "rgb/bgr/rgba/bgra frames must be views of msg.data"


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(types, encoding):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    frame, order = messages.image_to_frame(make_image(types, gray, encoding, pad=3))
    assert order == "rgb" and frame.shape == (6, 8, 3)
    for channel in range(3):
        assert np.array_equal(frame[..., channel], gray)


def test_8uc3_is_opencv_bgr(types):
    rgb = reference_rgb()
    frame, order = messages.image_to_frame(make_image(types, np.ascontiguousarray(rgb[..., ::-1]), "8UC3", pad=2))
    assert order == "bgr"
    assert np.array_equal(messages.to_rgb(frame, order), rgb)


@pytest.mark.parametrize("encoding,code", [
    ("uyvy", cv2.COLOR_YUV2RGB_UYVY), ("yuv422", cv2.COLOR_YUV2RGB_UYVY),
    ("yuyv", cv2.COLOR_YUV2RGB_YUY2), ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2)])
@pytest.mark.parametrize("pad", [0, 4])
def test_yuv422_encodings_match_opencv(types, encoding, code, pad):
    packed = np.random.default_rng(1).integers(0, 256, (6, 8, 2), dtype=np.uint8)
    frame, order = messages.image_to_frame(make_image(types, packed, encoding, pad=pad))
    assert order == "rgb"
    assert np.array_equal(frame, cv2.cvtColor(packed, code))


def test_yuv_byte_orders_differ_as_documented(types):
    # One pixel pair, Y0=Y1=128: uyvy reads U first, yuyv reads Y first; swapping them must differ.
    packed = np.array([[[90, 128], [200, 128]]], np.uint8)  # uyvy: U=90 Y0=128 V=200 Y1=128
    uyvy, _ = messages.image_to_frame(make_image(types, packed, "uyvy"))
    yuyv, _ = messages.image_to_frame(make_image(types, packed[..., ::-1].copy(), "yuyv"))
    assert np.array_equal(uyvy, yuyv)


def test_padded_rows_are_a_strided_view(types):
    rgb = reference_rgb(4, 5)
    msg = make_image(types, rgb, "rgb8", pad=7)
    pixels, info = messages.image_to_array(msg)
    assert info.name == "rgb8" and pixels.shape == (4, 5, 3)
    assert pixels.strides[0] == 5 * 3 + 7
    assert np.shares_memory(pixels, msg.data)
    assert np.array_equal(pixels, rgb)


def test_rclpy_style_array_data_is_read_without_copy(types):
    rgb = reference_rgb()
    data = array.array("B", rgb.tobytes())  # what rclpy messages hold
    msg = SimpleNamespace(header=None, height=6, width=8, encoding="rgb8", is_bigendian=0, step=24, data=data)
    frame, _ = messages.image_to_frame(msg)
    assert np.array_equal(frame, rgb)
    data[0] = (int(data[0]) + 1) % 256
    assert frame[0, 0, 0] == data[0], "the frame must be a view of the array.array"


@pytest.mark.parametrize("is_bigendian", [0, 1])
def test_big_endian_flag_is_irrelevant_for_8_bit(types, is_bigendian):
    rgb = reference_rgb()
    frame, _ = messages.image_to_frame(make_image(types, rgb, "rgb8", is_bigendian=is_bigendian))
    assert np.array_equal(frame, rgb)


def test_truncated_data_is_a_specific_error(types):
    rgb = reference_rgb()
    msg = make_image(types, rgb, "rgb8", data=rgb.reshape(-1)[:-10].copy())
    with pytest.raises(messages.ImageConversionError, match=r"truncated image data: 134 bytes, 144 needed"):
        messages.image_to_frame(msg)


def test_missing_padding_of_last_row_is_accepted(types):
    rgb = reference_rgb(3, 4)
    full = make_image(types, rgb, "rgb8", pad=4)
    short = make_image(types, rgb, "rgb8", pad=4, data=full.data[:-4].copy())
    frame, _ = messages.image_to_frame(short)
    assert np.array_equal(frame, rgb)


@pytest.mark.parametrize("height,width", [(0, 8), (6, 0), (0, 0)])
def test_zero_size_is_a_specific_error(types, height, width):
    Image = types["sensor_msgs/msg/Image"]
    msg = Image(header=make_header(types), height=height, width=width, encoding="rgb8", is_bigendian=0,
                step=width * 3, data=np.zeros(0, np.uint8))
    with pytest.raises(messages.ImageConversionError, match=rf"empty image \({width}x{height} pixels\)"):
        messages.image_to_frame(msg)


@pytest.mark.parametrize("encoding", ["32FC1", "8UC4", "bayer_rggb12", "nv12", ""])
def test_unsupported_encoding_is_named(types, encoding):
    msg = make_image(types, np.zeros((2, 2, 1), np.uint8), encoding)
    with pytest.raises(messages.ImageConversionError, match=rf"unsupported image encoding '{encoding}'; supported: rgb8"):
        messages.image_to_frame(msg)


def test_step_smaller_than_row_is_an_error(types):
    msg = make_image(types, reference_rgb(), "rgb8")
    msg.step = 20
    with pytest.raises(messages.ImageConversionError, match="step 20 is smaller than width 8 x 3"):
        messages.image_to_frame(msg)


def test_odd_width_yuv_is_an_error(types):
    msg = make_image(types, np.zeros((2, 3, 2), np.uint8), "uyvy")
    with pytest.raises(messages.ImageConversionError, match="need an even width, got 3"):
        messages.image_to_frame(msg)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode(types, extension):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 10)
    ok, encoded = cv2.imencode(extension, rgb[..., ::-1])
    assert ok
    msg = types["sensor_msgs/msg/CompressedImage"](header=make_header(types), format=extension[1:],
                                                   data=encoded.reshape(-1))
    frame, order = messages.compressed_to_frame(msg)
    assert order == "bgr" and frame.shape == (16, 24, 3)
    error = np.abs(messages.to_rgb(frame, order).astype(int) - rgb)
    if extension == ".png":
        assert error.max() == 0
    else:  # lossy, and chroma subsampling blurs the colour edge: compare away from it
        assert error[:, :8].max() <= 8 and error[:, 16:].max() <= 8


def test_compressed_garbage_and_empty_are_specific_errors(types):
    CompressedImage = types["sensor_msgs/msg/CompressedImage"]
    with pytest.raises(messages.ImageConversionError, match="cannot decode compressed image of 4 bytes"):
        messages.compressed_to_frame(CompressedImage(make_header(types), "jpeg", np.array([1, 2, 3, 4], np.uint8)))
    with pytest.raises(messages.ImageConversionError, match="empty compressed image"):
        messages.compressed_to_frame(CompressedImage(make_header(types), "jpeg", np.zeros(0, np.uint8)))
    with pytest.raises(messages.ImageConversionError, match="compressed depth"):
        messages.compressed_to_frame(CompressedImage(make_header(types), "16UC1; compressedDepth", np.ones(9, np.uint8)))


def test_labels_message_keeps_header_and_serializes(types, request):
    labels = np.array([[0, 1, 2], [255, 10, 3]], np.uint8)
    header = make_header(types, sec=99, nanosec=7, frame_id="cam")
    msg = messages.labels_to_image(types["sensor_msgs/msg/Image"], labels, header)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (2, 3, "mono8", 3, 0)
    assert msg.header.stamp.sec == 99 and msg.header.stamp.nanosec == 7 and msg.header.frame_id == "cam"
    assert np.array_equal(np.asarray(msg.data).reshape(2, 3), labels)
    store = rosbags_typesys.get_typestore(request.node.callspec.params["types"])
    roundtrip = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    assert np.array_equal(roundtrip.data, labels.reshape(-1))


def test_rclpy_style_types_get_bytes_not_arrays():
    labels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    msg = messages.labels_to_image(SimpleNamespace, labels, header="h")
    assert isinstance(msg.data, bytes) and msg.data == labels.tobytes()


def test_colorize_matches_palette_indexing():
    table = CAMVID.lookup_table()
    labels = np.random.default_rng(2).integers(0, 11, (37, 53)).astype(np.uint8)
    labels[0, :5] = 255
    colors = colorize(labels[:, 3:], table)  # non-contiguous input
    assert np.array_equal(colors, table[labels[:, 3:]])
    assert np.array_equal(colors[0, 0], [0, 0, 0]) and np.array_equal(colors[1, 0], table[labels[1, 3]])


def test_color_and_overlay_messages(types):
    Image = types["sensor_msgs/msg/Image"]
    labels = np.array([[0, 3], [8, 255]], np.uint8)
    colors = colorize(labels, CAMVID.lookup_table())
    header = make_header(types)
    color_msg = messages.array_to_image(Image, header, colors, "rgb8")
    assert (color_msg.encoding, color_msg.step, color_msg.height, color_msg.width) == ("rgb8", 6, 2, 2)
    assert tuple(np.asarray(color_msg.data).reshape(2, 2, 3)[0, 1]) == CAMVID.palette[3]
    frame = np.full((2, 2, 3), 100, np.uint8)
    overlay = messages.blend(frame, colors, 0.25)
    expected = np.round(frame * 0.75 + colors.astype(np.float64) * 0.25)
    assert np.abs(overlay.astype(int) - expected).max() <= 1
    assert np.array_equal(messages.blend(frame, colors, 0.0), frame)
    assert np.array_equal(messages.blend(frame, colors, 1.0), colors)


def test_class_fractions():
    labels = np.array([[0, 0, 1, 255], [2, 2, 2, 2]], np.uint8)
    fractions = messages.class_fractions(labels, 4)
    assert fractions.dtype == np.float32
    assert np.allclose(fractions, [2 / 8, 1 / 8, 4 / 8, 0.0])


def test_class_confidence():
    labels = np.array([[0, 0, 1, 255], [2, 2, 2, 3]], np.uint8)
    confidence = np.array([[100, 200, 30, 255], [50, 60, 70, 80]], np.uint8)
    means = messages.class_confidence(labels, confidence, 5)
    assert means.dtype == np.float32
    assert np.allclose(means[:4], [150.0, 30.0, 60.0, 80.0]) and np.isnan(means[4])  # class 4: no pixel


def test_info_message_mean_confidence(types):
    Info = types["bisenetv2_ros/msg/SegmentationInfo"]
    args = dict(model="m", backend="b", device="d", inference_ms=1, latency_ms=2, frames_received=1,
                frames_processed=1, frames_dropped=0, fractions=[0.5, 0.5])
    msg = messages.info_message(Info, make_header(types), confidences=np.array([150.0, np.nan]), **args)
    assert msg.class_confidence.dtype == np.float32 and msg.class_confidence[0] == 150.0
    assert np.isnan(msg.class_confidence[1])
    assert len(messages.info_message(Info, make_header(types), **args).class_confidence) == 0  # confidence off

    class OlderInfo:  # rclpy code generated before class_confidence: refuses unknown fields
        __slots__ = [f"_{name}" for name in ("header", "model", "backend", "device", "camera", "inference_ms",
                                             "batch_size", "latency_ms", "frames_received", "frames_processed",
                                             "frames_dropped", "frames_failed", "class_fractions")]

        def __init__(self, **kwargs):
            assert all(f"_{key}" in self.__slots__ for key in kwargs), "Invalid arguments passed to constructor"
            self._class_fractions = kwargs["class_fractions"]

    older = messages.info_message(OlderInfo, make_header(types), confidences=[1.0, 2.0], **args)
    assert list(older._class_fractions) == [0.5, 0.5]


def test_info_message(types):
    Info = types["bisenetv2_ros/msg/SegmentationInfo"]
    header = make_header(types, sec=5, frame_id="f")
    msg = messages.info_message(Info, header, model="tiny.pt", backend="torch", device="cpu", inference_ms=12.5,
                                latency_ms=20.0, frames_received=10, frames_processed=7, frames_dropped=3,
                                fractions=[0.5, 0.25, 0.25])
    assert msg.header.stamp.sec == 5 and msg.header.frame_id == "f"
    assert (msg.model, msg.backend, msg.device, msg.frames_received, msg.frames_processed, msg.frames_dropped) == (
        "tiny.pt", "torch", "cpu", 10, 7, 3)
    assert msg.class_fractions.dtype == np.float32 and np.allclose(msg.class_fractions, [0.5, 0.25, 0.25])
    assert (msg.camera, msg.batch_size, msg.frames_failed) == ("", 1, 0)  # single camera, one frame per call
    batched = messages.info_message(Info, header, model="m", backend="b", device="d", inference_ms=1, latency_ms=2,
                                    frames_received=9, frames_processed=5, frames_dropped=4, fractions=[1.0],
                                    camera="front", batch_size=4, frames_failed=2)
    assert (batched.camera, batched.batch_size, batched.frames_failed, batched.frames_dropped) == ("front", 4, 2, 4)
    rclpy_style = messages.info_message(SimpleNamespace, header, model="m", backend="b", device="d", inference_ms=1,
                                        latency_ms=2, frames_received=1, frames_processed=1, frames_dropped=0,
                                        fractions=np.array([1.0]))
    assert isinstance(rclpy_style.class_fractions, array.array) and rclpy_style.class_fractions.typecode == "f"


def test_label_info_message(types):
    msg = messages.label_info_message(types["vision_msgs/msg/LabelInfo"], types["vision_msgs/msg/VisionClass"],
                                      CAMVID, make_header(types))
    pairs = [(c.class_id, c.class_name) for c in msg.class_map]
    assert pairs[:11] == list(enumerate(CAMVID.names))
    assert pairs[-1] == (255, "unlabelled") and len(pairs) == 12


def test_embedded_info_definition_matches_msg_file():
    def fields(text):
        lines = [re.sub(r"#.*", "", line).strip() for line in text.splitlines()]
        return [" ".join(line.split()) for line in lines if line]

    assert fields(messages.SEGMENTATION_INFO_MSG) == fields(MSG_FILE.read_text())


def test_png_outputs_round_trip_and_bad_ones_are_named():
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_JAZZY).types
    compressed = types["sensor_msgs/msg/CompressedImage"]
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="c")
    labels = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) // 97 % 11).astype(np.uint8)
    labels[0, :5] = 255
    msg = messages.array_to_png(compressed, header, labels, "mono8")
    assert msg.format == "mono8; png compressed " and len(msg.data) < labels.size / 4  # flat regions: small
    assert np.array_equal(messages.png_to_array(msg), labels)
    colors = np.dstack([labels, labels * 2, 255 - labels])
    color_msg = messages.array_to_png(compressed, header, colors, "rgb8")
    assert color_msg.format == "rgb8; png compressed bgr8"
    assert np.array_equal(messages.png_to_array(color_msg), colors)
    with pytest.raises(ValueError, match="PNG outputs are mono8 HxW or rgb8 HxWx3"):
        messages.array_to_png(compressed, header, colors, "mono8")
    with pytest.raises(messages.ImageConversionError, match="expected a PNG mono8 or rgb8 CompressedImage"):
        messages.png_to_array(compressed(header=header, format="jpeg", data=msg.data))
    with pytest.raises(messages.ImageConversionError, match="has no PNG header"):
        messages.png_to_array(compressed(header=header, format="mono8; png compressed ", data=np.zeros(9, np.uint8)))
    with pytest.raises(messages.ImageConversionError, match="holds 3 channels"):
        messages.png_to_array(compressed(header=header, format="mono8; png compressed ", data=color_msg.data))
