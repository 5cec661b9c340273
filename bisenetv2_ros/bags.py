"""Segmenting rosbag2 recordings (MCAP or sqlite3) with the ``rosbags`` package: no ROS install needed.

The output bag holds ``/segmentation/labels`` (sensor_msgs/Image mono8, class id per pixel) and
``/segmentation/color`` (rgb8 palette image) for every input frame, with the input frame's header
(stamp, frame_id) and the same log time, and optionally every input message too (``copy_input``).
Messages are written in the input's log-time order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
LABELS_TOPIC = "/segmentation/labels"
COLOR_TOPIC = "/segmentation/color"
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8  # the metadata version Jazzy's rosbag2 writes


class BagError(ValueError):
    """A bag that cannot be read or segmented as asked; the message says why."""


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as error:  # a dependency of the package, but keep the failure readable
        raise BagError(f"reading rosbag2 files needs the 'rosbags' package ({error}); pip install rosbags") from error
    return Reader, Writer, StoragePlugin, get_typestore(Stores.ROS2_JAZZY)


# --------------------------------------------------------------------------------------------
# Message <-> array. Self-contained until bisenetv2_ros.messages (the node's converters, which also
# accept rosbags messages) is merged; then these three functions become thin calls into it.


class UnsupportedImage(ValueError):
    """A frame this tool does not decode; ``reason`` is a short key for the skip count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def image_message_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """sensor_msgs Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage (jpeg, png) -> HxWx3 RGB."""
    if msgtype == COMPRESSED_TYPE:
        frame = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise UnsupportedImage(f"compressed '{msg.format}' that OpenCV cannot decode")
        return frame[..., ::-1]
    encoding = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3}.get(encoding)
    if channels is None:
        raise UnsupportedImage(f"encoding '{msg.encoding}'")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if height == 0 or width == 0 or step < width * channels or data.size < step * height:
        raise UnsupportedImage(f"malformed {msg.encoding} image ({width}x{height}, step {step}, {data.size} bytes)")
    rows = data[: step * height].reshape(height, step)[:, : width * channels]  # drops row padding
    pixels = rows.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr") or encoding == "8uc3":  # 8UC3 is OpenCV's (BGR) layout
        return pixels[..., 2::-1]
    return pixels[..., :3]


def array_to_image_message(typestore: Any, header: Any, array: np.ndarray, encoding: str) -> Any:
    """HxW (mono8) or HxWx3 (rgb8) uint8 -> sensor_msgs/msg/Image with the given header."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    image_class = typestore.types[IMAGE_TYPE]
    return image_class(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                       step=width * channels, data=array.reshape(-1))


# --------------------------------------------------------------------------------------------
# Reading


def storage_of(bag: Path) -> str:
    """'mcap' or 'sqlite3', from the bag's storage file(s)."""
    if bag.is_file():
        return "mcap" if bag.suffix == ".mcap" else "sqlite3"
    if any(bag.glob("*.mcap")) or any(bag.glob("*.mcap.zstd")):
        return "mcap"
    return "sqlite3"


def image_topics(bag: Path) -> dict[str, str]:
    """Topic -> message type of every Image / CompressedImage topic of a bag."""
    Reader, _, _, _ = _rosbags()
    with _open_reader(Reader, bag) as reader:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}


def _open_reader(Reader, bag: Path):
    try:
        return Reader(bag)
    except Exception as error:  # rosbags raises several kinds for a broken folder
        raise BagError(f"cannot open rosbag2 {bag}: {error}") from error


def choose_topic(topics: dict[str, str], requested: str | None, bag: Path) -> str:
    listing = ", ".join(f"{t} ({m.split('/')[-1]})" for t, m in sorted(topics.items())) or "none"
    if requested is not None:
        if requested not in topics:
            raise BagError(f"bag {bag} has no image topic {requested!r}; its image topics: {listing}")
        return requested
    if len(topics) == 1:
        return next(iter(topics))
    if not topics:
        raise BagError(f"bag {bag} holds no sensor_msgs/Image or CompressedImage topic")
    raise BagError(f"bag {bag} has {len(topics)} image topics; choose one with --topic: {listing}")


# --------------------------------------------------------------------------------------------
# Segmenting


@dataclass
class BagSummary:
    frames: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> frames
    copied: int = 0
    topic: str = ""
    warnings: list[str] = field(default_factory=list)


