"""The ROS 2 package files (package.xml, CMakeLists.txt, scripts/) and the ROS-free core.

ROS 2 cannot be installed here, so these check the build facts verified on a Jazzy install
(shared/ros2-api/jazzy-python-api.md, "Build facts") statically: what colcon would need to build
and install the package, and that everything but the node imports without ROS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bisenetv2_ros"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "vision_msgs", "diagnostic_msgs",
               "rcl_interfaces", "launch", "launch_ros", "cv_bridge", "rosidl_runtime_py", "message_filters")


@pytest.fixture(scope="module")
def manifest() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


@pytest.fixture(scope="module")
def cmake() -> str:
    """CMakeLists.txt without comments."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _calls(cmake: str, command: str) -> list[list[str]]:
    """Arguments of every ``command(...)`` call (no nested parentheses in our file)."""
    return [_args(body) for body in re.findall(rf"\b{command}\s*\(([^)]*)\)", cmake)]


def _args(body: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|[^\s"]+', body)]


def _tags(manifest: ET.Element, tag: str) -> list[str]:
    return [element.text.strip() for element in manifest.findall(tag)]


# --------------------------------------------------------------------------------------------
# package.xml


def test_manifest_format_and_build_type(manifest):
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == PACKAGE
    assert manifest.findtext("export/build_type") == "ament_cmake"
    assert "ament_cmake" in _tags(manifest, "buildtool_depend")


def test_manifest_generates_messages(manifest):
    assert "rosidl_default_generators" in _tags(manifest, "buildtool_depend")
    assert "rosidl_default_runtime" in _tags(manifest, "exec_depend")
    assert "rosidl_interface_packages" in _tags(manifest, "member_of_group")


def test_manifest_maintainer_email_is_accepted_by_catkin_pkg(manifest):
    maintainers = manifest.findall("maintainer")
    assert maintainers and all(m.get("email") == "dev@example.com" for m in maintainers)
    assert manifest.findtext("license")


def test_manifest_has_no_rosdep_keys_for_pip_packages(manifest):
    # PyTorch, ONNX Runtime and TensorRT come from pip (README, docs/node.md); rosdep has no usable keys for them.
    keys = [e.text.strip() for e in manifest.iter() if e.tag.endswith("depend") and e.text]
    assert keys
    for key in keys:
        assert not re.search(r"torch|tensorrt|onnx|pycuda", key), key


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_manifest_version_matches_pyproject(manifest, pyproject):
    assert pyproject["project"]["name"] == PACKAGE
    assert manifest.findtext("version") == pyproject["project"]["version"]
    assert not (ROOT / "setup.cfg").exists(), "metadata lives in pyproject.toml only"


def test_tqdm_is_a_runtime_dependency_everywhere(manifest, pyproject):
    # the CLI's progress bars import it: rosdep (package.xml) and pip (pyproject.toml) must both install it
    assert "python3-tqdm" in _tags(manifest, "exec_depend")
    assert "tqdm" in pyproject["project"]["dependencies"]


def test_rviz2_is_optional(manifest):
    # a hard dependency would pull a GUI onto headless robots; the launch file says to install it separately
    keys = [e.text.strip() for e in manifest.iter() if e.tag.endswith("depend") and e.text]
    assert "rviz2" not in keys
    launch = (ROOT / "launch" / "segment.launch.py").read_text()
    assert "rviz2 is not a dependency of this package: install it separately" in launch


# torch.onnx.export(dynamo=...) arrived in 2.5 (the ONNX exporter's maintainer in huggingface/optimum#2026:
# "PyTorch 2.5 introduces the torch.onnx.export(..., dynamo=True) option"); cli/export.py also passes
# optimize= and uses torch.export.Dim.DYNAMIC, both in 2.6.
DYNAMO_EXPORT_TORCH = (2, 5)


def _floor(requirement: str) -> tuple[int, ...]:
    match = re.fullmatch(r"torch\s*>=\s*(\d+)\.(\d+)(?:\.\d+)?", requirement.strip())
    assert match, f"torch needs a >= floor, got {requirement!r}"
    return int(match.group(1)), int(match.group(2))


def test_torch_floor_has_onnx_export_with_dynamo(pyproject):
    (requirement,) = [r for r in pyproject["project"]["dependencies"] if r.startswith("torch")]
    floor = _floor(requirement)
    assert floor >= DYNAMO_EXPORT_TORCH
    import torch

    installed = tuple(int(v) for v in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    assert installed >= floor
    import inspect

    assert "dynamo" in inspect.signature(torch.onnx.export).parameters
    code = (ROOT / PACKAGE / "inference" / "onnx_graph.py").read_text()  # the ONNX graph builder
    assert "dynamo=True" in code and "Dim.DYNAMIC" in code and floor >= (2, 6)


def test_pyproject_installs_the_cli_and_the_packaged_weights(pyproject):
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    assert pyproject["project"]["scripts"] == {"bisenetv2": "bisenetv2_ros.cli.commands:main"}
    assert pyproject["tool"]["setuptools"]["package-data"] == {PACKAGE: ["weights/*.pt"]}
    assert list((ROOT / PACKAGE / "weights").glob("*.pt")), "the embedded weights are missing"
    assert (ROOT / "setup.py").read_text().count("setup()") == 1  # the shim, no second copy of metadata


# --------------------------------------------------------------------------------------------
# CMakeLists.txt


def test_cmake_project_name(cmake):
    assert _calls(cmake, "project") == [[PACKAGE]]
    assert cmake.strip().splitlines()[-1].strip() == "ament_package()"


def test_every_message_is_generated(cmake):
    (call,) = _calls(cmake, "rosidl_generate_interfaces")
    assert call[0] == "${PROJECT_NAME}"
    listed = {a for a in call if a.endswith((".msg", ".srv", ".action"))}
    on_disk = {f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")}
    assert on_disk, "no message definitions found"
    assert listed == on_disk


def test_message_dependencies_are_declared(cmake, manifest):
    (call,) = _calls(cmake, "rosidl_generate_interfaces")
    dependencies = set(call[call.index("DEPENDENCIES") + 1:]) if "DEPENDENCIES" in call else set()
    used = set()
    for path in (ROOT / "msg").glob("*.msg"):
        for line in path.read_text().splitlines():
            field = line.split("#", 1)[0].split()
            if field and "/" in field[0]:
                used.add(field[0].split("/")[0])
    assert used <= dependencies, f"message types from {sorted(used - dependencies)} need DEPENDENCIES"
    declared = set(_tags(manifest, "depend")) | set(_tags(manifest, "build_depend"))
    for package in dependencies:
        assert package in declared, f"{package} is a message dependency but not a <depend> in package.xml"
        assert [package] in [c[:1] for c in _calls(cmake, "find_package")], f"find_package({package}) missing"


def test_python_package_is_installed_beside_the_generated_one(cmake):
    # A second ament_python_install_package() for the same name collides with rosidl's package.
    assert "ament_python_install_package" not in cmake
    assert ["ament_cmake_python", "REQUIRED"] in _calls(cmake, "find_package")  # defines PYTHON_INSTALL_DIR
    installs = _calls(cmake, "install")
    assert any(
        call[:2] == ["DIRECTORY", "${PROJECT_NAME}/"]
        and call[call.index("DESTINATION") + 1] == "${PYTHON_INSTALL_DIR}/${PROJECT_NAME}"
        for call in installs
    ), installs


def _installed_programs(cmake: str) -> list[str]:
    programs = []
    for call in _calls(cmake, "install"):
        if call[0] == "PROGRAMS":
            assert call[call.index("DESTINATION") + 1] == "lib/${PROJECT_NAME}"  # where `ros2 run` looks
            programs += call[1:call.index("DESTINATION")]
    return programs


def test_installed_programs_exist_and_are_executable(cmake):
    programs = _installed_programs(cmake)
    assert "scripts/segmentation_node" in programs and "scripts/bisenetv2" in programs
    for program in programs:
        path = ROOT / program
        assert path.is_file(), f"{program} is installed but does not exist"
        assert os.access(path, os.X_OK), f"{program} is not executable"


def test_every_python_script_is_installed(cmake):
    programs = set(_installed_programs(cmake))
    for path in (ROOT / "scripts").iterdir():
        if path.is_file() and path.read_text().startswith("#!/usr/bin/env python3"):
            assert f"scripts/{path.name}" in programs, f"scripts/{path.name} is not installed"


def test_scripts_are_executable_with_a_shebang():
    scripts = [p for p in (ROOT / "scripts").iterdir() if p.is_file()]
    assert scripts
    for path in scripts:
        assert os.access(path, os.X_OK), f"{path.name} is not executable"
        first_line = path.read_text().splitlines()[0]
        expected = "#!/usr/bin/env bash" if path.suffix == ".sh" else "#!/usr/bin/env python3"
        assert first_line == expected, f"{path.name} starts with {first_line!r}"


def test_launch_and_config_are_installed(cmake):
    shared = [call for call in _calls(cmake, "install")
              if call[0] == "DIRECTORY" and call[call.index("DESTINATION") + 1] == "share/${PROJECT_NAME}"]
    installed = {d.rstrip("/") for call in shared for d in call[1:call.index("DESTINATION")]}
    assert {"launch", "config"} <= installed


def test_installed_directories_exist(cmake):
    # install(DIRECTORY missing_dir ...) fails the colcon build.
    for call in _calls(cmake, "install"):
        if call[0] == "DIRECTORY":
            for directory in call[1:call.index("DESTINATION")]:
                directory = directory.replace("${PROJECT_NAME}", PACKAGE)
                assert (ROOT / directory).is_dir(), f"install(DIRECTORY {directory}) but it does not exist"


# --------------------------------------------------------------------------------------------
# The core imports without ROS

_BLOCK_ROS = f"""
import importlib.abc, sys

class BlockROS(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ROS_MODULES!r}:
            raise ImportError('ROS is not installed (blocked by the test): ' + name)
        return None

sys.meta_path.insert(0, BlockROS())
"""


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", _BLOCK_ROS + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_blocker_really_blocks_ros():
    result = _run_python("import rclpy")
    assert result.returncode != 0 and "blocked by the test" in result.stderr


@pytest.fixture(scope="module")
def ros_free_imports() -> dict:
    """Imports the core, then every other module but the node, in one subprocess with ROS blocked."""
    # every module of every subpackage but the rclpy ones (ros/node.py and its 0.1 alias) and rosidl's msg
    names = (".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in (ROOT / PACKAGE).rglob("*.py"))
    others = sorted(n for n in names if n not in (PACKAGE, f"{PACKAGE}.node", f"{PACKAGE}.ros.node")
                    and not n.startswith(f"{PACKAGE}.msg"))
    result = _run_python(
        "import importlib, json\n"
        "def loaded(names):\n"
        "    return sorted(m for m in sys.modules if m.split('.')[0] in names)\n"
        "import bisenetv2_ros.models.bisenetv2, bisenetv2_ros.weights.checkpoint, bisenetv2_ros.inference.segmenter, "
        "bisenetv2_ros.classes, bisenetv2_ros.cli.report\n"
        f"core = {{'ros': loaded({ROS_MODULES!r}), "
        "'heavy': loaded(('tensorrt', 'onnxruntime', 'rosbags', 'torchvision'))}\n"
        f"for name in {others!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps({{'core': core, 'all': {{'ros': loaded({ROS_MODULES!r})}}, 'modules': {others!r}}}))\n"
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_imports_without_ros(ros_free_imports):
    assert ros_free_imports["core"] == {"ros": [], "heavy": []}


def test_every_module_but_the_node_imports_without_ros(ros_free_imports):
    # ros/node.py is the only module that may import rclpy (thin ROS layer); everything else is ROS-free.
    assert {f"{PACKAGE}.cli.report", f"{PACKAGE}.ros.pipeline", f"{PACKAGE}.inference.backends"} <= set(
        ros_free_imports["modules"])
    assert ros_free_imports["all"]["ros"] == []


def test_package_init_imports_nothing_heavy():
    result = _run_python(f"import {PACKAGE}\nprint('TORCH', 'torch' in sys.modules, 'numpy' in sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert "TORCH False False" in result.stdout


# --------------------------------------------------------------------------------------------
# The ament install itself: scripts/setup_ros_wheels.sh builds and installs this CMakeLists.txt with
# the Jazzy ament/rosidl wheels (the Python part into .venv/ros-build/python, lib/ and share/ into .venv)


def _python_files(package: Path) -> set[str]:
    return {str(p.relative_to(package)) for p in package.rglob("*.py")
            if not {"msg", "__pycache__"} & set(p.relative_to(package).parts)}


def test_the_ament_install_holds_every_module_and_its_entry_points_start():
    from ros_support import require_ros

    require_ros()  # the same wheels build the install; skipped (failed under CI) without them
    prefix = Path(sys.prefix)
    installed = prefix / "ros-build" / "python" / PACKAGE
    if not installed.is_dir():
        pytest.fail(f"no ament install at {installed}: run bash scripts/setup_ros_wheels.sh", pytrace=False)
    assert _python_files(installed) == _python_files(ROOT / PACKAGE)
    weights = "weights/bisenetv2_camvid.pt"
    assert (installed / weights).stat().st_size == (ROOT / PACKAGE / weights).stat().st_size
    assert {"segment.launch.py"} <= {p.name for p in (prefix / "share" / PACKAGE / "launch").iterdir()}
    env = {**os.environ, "PYTHONPATH": str(installed.parent)}  # the installed package, as `ros2 run` sees it
    for script, usage in (("segmentation_node", "usage: ros2 run bisenetv2_ros segmentation_node"),
                          ("bisenetv2", "usage: bisenetv2")):
        result = subprocess.run([sys.executable, str(prefix / "lib" / PACKAGE / script), "--help"], env=env,
                                cwd=prefix, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(usage), script
