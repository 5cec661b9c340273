"""Shim for tools that still call setup.py; the metadata is in pyproject.toml. The ROS 2 build uses
CMakeLists.txt (see README)."""
from setuptools import setup

setup()
