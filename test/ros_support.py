"""Helpers for the tests that need rclpy: a ROS 2 install (Humble or Jazzy) or the Jazzy wheels that
scripts/setup_ros_wheels.sh adds to the test venv. Imported only by those tests.

- ``require_ros()``: the ROS layer or a skip, and under CI=true a failure instead of a skip.
- ``NodeProcess``: the segmentation node as its own process (``python -m bisenetv2_ros.ros.node``), with
  parameters and remappings; signals, exit status, output.
- ``Probe``: a node spinning in a background thread that collects messages, publishes, waits for
  matched endpoints and calls the node's parameter services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_INTERFACES = ("rclpy", "sensor_msgs.msg", "std_msgs.msg", "diagnostic_msgs.msg", "vision_msgs.msg",
                  "rcl_interfaces.srv")


def require_ros() -> None:
    """Imports rclpy, the message packages and ``bisenetv2_ros.msg``; skips the calling module if one is
    missing, except under CI (CI=true), where a missing ROS layer fails loudly: CI sets it up with
    scripts/setup_ros_wheels.sh and no rclpy test may silently stop running."""
    import importlib

    try:
        for name in ROS_INTERFACES:
            importlib.import_module(name)
        use_installed_messages()
    except Exception as error:  # noqa: BLE001 - ImportError, or a broken build's OSError
        reason = (f"the ROS 2 layer is missing ({type(error).__name__}: {error}); run scripts/setup_ros_wheels.sh "
                  "or source a ROS 2 workspace with bisenetv2_ros built")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the rclpy tests: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


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
    channels = {"bgr8": 3, "32FC1": 4}[encoding]
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


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class NodeProcess:
    """``python -m MODULE [ARGUMENTS] --ros-args ...`` (the segmentation node by default); stdout and stderr
    go to ``log_path``. ``parameters`` become ``-p name:=value``, ``remappings`` ``-r from:=to``."""

    def __init__(self, log_path: Path, *, namespace: str = "/segmentation", parameters: dict | None = None,
                 remappings: dict | None = None, env: dict | None = None, module: str = "bisenetv2_ros.ros.node",
                 extra_ros_args: list[str] | None = None, arguments: list[str] | None = None) -> None:
        self.namespace = namespace
        args = [sys.executable, "-m", module, *(arguments or []), "--ros-args", "-r", f"__ns:={namespace}"]
        for key, value in (remappings or {}).items():
            args += ["-r", f"{key}:={value}"]
        for key, value in (parameters or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        self.args = args + list(extra_ros_args or [])
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_output(self, text: str, timeout: float = 120.0) -> bool:
        """True once ``text`` appears in the output; False on timeout or when the process ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if not self.running():
                return text in self.output
            time.sleep(0.1)
        return False

    def send_signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.process.poll() is not None:
                self._log.close()

    def stop(self, number: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int | None, float]:
        """Sends ``number``; (exit status or None, seconds from the signal to the exit)."""
        start = time.monotonic()
        self.send_signal(number)
        status = self.wait(timeout)
        return status, time.monotonic() - start

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(10)
        self._log.close()


class Probe:
    """A test node spinning in its own thread: collects messages, publishes, calls services."""

    def __init__(self, name: str = "bisenetv2_test_probe") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="probe-spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def collect(self, msg_type, topic: str, qos, on_message: Callable[[Any], None] | None = None) -> list:
        """A list that receives every message on ``topic``; ``on_message(msg)`` is also called."""
        received: list = []

        def callback(msg) -> None:
            received.append(msg)
            if on_message is not None:
                on_message(msg)

        self.node.create_subscription(msg_type, topic, callback, qos)
        return received

    def publisher(self, msg_type, topic: str, qos):
        return self.node.create_publisher(msg_type, topic, qos)

    @staticmethod
    def wait_for(condition: Callable[[], bool], timeout: float, step: Callable[[], None] | None = None,
                 interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if step is not None:
                step()
            time.sleep(interval)
        return condition()

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 60.0) -> bool:
        """True once ``publisher`` is matched with at least ``count`` subscriptions."""
        return self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 60.0) -> bool:
        return self.wait_for(lambda: self.node.count_publishers(topic) >= count, timeout)

    def call(self, srv_type, service: str, request, timeout: float = 30.0):
        """Calls ``service`` and returns the response (None on timeout)."""
        client = self.node.create_client(srv_type, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            self.wait_for(future.done, timeout)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, node_name: str, name: str, value):
        """``SetParametersResult`` of setting one parameter of the node ``node_name`` (fully qualified)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        response = self.call(SetParameters, f"{node_name}/set_parameters", request)
        return None if response is None else response.results[0]

    def get_parameter(self, node_name: str, name: str):
        """The Python value of one parameter of the node ``node_name``."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, f"{node_name}/get_parameters", GetParameters.Request(names=[name]))
        return None if response is None else parameter_value_to_python(response.values[0])

    def describe_parameter(self, node_name: str, name: str):
        from rcl_interfaces.srv import DescribeParameters

        response = self.call(DescribeParameters, f"{node_name}/describe_parameters",
                             DescribeParameters.Request(names=[name]))
        return None if response is None else response.descriptors[0]

    def close(self) -> None:
        self.rclpy.try_shutdown(context=self.context)
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
