"""Helpers for the tests that need a ROS 2 install (Humble or Jazzy); imported only by them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def use_installed_messages() -> None:
    """Makes ``bisenetv2_ros.msg`` importable when the source tree shadows the installed package.

    pytest puts the repository first on sys.path, and the source package has no generated ``msg``
    subpackage; the colcon-installed one has. Its folder is added to the package's search path.
    """
    import bisenetv2_ros

    try:
        import bisenetv2_ros.msg  # noqa: F401
        return
    except ImportError:
        pass
    from ament_index_python.packages import get_package_prefix

    prefix = Path(get_package_prefix("bisenetv2_ros"))
    for candidate in sorted(prefix.glob("**/*-packages/bisenetv2_ros")):
        if (candidate / "msg").is_dir() and str(candidate) not in bisenetv2_ros.__path__:
            bisenetv2_ros.__path__.append(str(candidate))
    import bisenetv2_ros.msg  # noqa: F401,F811  (raises with a clear ImportError if still missing)


def bgr_image(image_type, header_type, time_type, *, sec: int, frame_id: str, height: int = 48, width: int = 64,
              encoding: str = "bgr8"):
    """An rclpy Image with random pixels; data filled with bytes (never an ndarray)."""
    channels = {"bgr8": 3, "mono16": 2}[encoding]
    pixels = np.random.default_rng(sec).integers(0, 256, height * width * channels, dtype=np.uint8)
    return image_type(header=header_type(stamp=time_type(sec=sec, nanosec=500), frame_id=frame_id),
                      height=height, width=width, encoding=encoding, is_bigendian=0, step=width * channels,
                      data=pixels.tobytes())


def spin_until(rclpy, executor_or_node, condition, timeout: float, step=None) -> bool:
    """Spins until ``condition()`` (calling ``step()`` between spins), True on success."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if step is not None:
            step()
        if hasattr(executor_or_node, "spin_once") and not hasattr(executor_or_node, "get_name"):
            executor_or_node.spin_once(timeout_sec=0.05)
        else:
            rclpy.spin_once(executor_or_node, timeout_sec=0.05)
    return condition()
