"""With ROS 2: a node given missing weights ends with exit code 1 and one clear line, no traceback.

Needs ROS 2 (Humble or Jazzy) sourced and bisenetv2_ros built with colcon (see test_launch_node.py).
"""

from __future__ import annotations

import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="ROS 2 launch_testing is not installed: source a ROS 2 Humble/Jazzy setup to run this")
pytest.importorskip("launch_ros", reason="launch_ros is not installed: source a ROS 2 Humble/Jazzy setup")

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory  # noqa: E402

try:
    get_package_share_directory("bisenetv2_ros")
except PackageNotFoundError:
    pytest.skip("bisenetv2_ros is not installed in the sourced workspace: run `colcon build` first",
                allow_module_level=True)

import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

import launch  # noqa: E402

MISSING_WEIGHTS = "/nonexistent/bisenetv2_missing.pt"


@pytest.mark.launch_test
def generate_test_description():
    node = launch_ros.actions.Node(
        package="bisenetv2_ros",
        executable="segmentation_node",
        name="segmentation_node",
        namespace="segmentation_startup_error_test",
        parameters=[{"weights": MISSING_WEIGHTS, "device": "cpu"}],
        additional_env={"RCUTILS_LOGGING_USE_STDOUT": "1", "PYTHONUNBUFFERED": "1"},
        output="screen",
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"node": node}


class TestStartupError(unittest.TestCase):
    def test_node_exits_by_itself(self, proc_info, node):
        proc_info.assertWaitForShutdown(process=node, timeout=120)


@launch_testing.post_shutdown_test()
class TestStartupErrorOutput(unittest.TestCase):
    def test_exit_code_and_one_line(self, proc_info, proc_output, node):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[1], process=node)
        launch_testing.asserts.assertInStdout(proc_output, "cannot start the segmentation node", node)
        launch_testing.asserts.assertInStdout(proc_output, MISSING_WEIGHTS, node)
        text = "".join(output.text.decode() for output in proc_output[node])
        self.assertNotIn("Traceback", text)
