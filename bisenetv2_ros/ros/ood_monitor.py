"""The node's out-of-distribution alarm over time: one ``OODMonitor`` per camera.

Each frame comes with its ``ood`` flag (``inference/ood.py``: the frame is unlike the frames the
weights were trained on). The monitor adds what a single frame cannot tell: the camera is *frozen*
(the same picture again, or a stamp that does not advance). Diagnostics then say

- WARN when more than ``warn_share`` of the last ``window`` frames are flagged; it clears only when the
  share falls to half of that (hysteresis, so a share hovering at the limit does not flap);
- ERROR when every frame for ``error_seconds`` was flagged or frozen: the camera is plainly unusable
  (black, white, covered, frozen); it clears only after ``error_seconds`` of unflagged frames.

ROS-free: ``ros/node.py`` feeds it and publishes ``diagnostics_values``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inference.ood import OODScorer

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels (as ros/stats.py; it imports this module)
# A frame is summarised by a sparse grid of its pixels for the frozen check and the reason in words.
_GRID = 64


@dataclass(frozen=True)
class OODAlarmSettings:
    """The alarm's parameters (``ood_window``, ``ood_warn_share``, ``ood_error_seconds``)."""

    window: int = 30
    warn_share: float = 0.3
    error_seconds: float = 3.0

    def __post_init__(self) -> None:
        if int(self.window) < 1:
            raise ValueError(f"ood_window must be at least 1 frame, got {self.window}")
        if not 0.0 < float(self.warn_share) <= 1.0:
            raise ValueError(f"ood_warn_share must be in (0, 1], got {self.warn_share}")
        if not float(self.error_seconds) > 0.0:
            raise ValueError(f"ood_error_seconds must be positive, got {self.error_seconds}")


def frame_look(frame: np.ndarray) -> tuple[str, str]:
    """(digest, words) of a uint8 HxWx3 frame from a sparse grid of its pixels: the digest tells an
    identical frame; the words name a frame that is plainly not a picture ('black', 'white',
    'uniform (covered lens?)'), else ''."""
    step_y, step_x = max(1, frame.shape[0] // _GRID), max(1, frame.shape[1] // _GRID)
    grid = np.ascontiguousarray(frame[::step_y, ::step_x])
    digest = hashlib.blake2b(grid.tobytes(), digest_size=8).hexdigest()
    mean, spread = float(grid.mean()), float(grid.std())
    if mean < 16 and spread < 8:
        return digest, "black"
    if mean > 239 and spread < 8:
        return digest, "white"
    if spread < 6:
        return digest, "uniform (covered lens?)"
    return digest, ""


class OODMonitor:
    """Per-frame flags in, a diagnostics level with its reason out."""

    def __init__(self, settings: OODAlarmSettings | None = None, calibrated: bool = True) -> None:
        self.settings = settings or OODAlarmSettings()
        self._flags: deque[bool] = deque(maxlen=int(self.settings.window))
        self._warn = False
        self._error = False
        self._bad_since: float | None = None  # arrival time of the first of the current run of bad frames
        self._good_since: float | None = None
        self._last_digest: str | None = None
        self._last_stamp: float | None = None
        self.last_score = float("nan")
        self.last_reason = ""
        self.frames_flagged = 0
        self.calibrated = calibrated

    def update(self, now: float, stamp: float, flagged: bool, score: float, frame: np.ndarray | None = None) -> str:
        """Records one frame (``now``: monotonic seconds, ``stamp``: its header time); returns why it is bad
        in words ('' when it is not)."""
        digest, words = frame_look(frame) if frame is not None else (None, "")
        reasons = []
        if flagged:
            reasons.append(words or "unlike the training frames")
        if digest is not None and digest == self._last_digest:
            reasons.append("frozen: identical frames")
        if self._last_stamp is not None and stamp <= self._last_stamp:
            reasons.append("frozen: stamps not advancing")
        self._last_digest, self._last_stamp = digest, stamp
        bad = bool(reasons)
        self.last_score, self.last_reason = float(score), "; ".join(reasons)
        self.frames_flagged += int(flagged)
        self._flags.append(bad)
        share = sum(self._flags) / len(self._flags)
        if share > self.settings.warn_share:
            self._warn = True
        elif share <= self.settings.warn_share / 2:
            self._warn = False
        if bad:
            self._good_since = None
            self._bad_since = now if self._bad_since is None else self._bad_since
            if now - self._bad_since >= self.settings.error_seconds:
                self._error = True
        else:
            self._bad_since = None
            self._good_since = now if self._good_since is None else self._good_since
            if now - self._good_since >= self.settings.error_seconds:
                self._error = False
        return self.last_reason

    def share(self) -> float:
        return sum(self._flags) / len(self._flags) if self._flags else 0.0

    def level(self) -> tuple[int, str]:
        """(OK / WARN / ERROR, message)."""
        if self._error:
            return ERROR, f"camera unusable: every frame flagged for {self.settings.error_seconds:g} s ({self.last_reason or 'recovering'})"
        if self._warn:
            return WARN, (f"{self.share():.0%} of the last {len(self._flags)} frames unlike the training frames"
                          + (f" ({self.last_reason})" if self.last_reason else ""))
        return OK, "frames like the training frames" if self.calibrated else "ood uncalibrated: raw score only"

    def diagnostics_values(self) -> list[tuple[str, str]]:
        return [("ood score", f"{self.last_score:.3f}"), ("ood share", f"{self.share():.2f}"),
                ("ood frames flagged", str(self.frames_flagged)), ("ood calibrated", str(self.calibrated).lower())]


def scores_frames(settings: Any, segmenter: Any) -> bool:
    """Whether the node scores frames: ``ood_check`` on and a segmenter whose backend has the confidence
    output the score reads (every backend of ``inference/``; not a stand-in without one)."""
    return bool(settings.ood_check) and bool(getattr(getattr(segmenter, "backend", None), "supports_confidence", False))


class FrameJudge:
    """The node's scorer (the weights' calibration) and alarm settings; a monitor per camera, made on
    the camera's first frame."""

    def __init__(self, scorer: OODScorer, alarm: OODAlarmSettings) -> None:
        self.scorer, self.alarm = scorer, alarm

    def judge(self, camera: Any, frame: np.ndarray, labels: np.ndarray, confidence: np.ndarray, stamp: Any,
              now: float) -> dict[str, Any]:
        """Scores one frame of ``camera`` (``stats.CameraState``), feeds its monitor; returns the ``info``
        message's ood fields."""
        if camera.ood is None:
            camera.ood = OODMonitor(self.alarm, self.scorer.calibrated)
        score, flagged = self.scorer.score(frame, labels, confidence)
        camera.ood.update(now, stamp.sec + stamp.nanosec * 1e-9, bool(flagged), score, frame)
        return {"ood_score": float(score), "ood": bool(flagged), "ood_calibrated": self.scorer.calibrated}


def attach(cameras: list, settings: Any, segmenter: Any, num_classes: int) -> FrameJudge | None:
    """Clears the cameras' monitors (a new pipeline starts afresh) and returns the node's FrameJudge, or
    None when it does not score frames (``scores_frames``)."""
    for camera in cameras:
        camera.ood = None
    if not scores_frames(settings, segmenter):
        return None
    scorer = OODScorer(getattr(getattr(segmenter, "info", None), "ood", None), num_classes)
    return FrameJudge(scorer, OODAlarmSettings(settings.ood_window, settings.ood_warn_share, settings.ood_error_seconds))
