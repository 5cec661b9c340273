"""The node's out-of-distribution alarm over time (ros/ood_monitor.py), ROS-free; with real rclpy in
test_ood_ros.py."""

from __future__ import annotations

import numpy as np
import pytest

from bisenetv2_ros.ros.ood_monitor import ERROR, OK, WARN, OODAlarmSettings, OODMonitor, frame_look


def textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


class Script:
    """Feeds a monitor frames at 10 Hz with advancing stamps; records the level after each."""

    def __init__(self, monitor: OODMonitor) -> None:
        self.monitor, self.now, self.stamp, self.seed = monitor, 0.0, 100.0, 0

    def frames(self, count: int, flagged: bool, frame=None, stamp_step: float = 0.1) -> list[int]:
        levels = []
        for _ in range(count):
            self.now += 0.1
            self.stamp += stamp_step
            self.seed += 1
            picture = textured(self.seed) if frame is None else frame
            self.monitor.update(self.now, self.stamp, flagged, 2.0 if flagged else 0.5, picture)
            levels.append(self.monitor.level()[0])
        return levels


def test_warn_then_error_then_ok_with_hysteresis():
    monitor = OODMonitor(OODAlarmSettings(window=10, warn_share=0.3, error_seconds=1.0))
    script = Script(monitor)
    assert set(script.frames(20, flagged=False)) == {OK}
    assert monitor.level() == (OK, "frames like the training frames")
    # every other frame flagged: 50 % of the window -> WARN, but no run of bad frames long enough for ERROR
    levels = [level for _ in range(10) for level in script.frames(1, True) + script.frames(1, False)]
    assert levels[-1] == WARN and ERROR not in levels
    assert monitor.level()[1].startswith("50% of the last 10 frames unlike the training frames")
    # black frames: ERROR once every frame was flagged for a second, with the reason in words
    levels = script.frames(15, flagged=True, frame=np.zeros((48, 64, 3), np.uint8))
    assert levels[:9] == [WARN] * 9 and levels[-1] == ERROR
    level, message = monitor.level()
    assert message.startswith("camera unusable: every frame flagged for 1 s") and "black" in message
    # good frames again: ERROR holds for a second (no flapping on one good frame); by then the 10-frame
    # window holds no flagged frame, so it goes straight to OK
    levels = script.frames(20, flagged=False)
    assert levels[:9] == [ERROR] * 9 and levels[-1] == OK
    assert WARN not in levels[:9]
    # a share between half the WARN share and the WARN share keeps the state it had (hysteresis)
    levels = script.frames(8, flagged=False) + script.frames(2, flagged=True)  # 20 %: below 30 %, above 15 %
    assert levels[-1] == OK
    levels = script.frames(2, flagged=True)  # 40 %
    assert levels[-1] == WARN
    levels = script.frames(8, flagged=False)  # the window holds 20 % flagged again: still WARN
    assert monitor.share() == pytest.approx(0.2) and set(levels) == {WARN}
    assert script.frames(1, flagged=False) == [OK] and monitor.share() == pytest.approx(0.1)
    assert dict(monitor.diagnostics_values())["ood frames flagged"] == str(10 + 15 + 2 + 2)


def test_a_frozen_camera_is_an_error_even_when_no_frame_is_flagged():
    monitor = OODMonitor(OODAlarmSettings(window=10, warn_share=0.3, error_seconds=1.0))
    script = Script(monitor)
    script.frames(5, flagged=False)
    same = textured(999)
    levels = script.frames(15, flagged=False, frame=same)
    assert levels[-1] == ERROR and "frozen: identical frames" in monitor.level()[1]
    script.frames(20, flagged=False)
    assert monitor.level()[0] == OK
    levels = script.frames(15, flagged=False, stamp_step=0.0)
    assert levels[-1] == ERROR and "frozen: stamps not advancing" in monitor.level()[1]


def test_an_uncalibrated_monitor_says_so():
    monitor = OODMonitor(calibrated=False)
    assert monitor.level() == (OK, "ood uncalibrated: raw score only")
    assert dict(monitor.diagnostics_values())["ood calibrated"] == "false"


def test_frame_look_names_plain_frames():
    assert frame_look(np.zeros((48, 64, 3), np.uint8))[1] == "black"
    assert frame_look(np.full((48, 64, 3), 255, np.uint8))[1] == "white"
    assert frame_look(np.full((48, 64, 3), 90, np.uint8))[1] == "uniform (covered lens?)"
    assert frame_look(textured(1))[1] == ""
    assert frame_look(textured(1))[0] == frame_look(textured(1).copy())[0] != frame_look(textured(2))[0]


@pytest.mark.parametrize("values,message", [
    (dict(window=0), "ood_window must be at least 1"), (dict(warn_share=0.0), "ood_warn_share must be in"),
    (dict(error_seconds=0.0), "ood_error_seconds must be positive")])
def test_bad_alarm_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        OODAlarmSettings(**values)
