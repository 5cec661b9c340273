"""launch/segment.launch.py, config/ and the package manifest, checked without ROS.

The launch file is loaded with stand-in `launch` / `launch_ros` modules that record what it builds;
test_launch_node.py runs it for real where ROS 2 is installed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bisenetv2_ros.ros import parameters as node_parameters

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "segment.launch.py"
EXPECTED_ARGUMENTS = ["image", "camera_info", "namespace", "params_file", "weights", "backend", "device", "precision",
                      "use_sim_time", "log_level", "rviz", "cameras", "camera_topics", "lifecycle", "depth_image",
                      "nav2"]


def load_launch_module():
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_is_python_with_generate_launch_description():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    top_level_imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert top_level_imports == [], "launch imports stay inside functions so the file loads without ROS"


def test_declared_arguments():
    module = load_launch_module()
    assert [name for name, _, _ in module.ARGUMENTS] == EXPECTED_ARGUMENTS
    defaults = {name: default for name, default, _ in module.ARGUMENTS}
    assert defaults["namespace"] == "segmentation" and defaults["image"] == "/camera/image_raw"
    for name in module.OVERRIDES:
        assert defaults[name] == "", f"{name} must default to '' (= use params_file)"


@pytest.mark.parametrize("values,expected", [
    ({}, {"use_sim_time": False}),
    ({"weights": "", "backend": " ", "device": "", "precision": ""}, {"use_sim_time": False}),
    ({"weights": " /m/model.pt ", "device": "cuda:0", "use_sim_time": "True"},
     {"weights": "/m/model.pt", "device": "cuda:0", "use_sim_time": True}),
    ({"backend": "onnxruntime", "precision": "fp16", "rviz": "true"},
     {"backend": "onnxruntime", "precision": "fp16", "use_sim_time": False, "publish_overlay": True}),
    ({"cameras": " front, left,,right "}, {"use_sim_time": False, "cameras": ["front", "left", "right"]}),
    ({"cameras": " , "}, {"use_sim_time": False}),
    ({"nav2": "true"}, {"use_sim_time": False, "publish_confidence": True}),
    ({"nav2": "false"}, {"use_sim_time": False}),
    ({"depth_image": " /cam/depth/image "}, {"use_sim_time": False, "publish_points": True}),
])
def test_parameter_overrides_only_when_given(values, expected):
    assert load_launch_module().parameter_overrides(values) == expected


def test_override_names_are_node_parameters():
    module = load_launch_module()
    assert set(module.OVERRIDES) <= set(node_parameters.SPECS_BY_NAME)


# --- the launch description, built with recording stand-ins for launch / launch_ros ----------------


class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class FakeLaunchConfiguration(Recorder):
    def perform(self, context):
        return context[self.args[0]]


class FakeLifecycleNode(Recorder):
    pass


class FakeFindPackageShare(Recorder):
    def perform(self, context):
        return f"/opt/ros/share/{self.args[0]}"


@pytest.fixture
def fake_launch(monkeypatch):
    modules = {
        "launch": dict(LaunchDescription=Recorder),
        "launch.actions": dict(DeclareLaunchArgument=Recorder, OpaqueFunction=Recorder),
        "launch.substitutions": dict(LaunchConfiguration=FakeLaunchConfiguration, PathJoinSubstitution=Recorder),
        "launch_ros": {},
        "launch_ros.actions": dict(Node=Recorder, LifecycleNode=FakeLifecycleNode),
        "launch_ros.substitutions": dict(FindPackageShare=FakeFindPackageShare),
        "launch_ros.parameter_descriptions": dict(ParameterValue=Recorder),
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


def launch_context(**given):
    module = load_launch_module()
    context = {name: default for name, default, _ in module.ARGUMENTS}
    context["params_file"] = "/opt/ros/share/bisenetv2_ros/config/segmentation.yaml"
    context.update(given)
    return module, context


def test_description_declares_arguments_then_opaque_function(fake_launch):
    module = load_launch_module()
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = [e.args[0] for e in entities[:-1]]
    assert declared == EXPECTED_ARGUMENTS
    params_default = entities[EXPECTED_ARGUMENTS.index("params_file")].kwargs["default_value"]
    assert [getattr(p, "args", (p,))[0] for p in params_default.args[0]][1:] == ["config", "segmentation.yaml"]
    assert entities[-1].kwargs["function"] is module._nodes


def test_node_action_with_defaults(fake_launch):
    module, context = launch_context()
    (node,) = module._nodes(context)
    kwargs = node.kwargs
    assert (kwargs["package"], kwargs["executable"], kwargs["name"]) == ("bisenetv2_ros", "segmentation_node",
                                                                         "segmentation_node")
    assert kwargs["namespace"] == "/segmentation"
    params_file, overrides = kwargs["parameters"]
    assert params_file == context["params_file"]
    assert {name: value.args[0] for name, value in overrides.items()} == {"use_sim_time": False}
    assert dict(kwargs["remappings"]) == {"image": "/camera/image_raw", "image/compressed": "/camera/image_raw/compressed",
                                          "input_camera_info": "/camera/camera_info"}
    assert kwargs["arguments"] == ["--ros-args", "--log-level", "info"]


def test_node_action_with_arguments_and_rviz(fake_launch):
    module, context = launch_context(image="/cam/left/image", camera_info="/cam/left/info", namespace="seg2",
                                     weights="2024", device="cuda:1", rviz="true", log_level="debug")
    node, rviz = module._nodes(context)
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == context["params_file"], "the file comes first so the arguments override it"
    typed = {name: (value.args[0], value.kwargs["value_type"]) for name, value in overrides.items()}
    assert typed == {"weights": ("2024", str), "device": ("cuda:1", str), "use_sim_time": (False, bool),
                     "publish_overlay": (True, bool)}
    assert node.kwargs["namespace"] == "/seg2"
    assert ("image", "/cam/left/image") in node.kwargs["remappings"]
    assert node.kwargs["arguments"][-1] == "debug"
    assert rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["arguments"] == ["-d", "/opt/ros/share/bisenetv2_ros/config/segmentation.rviz"]
    assert ("/segmentation/color", "/seg2/color") in rviz.kwargs["remappings"]


def test_several_cameras_with_driver_topics(fake_launch):
    from typing import List

    module, context = launch_context(cameras="front,left", camera_topics="/sensing/front/image_raw, /cam_l/image")
    (node,) = module._nodes(context)
    assert type(node) is Recorder, "the plain node stays the default"
    _, overrides = node.kwargs["parameters"]
    assert (overrides["cameras"].args[0], overrides["cameras"].kwargs["value_type"]) == (["front", "left"], List[str])
    assert node.kwargs["remappings"] == [
        ("front/image", "/sensing/front/image_raw"), ("front/image/compressed", "/sensing/front/image_raw/compressed"),
        ("front/input_camera_info", "/sensing/front/camera_info"),
        ("left/image", "/cam_l/image"), ("left/image/compressed", "/cam_l/image/compressed"),
        ("left/input_camera_info", "/cam_l/camera_info")]


def test_several_cameras_without_driver_topics_keep_their_own_inputs(fake_launch):
    module, context = launch_context(cameras="front,left,right", image="/ignored/image")
    (node,) = module._nodes(context)
    assert node.kwargs["remappings"] == [], "inputs stay /segmentation/<camera>/image"
    assert node.kwargs["namespace"] == "/segmentation"


def test_camera_topics_must_match_cameras(fake_launch):
    module, context = launch_context(cameras="front,left", camera_topics="/only/one")
    with pytest.raises(ValueError, match=r"camera_topics names 1 topic\(s\) for 2 camera\(s\) \(front, left\)"):
        module._nodes(context)


def test_nav2_option_remaps_labels_to_the_layers_mask(fake_launch):
    module, context = launch_context(nav2="true")
    (node,) = module._nodes(context)
    assert ("labels", "mask") in node.kwargs["remappings"]
    assert ("image", "/camera/image_raw") in node.kwargs["remappings"]
    _, overrides = node.kwargs["parameters"]
    assert (overrides["publish_confidence"].args[0], overrides["publish_confidence"].kwargs["value_type"]) == (True, bool)
    module, context = launch_context(nav2="true", depth_image="/cam/aligned_depth/image_raw")
    (node,) = module._nodes(context)
    remappings = dict(node.kwargs["remappings"])
    assert (remappings["depth"], remappings["depth_camera_info"]) == ("/cam/aligned_depth/image_raw",
                                                                      "/cam/aligned_depth/camera_info")
    assert node.kwargs["parameters"][1]["publish_points"].args[0] is True
    module, context = launch_context(nav2="true", cameras="front,left")
    (node,) = module._nodes(context)
    assert node.kwargs["remappings"] == [("front/labels", "front/mask"), ("left/labels", "left/mask")]
    # The example configuration reads exactly these names under the default namespace.
    layer = yaml.safe_load((ROOT / "config" / "nav2_semantic_layer.yaml").read_text())
    layer = layer["local_costmap"]["local_costmap"]["ros__parameters"]["semantic_segmentation_layer"]
    for source in ("camvid", "cityscapes"):
        topics = {key: layer[source][key] for key in ("segmentation_topic", "confidence_topic", "labels_topic")}
        assert topics == {"segmentation_topic": "/segmentation/mask", "confidence_topic": "/segmentation/confidence",
                          "labels_topic": "/segmentation/label_info"}


def test_lifecycle_node_action(fake_launch):
    module, context = launch_context(lifecycle="true", log_level="warn")
    (node,) = module._nodes(context)
    assert type(node) is FakeLifecycleNode
    assert (node.kwargs["name"], node.kwargs["namespace"], node.kwargs["executable"]) == (
        "segmentation_node", "/segmentation", "segmentation_node")
    assert node.kwargs["arguments"] == ["--lifecycle", "--ros-args", "--log-level", "warn"]
    assert ("image", "/camera/image_raw") in node.kwargs["remappings"]


# --- config and manifest -----------------------------------------------------------------------------


def test_params_file_matches_node_parameters():
    data = yaml.safe_load((ROOT / "config" / "segmentation.yaml").read_text())
    parameters = data["/**"]["ros__parameters"]
    # The lists are only comments there: an empty YAML list has no element type for ROS
    assert set(parameters) == set(node_parameters.SPECS_BY_NAME) - {"cameras", "warmup_frame_sizes"}
    assert "#   cameras: [front, left, right]" in (ROOT / "config" / "segmentation.yaml").read_text()
    assert '#   warmup_frame_sizes: ["480x640"]' in (ROOT / "config" / "segmentation.yaml").read_text()
    settings = node_parameters.NodeSettings.from_values(parameters)
    for spec in node_parameters.PARAMETER_SPECS:
        if spec.name not in parameters:
            continue
        assert type(parameters[spec.name]) is spec.type, f"{spec.name} has the wrong YAML type for ROS"
        assert getattr(settings, spec.name) == spec.default, f"config default of {spec.name} differs from the node's"


def test_rviz_config_shows_color_and_overlay():
    data = yaml.safe_load((ROOT / "config" / "segmentation.rviz").read_text())
    displays = data["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert topics == {"/segmentation/color", "/segmentation/overlay"}
    module = load_launch_module()
    assert {t.rsplit("/", 1)[1] for t in topics} <= set(module.RVIZ_TOPICS)


def test_cmake_generates_every_message():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"(msg/[A-Za-z0-9]+\.msg)"', cmake))
    present = {f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")}
    assert listed == present


def test_package_xml_exec_depends_cover_node_imports():
    tree = ast.parse((ROOT / "bisenetv2_ros" / "ros" / "node.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    ros_packages = imported - {"__future__", "sys", "time", "bisenetv2_ros"}
    manifest = ET.parse(ROOT / "package.xml").getroot()
    depends = {e.text for e in manifest if e.tag in ("depend", "exec_depend")}
    assert ros_packages <= depends, f"missing exec_depend: {ros_packages - depends}"
    assert "cv_bridge" not in depends and "cv_bridge" not in imported
