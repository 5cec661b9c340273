"""The node's parameters (node_parameters): specs, validation, runtime updates, the generated NodeSettings."""

from __future__ import annotations

import dataclasses

import pytest

from bisenetv2_ros.ros import parameters as node_parameters
from bisenetv2_ros.ros.parameters import NodeSettings, SettingsError


def test_defaults_are_valid_and_match_specs():
    settings = NodeSettings.from_values({})
    assert settings == NodeSettings()
    assert settings.input_size is None
    assert set(node_parameters.RUNTIME_PARAMETERS) == {"publish_color", "publish_overlay", "overlay_alpha", "max_rate_hz",
                                                       "only_when_subscribed", "max_batch", "publish_compressed",
                                                       "depth_max_offset_s", "input_significant_bits"}
    assert settings.publish_confidence is False and settings.publish_compressed is False
    assert settings.cameras == [] and settings.camera_names == [""]


def test_settings_are_generated_from_the_specs():
    specs = node_parameters.PARAMETER_SPECS
    settings = NodeSettings()
    assert [f.name for f in dataclasses.fields(NodeSettings)] == [spec.name for spec in specs]
    assert {spec.name: getattr(settings, spec.name) for spec in specs} == {spec.name: spec.default for spec in specs}
    assert (settings.weights, settings.backend, settings.max_batch, settings.overlay_alpha) == ("camvid", "auto", 0, 0.5)
    assert NodeSettings.__name__ == "NodeSettings" and NodeSettings.__module__ == "bisenetv2_ros.ros.parameters"
    settings.cameras.append("front")  # each settings object owns its list; the spec's default stays empty
    assert NodeSettings().cameras == [] and node_parameters.SPECS_BY_NAME["cameras"].default == []
    assert settings.camera_names == ["front"]
    changed = dataclasses.replace(settings, backend="torch", input_height=360, input_width=480)
    assert changed.backend == "torch" and changed.input_size == (360, 480) and settings.backend == "auto"


@pytest.mark.parametrize("values,message", [
    ({"backend": "cuda"}, "parameter 'backend' must be one of auto, torch, onnxruntime, tensorrt, openvino; got 'cuda'"),
    ({"overlay_alpha": 1.5}, "parameter 'overlay_alpha' must be within 0..1; got 1.5"),
    ({"overlay_alpha": float("nan")}, "parameter 'overlay_alpha' must be within 0..1"),
    ({"max_rate_hz": -1.0}, "parameter 'max_rate_hz' must be within 0..1000"),
    ({"input_height": 512}, "input_height and input_width must both be 0"),
    ({"input_width": -2}, "parameter 'input_width' must be within 0..8192"),
    ({"publish_color": 1}, "parameter 'publish_color' must be a bool, got int 1"),
    ({"input_height": True}, "parameter 'input_height' must be a int, got bool"),
    ({"image_qos": "best_effort"}, "parameter 'image_qos' must be one of sensor_data, reliable"),
    ({"input_transport": "theora"}, "parameter 'input_transport' must be one of raw, compressed"),
    ({"weights": " "}, "parameter 'weights' is empty"),
    ({"wieghts": "x"}, "unknown parameter(s) wieghts"),
    # counts and pixel products with an upper bound too (found beyond the list)
    ({"cameras": [f"c{i}" for i in range(33)]}, "parameter 'cameras' lists 33 cameras; at most 32 per node"),
    ({"warmup_frame_sizes": ["48x64"] * 17}, "parameter 'warmup_frame_sizes' lists 17 sizes; at most 16"),
    ({"warmup_frame_sizes": ["30000x30000"]}, "parameter 'warmup_frame_sizes': 30000x30000 above max_input_pixels "
                                              "16777216"),
    ({"input_height": 8192, "input_width": 8192}, "input_height x input_width 8192x8192 is above 16777216 pixels"),
])
def test_invalid_settings_are_named(values, message):
    with pytest.raises(SettingsError) as caught:
        NodeSettings.from_values(values)
    assert message in str(caught.value)


def test_valid_settings_are_converted():
    settings = NodeSettings.from_values({"overlay_alpha": 1, "input_height": 480, "input_width": 640,
                                         "backend": "onnxruntime", "max_rate_hz": 5})
    assert settings.overlay_alpha == 1.0 and isinstance(settings.overlay_alpha, float)
    assert settings.input_size == (480, 640) and settings.backend == "onnxruntime"


