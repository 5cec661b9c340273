"""Segmenting rosbag2 recordings (MCAP or sqlite3) with the ``rosbags`` package: no ROS install needed.

The output bag holds, by default, ``/segmentation/labels`` (sensor_msgs/Image mono8, class id per
pixel), ``/segmentation/color`` (rgb8 palette image) and ``/segmentation/info`` (the node's
SegmentationInfo, ``bag_info.py``) for every input frame, or the ``outputs`` asked for
(``OUTPUT_TOPICS``: also ``confidence`` and the node's lossless PNG ``labels/compressed`` and
``color/compressed``), with the input frame's header (stamp, frame_id) and the same log time,
and optionally every input message too (``copy_input``). Messages are written in the input's
log-time order. ``read_segmentation`` reads such outputs back (the node's, recorded, or these).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..classes import colorize
from ..conventions import DEFAULT_MAX_INPUT_PIXELS
from ..fileio import WriteError
from ..ros import messages
from .bag_info import INFO_TYPE, BagInfo
from .bag_writer import CheckedBagWriter

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
LABELS_TOPIC = "/segmentation/labels"
COLOR_TOPIC = "/segmentation/color"
# output kind -> (topic, message type); the node's topic names under its default namespace
OUTPUT_TOPICS = {"labels": (LABELS_TOPIC, IMAGE_TYPE), "color": (COLOR_TOPIC, IMAGE_TYPE),
                 "confidence": ("/segmentation/confidence", IMAGE_TYPE),
                 "labels/compressed": (LABELS_TOPIC + "/compressed", COMPRESSED_TYPE),
                 "color/compressed": (COLOR_TOPIC + "/compressed", COMPRESSED_TYPE),
                 "info": ("/segmentation/info", INFO_TYPE)}
# info too: the node always publishes it beside labels, so a replay of the bag looks like the node's output
DEFAULT_OUTPUTS = ("labels", "color", "info")
# Image topics of a segmentation node's own outputs: never a camera when choosing one automatically.
SEGMENTATION_OUTPUT_NAMES = ("labels", "color", "overlay", "confidence", "labels/compressed", "color/compressed")
STORAGES = ("mcap", "sqlite3")
# Metadata version 8 opens in Humble's and Jazzy's `ros2 bag` (docs/cli.md, from rosbag2's source): Humble (struct version
# 5) reads fields by name and offered_qos_profiles as a string of integer policies, which version 8 writes;
# version 9 writes them as a YAML list of policy names, which Humble's yaml-cpp cannot convert.
BAG_VERSION = 8


class BagError(ValueError):
    """A bag that cannot be read or segmented as asked; the message says why."""


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as error:  # a dependency of the package, but keep the failure readable
        raise BagError(f"reading rosbag2 files needs the 'rosbags' package ({error}); pip install rosbags") from error
    # + SegmentationInfo from its definition (rosbags' get_types_from_msg), which the bag then stores
    return Reader, Writer, StoragePlugin, messages.register_rosbags_types(get_typestore(Stores.ROS2_JAZZY))


# --------------------------------------------------------------------------------------------
# Message <-> array: the node's converters (bisenetv2_ros.ros.messages), so bag and live input decode alike.


def decode_frame(msg: Any, msgtype: str, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                 limit_name: str = "--max-input-pixels", significant_bits: int = 16) -> tuple[np.ndarray, str]:
    """Image (any encoding of messages.ENCODINGS) or CompressedImage -> (HxWx3 uint8 frame, 'rgb'|'bgr').

    Raises messages.ImageConversionError naming the problem (encoding, size, data, above ``max_pixels``).
    """
    if msgtype == COMPRESSED_TYPE:
        return messages.compressed_to_frame(msg, max_pixels, limit_name)
    return messages.image_to_frame(msg, max_pixels, limit_name, significant_bits)


def deserialize(typestore: Any, raw: bytes, msgtype: str) -> Any:
    """A message from its CDR bytes; a corrupt payload is an ImageConversionError (skipped like a bad frame)."""
    from rosbags.serde import SerdeError

    try:
        return typestore.deserialize_cdr(raw, msgtype)
    except (SerdeError, ValueError) as error:  # ValueError: e.g. a string that is not UTF-8
        raise messages.ImageConversionError(f"corrupt CDR payload: not a readable {msgtype}") from error


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


@contextmanager
def _open_reader(Reader, bag: Path):
    """An open reader; rosbags reads metadata.yaml only in open(), so both steps are guarded."""
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as error:  # rosbags raises several kinds for a broken folder or metadata.yaml
        raise BagError(f"cannot open rosbag2 {bag}: {_one_line(error)}") from error
    try:
        yield reader
    finally:
        reader.close()


def _one_line(error: Exception) -> str:
    """The first line of a library message (YAML errors go on with a caret drawing of the file)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


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
    # A recording of the node holds its outputs beside the camera: those are not camera input.
    cameras = [t for t in topics if not t.endswith(tuple("/" + name for name in SEGMENTATION_OUTPUT_NAMES))]
    if len(cameras) == 1:
        return cameras[0]
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
                on_topic: Callable[[str, int], None] = lambda topic, count: None,
                max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
                outputs: tuple[str, ...] = DEFAULT_OUTPUTS, significant_bits: int = 16,
                frames_log=None) -> BagSummary:
    """Writes the segmented bag to ``output`` (which must not exist; the caller stages it), one topic
    per kind in ``outputs`` (keys of OUTPUT_TOPICS).

    ``on_topic(topic, frame_count)`` is called once the camera topic is known (for a progress bar).
    Frames that cannot be deserialized or decoded, or above ``max_input_pixels``, are skipped and
    counted by reason in the summary. ``significant_bits``: of 16-bit frames (``ros.encodings``).
    """
    unknown = [kind for kind in outputs if kind not in OUTPUT_TOPICS]
    if unknown or not outputs:
        raise BagError(f"bag outputs are a comma list of {', '.join(OUTPUT_TOPICS)}; got {', '.join(outputs)}")
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
        with CheckedBagWriter(Writer(output, version=BAG_VERSION, storage_plugin=plugin), output) as writer:
            connections = {kind: writer.add_connection(OUTPUT_TOPICS[kind][0], OUTPUT_TOPICS[kind][1],
                                                       typestore=typestore, offered_qos_profiles=output_qos())
                           for kind in outputs}
            written = {OUTPUT_TOPICS[kind][0] for kind in outputs}
            copies = _copy_connections(writer, reader.connections, typestore, summary, written) if copy_input else {}
            camera_ids = {c.id for c in cameras}
            selected = list(reader.connections) if copy_input else cameras
            image_type, compressed_type = typestore.types[IMAGE_TYPE], typestore.types[COMPRESSED_TYPE]
            lookup_table = segmenter.classes.lookup_table()
            info = BagInfo(segmenter, typestore.types[INFO_TYPE], "confidence" in outputs) if "info" in outputs else None
            with_confidence = "confidence" in outputs or (
                (frames_log is not None or info is not None) and segmenter.tta is None)

            def output_messages(label: np.ndarray, confidence: np.ndarray | None, header: Any) -> dict[str, Any]:
                colors = colorize(label, lookup_table) if any(k.startswith("color") for k in outputs) else None
                make = {"labels": lambda: messages.labels_to_image(image_type, label, header),
                        "color": lambda: messages.array_to_image(image_type, header, colors, "rgb8"),
                        "confidence": lambda: messages.array_to_image(image_type, header, confidence, "mono8"),
                        "labels/compressed": lambda: messages.array_to_png(compressed_type, header, label, "mono8"),
                        "color/compressed": lambda: messages.array_to_png(compressed_type, header, colors, "rgb8")}
                return {kind: make[kind]() for kind in outputs if kind != "info"}
            # Pending messages in log-time order: ("copy", out conn, time, raw) and
            # ("frame", info counts, time, header). Frames wait in `batch` (one size and channel order, which
            # the segmenter takes as declared); everything is flushed once the batch is complete.
            pending: list[tuple[str, Any, int, Any]] = []
            batch: list[np.ndarray] = []
            batch_order = "rgb"

            def flush() -> None:
                labels, confidences = [], []
                started = time.perf_counter()
                if batch and with_confidence:
                    labels, confidences = segmenter.segment_batch(np.stack(batch), channel_order=batch_order,
                                                                  confidence=True)
                elif batch:
                    labels = segmenter.segment_batch(np.stack(batch), channel_order=batch_order)
                inference_ms, batch_size = (time.perf_counter() - started) * 1000.0, len(batch)
                results = iter(zip(labels, confidences, batch) if with_confidence else
                               ((label, None, frame) for label, frame in zip(labels, batch)))
                for kind, detail, timestamp, payload in pending:  # detail: out conn of a copy, info counts of a frame
                    if kind == "copy":
                        writer.write(detail, timestamp, payload)
                        summary.copied += 1
                        continue
                    label, confidence, frame = next(results)
                    scored = info.score(frame, label, confidence) if info is not None else None
                    for output_kind, msg in output_messages(label, confidence, payload).items():
                        writer.write(connections[output_kind], timestamp,
                                     typestore.serialize_cdr(msg, OUTPUT_TOPICS[output_kind][1]))
                    if info is not None:
                        msg = info.message(payload, detail, label, confidence, scored, inference_ms, batch_size)
                        writer.write(connections["info"], timestamp, typestore.serialize_cdr(msg, INFO_TYPE))
                    if frames_log is not None:  # cli/frames_log.py
                        stamp = f"{payload.stamp.sec}.{payload.stamp.nanosec:09d}"
                        frames_log.record({"topic": topic, "stamp": stamp}, frame, label, confidence, scored)
                    summary.frames += 1
                    progress(1)
                pending.clear()
                batch.clear()

            for conn, timestamp, raw in reader.messages(connections=selected):
                frame = counts = None
                if conn.id in camera_ids:
                    try:
                        msg = deserialize(typestore, raw, conn.msgtype)
                        frame, order = decode_frame(msg, conn.msgtype, max_input_pixels,
                                                    significant_bits=significant_bits)
                    except messages.ImageConversionError as error:
                        summary.skipped[str(error)] += 1
                        progress(1)
                    counts = info.read(frame is not None) if info is not None else None
                    if frame is not None and batch and (
                            len(batch) >= batch_size or frame.shape != batch[0].shape or order != batch_order):
                        flush()
                if conn.id in copies:
                    pending.append(("copy", copies[conn.id], timestamp, raw))
                if frame is not None:
                    batch_order = order
                    batch.append(frame)
                    pending.append(("frame", counts, timestamp, msg.header))
            flush()
    return summary


