"""Bags and the new encodings: a Jazzy-format (version 9) bag of Bayer and 12-bit frames segments through
`bisenetv2 segment` like the node's converters decode them, and the bag written is readable by Humble's
rosbag2 (checked against what Humble's own reader requires, from its source: see docs/node.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from encoded_frames import encode
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos
from ruamel.yaml import YAML
from test_bags import TYPESTORE, Image, header, model_args, read_topic, segmenter  # noqa: F401  (fixture)

from bisenetv2_ros.cli import bags
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.ros import messages

H, W = 24, 40
CAMERA_QOS = parse_qos([{"history": "keep_last", "depth": 5, "reliability": "best_effort", "durability": "volatile",
                         "deadline": {"sec": 9223372036, "nsec": 854775807},
                         "lifespan": {"sec": 9223372036, "nsec": 854775807}, "liveliness": "automatic",
                         "liveliness_lease_duration": {"sec": 9223372036, "nsec": 854775807},
                         "avoid_ros_namespace_conventions": False}])
FRAMES = [("bayer_rggb8", 16), ("bayer_grbg8", 16), ("bayer_bggr16", 16), ("bayer_gbrg16", 12), ("nv21", 16),
          ("mono16", 12)]


def smooth_frame(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (H // 6 + 1, W // 6 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)


def camera_bag(path: Path, storage: StoragePlugin, significant_bits: int) -> list:
    """A version 9 (Jazzy) bag with one /camera/image topic of every FRAMES encoding at ``significant_bits``."""
    written = []
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = writer.add_connection("/camera/image", Image.__msgtype__, typestore=TYPESTORE,
                                     offered_qos_profiles=CAMERA_QOS)
        for i, (encoding, bits) in enumerate(FRAMES):
            fields = encode(smooth_frame(i), encoding, pad=2, big_endian=i % 2 == 1,
                            significant_bits=significant_bits if bits == 12 else 16)
            msg = Image(header=header(i, f"camera_{encoding}"), **fields)
            writer.write(conn, 10_000 + i, TYPESTORE.serialize_cdr(msg, Image.__msgtype__))
            written.append(msg)
    return written


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_of_bayer_and_12_bit_frames_segments_through_the_cli(tmp_path, tiny_weights, segmenter, storage,  # noqa: F811
                                                                   capsys):
    bag = tmp_path / "bayer"
    written = camera_bag(bag, StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3, 12)
    out = tmp_path / "out"
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--significant-bits", "12", "--output", str(out),
                     "--quiet"]) == 0
    labels = read_topic(out, bags.LABELS_TOPIC)
    assert [msg.header.frame_id for _, msg in labels] == [f"camera_{encoding}" for encoding, _ in FRAMES]
    for source, (_, label_msg) in zip(written, labels):
        frame, order = messages.image_to_frame(source, significant_bits=12)
        want = segmenter.segment(np.ascontiguousarray(frame), channel_order=order)
        assert np.array_equal(np.asarray(label_msg.data).reshape(H, W), want), source.encoding
    # 12-bit frames read as 16-bit data are nearly black: the flag is what makes them right
    twelve = written[3]
    dark, _ = messages.image_to_frame(twelve)
    assert dark.max() <= 16 and messages.image_to_frame(twelve, significant_bits=12)[0].max() > 100


def _humble_reads_qos(text: object) -> list[dict]:
    """Humble's rosbag2 (metadata_io.cpp, version >= 4) reads offered_qos_profiles as a std::string, then
    (rosbag2_transport/qos.cpp) each profile's history, reliability, durability and liveliness with
    as<int> and its durations as {sec, nsec} uint64: a YAML list there, or policy names, fail."""
    assert isinstance(text, str), f"offered_qos_profiles must be a YAML string for Humble, got {type(text).__name__}"
    profiles = YAML(typ="safe").load(text)
    for profile in profiles:
        for policy in ("history", "reliability", "durability", "liveliness"):
            assert isinstance(profile[policy], int) and not isinstance(profile[policy], bool), (policy, profile)
        assert isinstance(profile["depth"], int)
        for duration in ("deadline", "lifespan", "liveliness_lease_duration"):
            assert {k: type(v) for k, v in profile[duration].items()} == {"sec": int, "nsec": int}
        assert isinstance(profile["avoid_ros_namespace_conventions"], bool)
    return profiles


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_written_open_in_humble_and_jazzy(tmp_path, tiny_weights, storage):
    bag = tmp_path / "jazzy_input"
    camera_bag(bag, StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3, 16)
    out = tmp_path / "out"
    assert cli.main(["segment", str(bag), *model_args(tiny_weights), "--copy-input", "--output", str(out),
                     "--quiet"]) == 0
    info = YAML(typ="safe").load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    # The fields Humble's BagMetadata decoder reads (version 5 struct; it reads by name, ignores the rest)
    assert info["version"] == bags.BAG_VERSION and 5 <= info["version"] <= 8  # 9 writes QoS as a YAML list
    assert info["storage_identifier"] == storage
    for key in ("duration", "starting_time", "message_count", "relative_file_paths", "compression_format",
                "compression_mode", "files"):
        assert key in info, key
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert set(topics) == {"/camera/image", bags.LABELS_TOPIC, bags.COLOR_TOPIC, "/segmentation/info"}
    for name, topic in topics.items():
        profiles = _humble_reads_qos(topic["topic_metadata"]["offered_qos_profiles"])
        if name == "/camera/image":  # copied with the camera's own profile: best effort, depth 5
            assert len(profiles) == 1 and (profiles[0]["reliability"], profiles[0]["depth"]) == (2, 5)
        else:  # the outputs as `ros2 bag record` stores the node's: reliable (1), volatile (2), keep last (1) 1
            assert len(profiles) == 1 and [profiles[0][k] for k in ("reliability", "durability", "history", "depth")] \
                == [1, 2, 1, 1], (name, profiles)
    if storage == "sqlite3":  # Humble's sqlite3 plugin selects these columns by name
        (db,) = out.glob("*.db3")
        with sqlite3.connect(db) as connection:
            rows = connection.execute("SELECT name, type, serialization_format, offered_qos_profiles FROM topics").fetchall()
            assert connection.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 4 * len(FRAMES)  # camera, labels, color, info
        for _, _, fmt, qos in rows:
            assert fmt == "cdr" and _humble_reads_qos(qos)
    # and Jazzy (rosbags' reader, like rosbag2's, reads either form) reads everything back
    assert len(read_topic(out, bags.LABELS_TOPIC)) == len(FRAMES)


def test_the_outputs_qos_in_bags_is_the_nodes():
    """The CLI's output bags offer what recording the node gives (its publishers' OUTPUT_QOS)."""
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) is not installed")
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from bisenetv2_ros.cli import bags
    from bisenetv2_ros.ros.node import OUTPUT_QOS

    (profile,) = bags.output_qos()
    assert profile.depth == OUTPUT_QOS.depth
    assert profile.reliability.name == ReliabilityPolicy(OUTPUT_QOS.reliability).name == "RELIABLE"
    assert profile.durability.name == DurabilityPolicy(OUTPUT_QOS.durability).name == "VOLATILE"
    assert profile.history.name == HistoryPolicy(OUTPUT_QOS.history).name == "KEEP_LAST"
