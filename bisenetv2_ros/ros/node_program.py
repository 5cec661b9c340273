"""The node as a program, ROS-free: what is answered before rclpy is imported (issue 32).

``ros/node.py`` wraps its ROS imports in ``ros_imports``: run as a program (``python -m
bisenetv2_ros.ros.node``, ``ros2 run bisenetv2_ros segmentation_node`` through ``run``), ``--help`` and bad
arguments are answered before any ROS import, and a missing ROS 2 install, message package or unbuilt
``bisenetv2_ros/msg`` ends in one line naming the module and how to get it (exit 1), not a traceback.
Imported as a library, the node's imports fail as usual (a caller may want to catch them).
"""

from __future__ import annotations

import runpy
import sys
from contextlib import contextmanager

from .parameters import NODE_NAME, node_arguments

NODE_MODULE = "bisenetv2_ros.ros.node"
PACKAGE = NODE_MODULE.split(".")[0]
WHEELS_HINT = "or, in a venv, run bash scripts/setup_ros_wheels.sh"
# The ROS packages the node imports (top-level names), so a missing one is an install to fix, not a bug.
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "std_msgs", "sensor_msgs", "diagnostic_msgs", "builtin_interfaces",
                "rosidl_runtime_py", "rpyutils")


def missing_module_line(error: ModuleNotFoundError) -> str | None:
    """The one line for a module the node cannot import, or None when it is one of ours (a bug: traceback)."""
    name = error.name or ""
    top = name.split(".")[0]
    if name == f"{PACKAGE}.msg" or name.startswith(f"{PACKAGE}.msg."):
        how = (f"the package's message {PACKAGE}/msg/SegmentationInfo is not built: colcon build --packages-select "
               f"{PACKAGE}, then source install/setup.bash (docs/node.md#build), {WHEELS_HINT}")
    elif top == PACKAGE or not top:
        return None
    elif top in ROS_PACKAGES:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        how = (f"the node needs ROS 2: source a ROS 2 Humble or Jazzy install built for this Python {python} "
               f"(source /opt/ros/jazzy/setup.bash), {WHEELS_HINT}; the bisenetv2 CLI runs without ROS")
    elif top == "vision_msgs":
        how = (f"install ros-$ROS_DISTRO-vision-msgs (rosdep install --from-paths src --ignore-src -y, "
               f"docs/node.md#build), {WHEELS_HINT}")
    else:
        how = "install the node's dependencies (docs/node.md#build)"
    return f"{NODE_NAME}: error: cannot import {name} ({error}): {how}"


@contextmanager
def ros_imports(argv: list[str] | None):
    """Around the node's ROS imports; ``argv``: the program's arguments when run as a program, else None."""
    if argv is None:
        yield
        return
    _, exit_code = node_arguments(list(argv))  # --help and unknown arguments need no ROS
    if exit_code is not None:
        sys.exit(exit_code)
    try:
        yield
    except ModuleNotFoundError as error:
        line = missing_module_line(error)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """The process entry point (scripts/segmentation_node, the 0.1 alias): the node module as ``__main__``,
    exactly as ``python -m bisenetv2_ros.ros.node`` runs it."""
    runpy.run_module(NODE_MODULE, run_name="__main__", alter_sys=True)
