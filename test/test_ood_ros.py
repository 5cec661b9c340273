"""The out-of-distribution alarm in the rclpy node: `info` carries ood_score / ood / ood_calibrated for
every frame, and the `out-of-distribution` diagnostics entry goes WARN, then ERROR, then back to OK
on a scripted frame sequence. Real rclpy (venv wheels or a ROS 2 install), in-process."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest
from ros_support import require_ros

require_ros()

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_node_ros import RELIABLE, spin_both  # noqa: E402
from test_ood import write_frames  # noqa: E402

from bisenetv2_ros.inference.ood_calibration import calibrate_ood_file  # noqa: E402
from bisenetv2_ros.msg import SegmentationInfo  # noqa: E402
from bisenetv2_ros.ros.node import SegmentationNode  # noqa: E402

OK, WARN, ERROR = (int.from_bytes(level, "little") for level in (DiagnosticStatus.OK, DiagnosticStatus.WARN,
                                                                  DiagnosticStatus.ERROR))


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_diagnostics_go_warn_error_and_back_to_ok(ros, tiny_weights, tmp_path):
    weights = tmp_path / "tiny_ood.pt"
    shutil.copyfile(tiny_weights, weights)
    folder = write_frames(tmp_path / "camera", 12)
    calibrate_ood_file(weights, folder)
    # the held-out (odd) frames set the threshold, so each of them passes it
    good = [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))[1::2]]
    black = np.zeros_like(good[0])
    node = SegmentationNode(namespace="/ood_test", parameter_overrides=[Parameter(k, value=v) for k, v in {
        "weights": str(weights), "device": "cpu", "backend": "torch", "precision": "fp32", "ood_window": 10,
        "ood_warn_share": 0.3, "ood_error_seconds": 1.5}.items()])
    probe = rclpy.create_node("ood_test_probe")
    infos, levels = [], []

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.endswith("out-of-distribution"):
                levels.append((int.from_bytes(status.level, "little"), status.message))

    probe.create_subscription(SegmentationInfo, "/ood_test/info", infos.append, RELIABLE)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publisher = probe.create_publisher(Image, "/ood_test/image", RELIABLE)
    sent = [0]

    def send(frame):
        sent[0] += 1
        publisher.publish(Image(header=Header(stamp=Time(sec=sent[0]), frame_id="cam"), height=frame.shape[0],
                                width=frame.shape[1], encoding="bgr8", is_bigendian=0, step=frame.shape[1] * 3,
                                data=frame.tobytes()))

    def phase(frames, until, timeout=30.0):
        """Sends ``frames`` in turn, each once the node has published the previous one's info (the node
        keeps only the newest frame: sending faster would let it pick every other one)."""
        cycle = iter(range(10**6))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until():
                return True
            count = len(infos)
            send(frames[next(cycle) % len(frames)])
            spin_both(node, probe, lambda: len(infos) > count, timeout=2.0)
        return until()

    try:
        assert phase(good, lambda: len(infos) >= 3 and levels and levels[-1][0] == OK)
        assert all(i.ood_calibrated and not i.ood and 0.0 < i.ood_score for i in infos)
        # every other frame black: WARN (half the window flagged), never a second of flagged frames
        assert phase([good[0], black, good[1], black], lambda: levels[-1][0] == WARN)
        assert ERROR not in [level for level, _ in levels]
        assert any(i.ood for i in infos) and "unlike the training frames" in levels[-1][1]
        # only black frames: ERROR, saying why
        assert phase([black], lambda: levels[-1][0] == ERROR)
        assert "camera unusable" in levels[-1][1] and "black" in levels[-1][1]
        # good frames again: back to OK, not before ERROR held on through the first good frames
        count = len(levels)
        assert phase(good, lambda: levels[-1][0] == OK)
        assert levels[count][0] == ERROR
    finally:
        node.close()
        node.destroy_node()
        probe.destroy_node()
