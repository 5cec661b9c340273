"""pip install path (without ROS). The ROS 2 build uses CMakeLists.txt; see README."""
from setuptools import setup

setup()
