"""A 171-class (COCO-Stuff) checkpoint runs through the node's pipeline and the CLI unchanged: labels,
colours from its palette, class fractions, LabelInfo with every class, `bisenetv2 info`."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from test_importers import coincheung_state_dict

from bisenetv2_ros.class_tables import COCO_STUFF
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.ros import messages
from bisenetv2_ros.ros import pipeline as node_core
from bisenetv2_ros.ros.frame_worker import FrameItem
from bisenetv2_ros.ros.parameters import NodeSettings
from bisenetv2_ros.ros.stats import CameraState
from bisenetv2_ros.weights.known_weights import KNOWN_WEIGHTS

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is needed for ROS message definitions")
NAME = "coincheung-v2-coco-stuff"


@pytest.fixture(scope="module")
def store():
    return messages.register_rosbags_types(rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY))


@pytest.fixture
def coco_weights(tmp_path, monkeypatch):
    """A random file of CoinCheung's BiSeNetV2 layout with a 171-class head, cached under its known name."""
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    state = coincheung_state_dict(num_classes=171, seed=11, aux=False)
    # Spread the classifier so a random network predicts many classes (ids above 100 included).
    state["head.conv_out.1.bias"] = torch.linspace(-1.0, 1.0, 171)
    torch.save(state, tmp_path / KNOWN_WEIGHTS[NAME].file_name)
    return NAME


def test_171_classes_through_the_node_pipeline(store, coco_weights):
    types = store.types
    segmenter, classes = node_core.create_segmenter(
        NodeSettings(weights=coco_weights, device="cpu", backend="torch", input_height=64, input_width=96))
    assert classes == COCO_STUFF and segmenter.classes == COCO_STUFF
    published = []
    camera = CameraState("", publish=lambda name, msg: published.append((name, msg)))
    pipeline = node_core.SegmentationPipeline(
        segmenter, classes, NodeSettings(weights=coco_weights), [camera], image_type=types["sensor_msgs/msg/Image"],
        info_type=types["bisenetv2_ros/msg/SegmentationInfo"], warn=lambda text: None)
    pixels = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    msg = types["sensor_msgs/msg/Image"](header=header, height=48, width=64, encoding="rgb8", is_bigendian=0,
                                         step=64 * 3, data=pixels.reshape(-1))
    assert pipeline.process(FrameItem(msg, time.monotonic())) is True
    outputs = dict(published)
    labels = np.asarray(outputs["labels"].data).reshape(48, 64)
    np.testing.assert_array_equal(labels, segmenter.segment(pixels, channel_order="rgb"))
    assert labels.max() < 171 and len(np.unique(labels)) >= 3
    colours = np.asarray(outputs["color"].data).reshape(48, 64, 3)
    np.testing.assert_array_equal(colours, COCO_STUFF.lookup_table()[labels])
    fractions = np.asarray(outputs["info"].class_fractions)
    assert fractions.shape == (171,) and fractions.sum() == pytest.approx(1.0, abs=1e-5)
    assert fractions[labels.max()] > 0  # the highest class id seen is counted in its own slot
    label_info = messages.label_info_message(types["vision_msgs/msg/LabelInfo"], types["vision_msgs/msg/VisionClass"],
                                             classes, header)
    pairs = [(c.class_id, c.class_name) for c in label_info.class_map]
    assert len(pairs) == 172 and pairs[170] == (170, "wood") and pairs[-1] == (255, "unlabelled")
    roundtrip = store.deserialize_cdr(store.serialize_cdr(label_info, label_info.__msgtype__), label_info.__msgtype__)
    assert [c.class_name for c in roundtrip.class_map] == [name for _, name in pairs]


def test_cli_info_of_the_171_class_name(coco_weights, capsys):
    assert cli.main(["info", coco_weights]) == 0
    out = capsys.readouterr().out
    assert "classes (171):" in out and "  170 wood" in out and "dataset:          coco-stuff164k" in out
    assert "no checksum published: checked by importing it" in out
    assert "published mIoU:   with training/evaluate.py --protocol coincheung" in out
    assert "val_miou=30.49" in out
