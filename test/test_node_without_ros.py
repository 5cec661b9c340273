"""The node as a program on a machine without ROS (issue 32): ``--help`` prints the parameters with exit 0
before anything of ROS is imported; any other start names the missing module and how to get it in one
line (exit 1), never a traceback. ROS is made unimportable in the child process by a sitecustomize on
PYTHONPATH that fails those imports as a missing package does (and records each attempt)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bisenetv2_ros.ros import node_program
from bisenetv2_ros.ros.node_program import missing_module_line, ros_imports

REPO = Path(__file__).resolve().parents[1]
ROS = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "rcl_interfaces", "vision_msgs", "bisenetv2_ros.msg")
# torch blocked too where the program must answer before loading a model: --help and a refused start take
# a fraction of a second instead of torch's 2 s import (ros/parameters.py takes the default weights'
# name from conventions.py, not from weights/).
ROS_AND_TORCH = (*ROS, "torch")
BLOCKER = """
import os, sys

BLOCKED = os.environ["BLOCK_MODULES"].split(",")


class MissingModules:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            with open(os.environ["BLOCK_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, MissingModules())
"""


def run_without(tmp_path: Path, blocked: tuple[str, ...], *args: str) -> tuple[subprocess.CompletedProcess, list]:
    """Runs ``python ARGS`` with ``blocked`` unimportable; (the result, the blocked imports it attempted)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "attempts.log"
    log.write_text("")
    env = {**os.environ, "BLOCK_MODULES": ",".join(blocked), "BLOCK_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(shim), str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return result, log.read_text().split()


def test_the_blocker_really_blocks(tmp_path):
    result, attempts = run_without(tmp_path, ROS, "-c", "import rclpy")
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'rclpy'" in result.stderr
    assert attempts == ["rclpy"]


@pytest.mark.parametrize("program", [["-m", "bisenetv2_ros.ros.node"], ["scripts/segmentation_node"]])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_parameters_without_ros_and_imports_none_of_it(tmp_path, program, flag):
    result, attempts = run_without(tmp_path, ROS_AND_TORCH, *program, flag, "--lifecycle")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ros2 run bisenetv2_ros segmentation_node [--lifecycle]")
    assert "  max_batch (int, default 0, 0 .. 64, runtime)" in result.stdout
    assert result.stderr == ""
    assert attempts == []  # answered before the node's first ROS import


@pytest.mark.parametrize("args", [[], ["--lifecycle"], ["--ros-args", "-p", "device:=cpu"]])
def test_a_start_without_rclpy_is_one_line_naming_it_and_the_fix(tmp_path, args):
    result, attempts = run_without(tmp_path, ROS_AND_TORCH, "-m", "bisenetv2_ros.ros.node", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "segmentation_node: error: cannot import rclpy (No module named 'rclpy'): the node needs ROS 2: source a "
        f"ROS 2 Humble or Jazzy install built for this Python {sys.version_info.major}.{sys.version_info.minor} "
        "(source /opt/ros/jazzy/setup.bash), or, in a venv, run bash scripts/setup_ros_wheels.sh; the bisenetv2 CLI "
        "runs without ROS"]
    assert attempts == ["rclpy"]


def test_a_start_without_the_built_message_is_one_line_naming_it(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not installed (scripts/setup_ros_wheels.sh adds it)")
    pytest.importorskip("vision_msgs", reason="vision_msgs is not built (scripts/setup_ros_wheels.sh builds it)")
    result, attempts = run_without(tmp_path, ("bisenetv2_ros.msg",), "scripts/segmentation_node", "--lifecycle")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "segmentation_node: error: cannot import bisenetv2_ros.msg (No module named 'bisenetv2_ros.msg'): the "
        "package's message bisenetv2_ros/msg/SegmentationInfo is not built: colcon build --packages-select "
        "bisenetv2_ros, then source install/setup.bash (docs/node.md#build), or, in a venv, run bash "
        "scripts/setup_ros_wheels.sh"]
    assert attempts == ["bisenetv2_ros.msg"]


def test_bad_arguments_without_ros_are_refused_before_any_ros_import(tmp_path):
    result, attempts = run_without(tmp_path, ROS_AND_TORCH, "-m", "bisenetv2_ros.ros.node", "--bogus")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "segmentation_node: error: unknown arguments ['--bogus']; see --help (ROS arguments go after --ros-args)"]
    assert attempts == []


def test_the_deprecated_alias_behaves_the_same_without_ros(tmp_path):
    result, attempts = run_without(tmp_path, ROS_AND_TORCH, "-m", "bisenetv2_ros.node", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ros2 run bisenetv2_ros segmentation_node [--lifecycle]")
    assert result.stderr.startswith("python -m bisenetv2_ros.node is deprecated") and attempts == []
    result, attempts = run_without(tmp_path, ROS_AND_TORCH, "-m", "bisenetv2_ros.node")
    assert result.returncode == 1
    deprecation, error = result.stderr.splitlines()
    assert deprecation.startswith("python -m bisenetv2_ros.node is deprecated")
    assert error.startswith("segmentation_node: error: cannot import rclpy (No module named 'rclpy'): ")
    assert attempts == ["rclpy"]


def test_importing_the_node_as_a_library_still_raises_the_import_error(tmp_path):
    # a caller (a test, a launch helper) may want to catch it: only the program turns it into one line
    result, attempts = run_without(tmp_path, ROS, "-c", "import bisenetv2_ros.ros.node")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'rclpy'"
    assert attempts == ["rclpy"]


@pytest.mark.parametrize("name, expected", [
    ("rclpy._rclpy_pybind11", "cannot import rclpy._rclpy_pybind11 (No module named 'rclpy._rclpy_pybind11'): "
                              "the node needs ROS 2: "),
    ("sensor_msgs.msg", "cannot import sensor_msgs.msg (No module named 'sensor_msgs.msg'): the node needs ROS 2: "),
    ("vision_msgs", "cannot import vision_msgs (No module named 'vision_msgs'): install ros-$ROS_DISTRO-vision-msgs"),
    ("yaml", "cannot import yaml (No module named 'yaml'): install the node's dependencies (docs/node.md#build)"),
])
def test_each_missing_dependency_names_how_to_get_it(name, expected):
    line = missing_module_line(ModuleNotFoundError(f"No module named {name!r}", name=name))
    assert line.startswith(f"segmentation_node: error: {expected}")
    assert "\n" not in line


@pytest.mark.parametrize("name", ["bisenetv2_ros.ros.pipeline", "bisenetv2_ros", None])
def test_a_missing_module_of_our_own_keeps_its_traceback(name, capsys):
    error = ModuleNotFoundError("No module named 'x'", name=name)
    assert missing_module_line(error) is None
    with pytest.raises(ModuleNotFoundError) as raised, ros_imports(["segmentation_node"]):
        raise error
    assert raised.value is error and capsys.readouterr().err == ""


def test_as_a_program_the_guard_exits_1_with_the_line(capsys):
    with pytest.raises(SystemExit) as exited, ros_imports(["segmentation_node", "--lifecycle"]):
        raise ModuleNotFoundError("No module named 'rclpy'", name="rclpy")
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("segmentation_node: error: cannot import rclpy")


def test_the_entry_point_runs_the_node_module_as_main(monkeypatch):
    calls = []
    monkeypatch.setattr(node_program.runpy, "run_module", lambda *args, **kwargs: calls.append((args, kwargs)))
    node_program.run()
    assert calls == [(("bisenetv2_ros.ros.node",), {"run_name": "__main__", "alter_sys": True})]
