#!/usr/bin/env bash
# Sets up .venv (CPU PyTorch 2.13.0, the test and openvino extras, ROS 2 Jazzy wheels) if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test,openvino]'
# ROS 2 Jazzy from PyPI wheels + this package's messages, so the rclpy tests run (cached in .venv).
bash scripts/setup_ros_wheels.sh .venv
exec .venv/bin/python -m pytest "$@"