def read_segmentation(bag: Path, topic: str) -> Iterator[tuple[int, Any, np.ndarray]]:
    """(log time, header, array) for every message of a segmentation output topic of a bag: raw
    mono8 / rgb8 Images (labels, confidence, color) or the lossless PNG CompressedImages of
    ``messages.array_to_png`` (the node's `labels/compressed`, `color/compressed`), decoded exactly."""
    Reader, _, _, typestore = _rosbags()
    with _open_reader(Reader, bag) as reader:
        selected = [c for c in reader.connections if c.topic == topic]
        if not selected:
            listing = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
            raise BagError(f"bag {bag} has no topic {topic!r}; its topics: {listing}")
        if selected[0].msgtype not in IMAGE_TYPES:
            raise BagError(f"topic {topic} of {bag} holds {selected[0].msgtype}, not an Image or CompressedImage")
        for conn, timestamp, raw in reader.messages(connections=selected):
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == COMPRESSED_TYPE:
                yield timestamp, msg.header, messages.png_to_array(msg)
            else:
                pixels, info = messages.image_to_array(msg)
                yield timestamp, msg.header, pixels[..., 0] if info.layout == "mono" else pixels


def output_qos() -> list:
    """The QoS ``ros2 bag record`` stores for the node's outputs (``ros/node.py`` OUTPUT_QOS: reliable,
    volatile, keep last 1; durations infinite as rosbag2 writes them), so that a played-back bag serves the
    subscribers the node serves; the camera's own profile (often best effort) left reliable ones unmatched."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(sec=9223372036, nsec=854775807)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.VOLATILE, deadline=infinite, lifespan=infinite,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=infinite,
                avoid_ros_namespace_conventions=False)]


def _copy_connections(writer, connections, typestore, summary: BagSummary, written: set[str]) -> dict[int, Any]:
    """Input connection id -> output connection, for --copy-input. Types are described by the
    input's own definition and hash when it has them, else by the Jazzy type store. Topics this run
    writes (``written``) are not copied: a bag segmented before would get two connections on them."""
    mapping: dict[int, Any] = {}
    added: dict[tuple, Any] = {}
    for conn in connections:
        key = (conn.topic, conn.msgtype)
        if conn.topic in written:
            warning = f"not copying {conn.topic} from the input: this run writes it"
            if warning not in summary.warnings:
                summary.warnings.append(warning)
            continue
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
        except WriteError:
            raise
        except Exception as error:  # a type neither the bag nor the Jazzy store describes
            summary.warnings.append(f"not copying {conn.topic} ({conn.msgtype}): {error}")
            continue
        added[key] = mapping[conn.id] = out
    return mapping
