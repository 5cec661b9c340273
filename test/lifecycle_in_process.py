"""The managed node in the test's own process, for test_lifecycle_ros.py: ``InProcess`` (the node and a
probe node on one executor, spun by the test) and, run as a script, the configure/activate/deactivate/
cleanup cycles in a process of their own: `python test/lifecycle_in_process.py WEIGHTS CYCLES` prints one
JSON line of what the test checks (threads, file descriptors, node entities, models still alive, RSS).

A fresh process, because inside the whole suite's pytest process (700 MiB, many modules' objects) each
cleanup's full garbage collection cost ~1.9 s instead of ~0.5, and the allocator's retained pages read
as growth that depended on what ran before. Here both depend only on the node.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time
import weakref

import torch

torch.set_num_threads(1)  # as conftest.py does for the suite: tiny models, no synchronisation cost

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_support import bgr_image, spin_until, use_installed_messages  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

use_installed_messages()  # a colcon install's generated messages, when the source tree shadows them

from bisenetv2_ros.ros.node import LifecycleSegmentationNode  # noqa: E402

RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
NODE_ARGS = {"device": "cpu", "backend": "torch"}
SUCCESS = TransitionCallbackReturn.SUCCESS
WARMUP_CYCLES = 5  # first-time imports, allocator pools, DDS discovery


class InProcess:
    """The managed node and a probe node on one executor, spun by the test."""

    def __init__(self, namespace: str, **values) -> None:
        overrides = [Parameter(name, value=value) for name, value in {**NODE_ARGS, **values}.items()]
        self.node = LifecycleSegmentationNode(namespace=namespace, parameter_overrides=overrides)
        self.probe = rclpy.create_node(f"probe_{namespace.strip('/')}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.path = f"{namespace}/segmentation_node"
        self.diagnostics: list = []
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, RELIABLE)
        self._clients: dict = {}

    def spin_until(self, condition, timeout=30.0, step=None) -> bool:
        return spin_until(rclpy, self.executor, condition, timeout, step)

    def call(self, srv_type, suffix: str, request):
        client = self._clients.get(suffix) or self._clients.setdefault(
            suffix, self.probe.create_client(srv_type, f"{self.path}/{suffix}"))
        assert self.spin_until(client.service_is_ready, timeout=10), suffix
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout=120), f"no answer from {suffix}"
        return future.result()

    def change(self, transition_id: int) -> bool:
        return self.call(ChangeState, "change_state", ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self.call(GetState, "get_state", GetState.Request()).current_state.label

    def set(self, name: str, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, "set_parameters", request).results[0]

    def lifecycle_statuses(self) -> list:
        self.spin_until(lambda: False, timeout=0.3)  # what is on its way
        name = f"{self.path}: lifecycle"
        return [status for array in self.diagnostics for status in array.status if status.name == name]

    def close(self) -> None:
        self.node.close()
        self.executor.shutdown()
        self.probe.destroy_node()
        self.node.destroy_node()


def process_resources() -> dict:
    # Freed heap handed back first (glibc), so that RSS counts what is still held.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {"rss_mib": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, "threads": len(os.listdir("/proc/self/task")),
            "fds": len(os.listdir("/proc/self/fd"))}


def node_entities(node) -> dict:
    return {"publishers": len(list(node.publishers)), "subscriptions": len(list(node.subscriptions)),
            "timers": len(list(node.timers)), "services": len(list(node.services)),
            "managed": len(node._managed_entities)}


def _succeeds(result, transition: str) -> None:
    assert result == SUCCESS, f"{transition} failed"


def run_cycles(weights: str, cycles: int) -> dict:
    managed = InProcess("/cycles", weights=weights)
    node = managed.node
    labels = [0]  # a count: messages kept here would read as the node's memory growth
    managed.probe.create_subscription(Image, "/cycles/labels", lambda msg: labels.__setitem__(0, labels[0] + 1),
                                      RELIABLE)
    camera = managed.probe.create_publisher(Image, "/cycles/image", RELIABLE)
    sent, last_sent = [0], [0.0]

    def send():
        # as a 20 Hz camera: a frame on every spin (thousands a second) kept the one-thread executor busy
        # with the node's input, so the probe's labels callback waited 0.2-4 s for its turn
        if time.monotonic() - last_sent[0] < 0.05:
            return
        last_sent[0] = time.monotonic()
        sent[0] += 1
        camera.publish(bgr_image(Image, Header, Time, sec=sent[0], frame_id="cycle_cam"))

    backends: list = []
    phases: dict[str, list[float]] = {"configure": [], "activate to output": [], "deactivate": [], "cleanup": []}

    def timed(phase: str, step) -> None:
        started = time.monotonic()
        step()
        phases[phase].append(time.monotonic() - started)

    def activate_to_output() -> None:
        seen = labels[0]
        assert node.trigger_activate() == SUCCESS, "activate failed"
        assert managed.spin_until(lambda: labels[0] > seen, timeout=30, step=send), "no output after activate"

    def cycle() -> None:
        timed("configure", lambda: _succeeds(node.trigger_configure(), "configure"))
        timed("activate to output", activate_to_output)
        managed.diagnostics.clear()
        timed("deactivate", lambda: _succeeds(node.trigger_deactivate(), "deactivate"))
        backends.append(weakref.ref(node.segmenter.backend))
        timed("cleanup", lambda: _succeeds(node.trigger_cleanup(), "cleanup"))

    try:
        for _ in range(WARMUP_CYCLES):
            cycle()
        before, entities_before = process_resources(), node_entities(node)
        for times in phases.values():
            times.clear()
        samples, started = [], time.monotonic()
        for index in range(cycles):
            cycle()
            if index % 20 == 19:
                samples.append(process_resources())
        elapsed = time.monotonic() - started
        after = process_resources()
        return {"cycles": cycles, "seconds": elapsed, "before": before, "after": after, "samples": samples,
                "entities_before": entities_before, "entities_after": node_entities(node),
                "models_alive": sum(ref() is not None for ref in backends), "models_made": len(backends),
                "median_s": {phase: round(statistics.median(times), 4) for phase, times in phases.items()}}
    finally:
        managed.close()


def main(argv: list[str]) -> int:
    weights, cycles = argv[0], int(argv[1])
    rclpy.init()
    try:
        report = run_cycles(weights, cycles)
    finally:
        rclpy.try_shutdown()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