def segment_bag(segmenter, bag: Path, output: Path, topic: str | None = None, batch_size: int = 1,
                copy_input: bool = False, storage: str | None = None,
                progress: Callable[[int], None] = lambda n: None,
                on_topic: Callable[[str, int], None] = lambda topic, count: None) -> BagSummary:
    """Writes the segmented bag to ``output`` (which must not exist; the caller stages it).

    ``on_topic(topic, frame_count)`` is called once the camera topic is known (for a progress bar).
    """
    Reader, Writer, StoragePlugin, typestore = _rosbags()
    storage = storage or storage_of(bag)
    if storage not in STORAGES:
        raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
    summary = BagSummary()
    with _open_reader(Reader, bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
        summary.topic = topic = choose_topic(topics, topic, bag)
        cameras = [c for c in reader.connections if c.topic == topic]
        on_topic(topic, sum(c.msgcount for c in cameras))
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(output, version=BAG_VERSION, storage_plugin=plugin) as writer:
            qos = cameras[0].ext.offered_qos_profiles if hasattr(cameras[0].ext, "offered_qos_profiles") else []
            labels_conn = writer.add_connection(LABELS_TOPIC, IMAGE_TYPE, typestore=typestore, offered_qos_profiles=qos)
            color_conn = writer.add_connection(COLOR_TOPIC, IMAGE_TYPE, typestore=typestore, offered_qos_profiles=qos)
            copies = _copy_connections(writer, reader.connections, typestore, summary) if copy_input else {}
            camera_ids = {c.id for c in cameras}
            selected = list(reader.connections) if copy_input else cameras
            # Pending messages in log-time order: ("copy", out conn, time, raw) and
            # ("frame", None, time, (header, rgb)). Flushed once a batch of frames is complete.
            pending: list[tuple[str, Any, int, Any]] = []
            frames_pending = 0

            def flush() -> None:
                nonlocal frames_pending
                frames = [entry[3][1] for entry in pending if entry[0] == "frame"]
                labels = iter(segmenter.segment_batch(np.stack(frames), channel_order="rgb") if frames else [])
                for kind, out_conn, timestamp, payload in pending:
                    if kind == "copy":
                        writer.write(out_conn, timestamp, payload)
                        summary.copied += 1
                        continue
                    header, _ = payload
                    label = next(labels)
                    for conn, array, encoding in ((labels_conn, label, "mono8"),
                                                  (color_conn, segmenter.colorize(label), "rgb8")):
                        msg = array_to_image_message(typestore, header, array, encoding)
                        writer.write(conn, timestamp, typestore.serialize_cdr(msg, IMAGE_TYPE))
                    summary.frames += 1
                    progress(1)
                pending.clear()
                frames_pending = 0

            first_shape = None
            for conn, timestamp, raw in reader.messages(connections=selected):
                frame = None
                if conn.id in camera_ids:
                    try:
                        msg = typestore.deserialize_cdr(raw, conn.msgtype)
                        frame = (msg.header, image_message_to_rgb(msg, conn.msgtype))
                    except UnsupportedImage as error:
                        summary.skipped[error.reason] += 1
                        progress(1)
                    if frame is not None and frames_pending and (
                            frames_pending >= batch_size or frame[1].shape != first_shape):
                        flush()
                if conn.id in copies:
                    pending.append(("copy", copies[conn.id], timestamp, raw))
                if frame is not None:
                    if frames_pending == 0:
                        first_shape = frame[1].shape
                    pending.append(("frame", None, timestamp, frame))
                    frames_pending += 1
            flush()
    return summary


def _copy_connections(writer, connections, typestore, summary: BagSummary) -> dict[int, Any]:
    """Input connection id -> output connection, for --copy-input. Types are described by the
    input's own definition and hash when it has them, else by the Jazzy type store."""
    mapping: dict[int, Any] = {}
    added: dict[tuple, Any] = {}
    for conn in connections:
        key = (conn.topic, conn.msgtype)
        if key in added:  # one topic recorded by several connections: one output connection
            mapping[conn.id] = added[key]
            continue
        qos = getattr(conn.ext, "offered_qos_profiles", [])
        fmt = getattr(conn.ext, "serialization_format", "cdr")
        msgdef, digest = conn.msgdef.data, conn.digest
        try:
            if msgdef and digest:
                out = writer.add_connection(conn.topic, conn.msgtype, msgdef=msgdef, rihs01=digest,
                                            serialization_format=fmt, offered_qos_profiles=qos)
            else:
                out = writer.add_connection(conn.topic, conn.msgtype, typestore=typestore,
                                            serialization_format=fmt, offered_qos_profiles=qos)
        except Exception as error:  # a type neither the bag nor the Jazzy store describes
            summary.warnings.append(f"not copying {conn.topic} ({conn.msgtype}): {error}")
            continue
        added[key] = mapping[conn.id] = out
    return mapping