@pytest.mark.parametrize("name,value,accepted,reason", [
    ("publish_overlay", True, True, ""),
    ("overlay_alpha", 0.2, True, ""),
    ("max_rate_hz", 10, True, ""),
    ("overlay_alpha", 2.0, False, "must be within 0..1"),
    ("publish_color", "yes", False, "must be a bool"),
    ("weights", "other.pt", False, "parameter 'weights' is read at start-up only; restart the node"),
    ("backend", "torch", False, "read at start-up only"),
    # confidence changes the network's graph (a TensorRT engine build): start-up only
    ("publish_confidence", True, False, "parameter 'publish_confidence' is read at start-up only"),
    ("publish_compressed", True, True, ""),
    ("use_sim_time", True, True, ""),  # not ours: left to rclpy
])
def test_runtime_updates(name, value, accepted, reason):
    ok, text = node_parameters.check_runtime_update(name, value)
    assert ok is accepted
    assert reason in text and (text == "") == accepted


def test_settings_update_in_place():
    settings = NodeSettings()
    settings.update("max_rate_hz", 3)
    settings.update("publish_overlay", True)
    assert settings.max_rate_hz == 3.0 and isinstance(settings.max_rate_hz, float) and settings.publish_overlay


def test_cameras_parameter():
    settings = NodeSettings.from_values({"cameras": ("front", "rear_left", "roof/wide"), "max_batch": 2})
    assert settings.cameras == ["front", "rear_left", "roof/wide"] and settings.camera_names == settings.cameras
    assert settings.max_batch == 2
    for value, message in [
        (["front", "front"], "parameter 'cameras' names front more than once"),
        (["front", "2nd"], "parameter 'cameras': '2nd' cannot prefix a topic"),
        (["", "x"], "parameter 'cameras': '' cannot prefix a topic"),
        (["a b"], "'a b' cannot prefix a topic"),
        ("front,left", "parameter 'cameras' must be a list of strings, got str"),
        ([1, 2], "must be a list of strings, got list [1, 2]"),
    ]:
        with pytest.raises(SettingsError) as caught:
            NodeSettings.from_values({"cameras": value})
        assert message in str(caught.value)
    assert node_parameters.check_runtime_update("cameras", ["x"])[0] is False
    assert node_parameters.check_runtime_update("max_batch", 65) == (False, "parameter 'max_batch' must be within 0..64; "
                                                                      "got 65")


def test_parameter_descriptions_name_commands_that_exist():
    """The node's own words (parameter descriptions, params file, launch file) name only real commands."""
    import re
    from pathlib import Path

    from bisenetv2_ros.cli.commands import build_parser

    root = Path(__file__).resolve().parents[1]
    texts = [spec.description for spec in node_parameters.PARAMETER_SPECS]
    texts += [(root / name).read_text() for name in ("config/segmentation.yaml", "launch/segment.launch.py")]
    commands = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    mentioned = [m for text in texts for m in re.findall(r"\bbisenetv2 ([a-z][\w-]*)", text)]
    assert mentioned.count("download") >= 2  # the weights parameter and the params file: `bisenetv2 download --list`
    assert set(mentioned) <= commands, f"unknown commands named: {set(mentioned) - commands}"


def test_params_file_and_node_doc_list_every_parameter_with_its_default():
    """config/segmentation.yaml sets every parameter to its spec's default (the lists `cameras` and
    `warmup_frame_sizes` only in a comment: an empty list cannot be written there), and the parameter table of
    docs/node.md names each one."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    values = yaml.safe_load((root / "config/segmentation.yaml").read_text())["/**"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in node_parameters.PARAMETER_SPECS
                      if spec.name not in ("cameras", "warmup_frame_sizes")}
    node_doc = (root / "docs/node.md").read_text()
    table = node_doc.split("\n## Parameters", 1)[1].split("\n#", 1)[0]
    named = {name for line in table.splitlines() if line.startswith("| `")
             for name in re.findall(r"`(\w+)`", line.split("|")[1])}
    assert named == {spec.name for spec in node_parameters.PARAMETER_SPECS}
    assert node_parameters.SPECS_BY_NAME["max_input_pixels"].default == 4096 * 4096
    assert node_parameters.validate_value(node_parameters.SPECS_BY_NAME["max_input_pixels"], 16_000_000) is None
    assert node_parameters.validate_value(node_parameters.SPECS_BY_NAME["max_input_pixels"], 0) == (
        "parameter 'max_input_pixels' must be within 1..1073741824; got 0")
