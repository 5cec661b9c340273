"""The node's cameras: each one's state and counters, and the diagnostics values built from them.

A camera's name, outputs and last CameraInfo (``CameraState``); frames received, processed, dropped
and failed, rates and latency percentiles (``NodeStats``); and the level, message and values each
camera reports on /diagnostics (``camera_diagnostics``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .ood_monitor import OODMonitor

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class StatsSnapshot:
    frames_received: int
    frames_processed: int
    frames_dropped_stale: int
    frames_dropped_invalid: int
    frames_failed: int
    frames_skipped: int
    input_rate_hz: float       # over the interval since the previous snapshot
    processed_rate_hz: float
    latency_p50_ms: float      # over the last `window` processed frames; nan before the first
    latency_p99_ms: float
    inference_p50_ms: float
    interval_s: float
    new_drops: int             # drops (stale + invalid + failed) during the interval
    new_invalid: int
    new_failed: int
    camera_info_mismatched: int = 0      # camera_info messages that did not describe their frame / depth image
    new_camera_info_mismatched: int = 0

    @property
    def frames_dropped(self) -> int:
        return self.frames_dropped_stale + self.frames_dropped_invalid + self.frames_failed


class NodeStats:
    """Thread-safe counters and recent latencies of the node."""

    def __init__(self, window: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.received = self.processed = 0
        self.dropped_stale = self.dropped_invalid = self.failed = self.skipped = 0
        self.camera_info_mismatched = self._mismatched_before = 0
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._inference_ms: deque[float] = deque(maxlen=window)
        self._previous = (clock(), 0, 0, 0, 0, 0)  # time, received, processed, drops, invalid, failed

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def record_received(self) -> None:
        self._count("received")

    def record_stale_drop(self) -> None:
        self._count("dropped_stale")

    def record_invalid(self) -> None:
        self._count("dropped_invalid")

    def record_camera_info_mismatch(self) -> None:
        self._count("camera_info_mismatched")

    def record_failed(self) -> None:
        self._count("failed")

    def record_skipped(self) -> None:
        self._count("skipped")

    def record_processed(self, inference_ms: float, latency_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self._inference_ms.append(float(inference_ms))
            self._latencies_ms.append(float(latency_ms))

    @property
    def dropped(self) -> int:
        with self._lock:
            return self.dropped_stale + self.dropped_invalid + self.failed

    def snapshot(self) -> StatsSnapshot:
        """Totals, rates since the previous snapshot, latency percentiles; starts a new interval."""
        with self._lock:
            now = self._clock()
            drops = self.dropped_stale + self.dropped_invalid + self.failed
            then, received0, processed0, drops0, invalid0, failed0 = self._previous
            self._previous = (now, self.received, self.processed, drops, self.dropped_invalid, self.failed)
            mismatched0, self._mismatched_before = self._mismatched_before, self.camera_info_mismatched
            interval = max(now - then, 1e-9)
            latencies = np.asarray(self._latencies_ms, np.float64)
            inference = np.asarray(self._inference_ms, np.float64)
            p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (math.nan, math.nan)
            return StatsSnapshot(
                frames_received=self.received, frames_processed=self.processed,
                frames_dropped_stale=self.dropped_stale, frames_dropped_invalid=self.dropped_invalid,
                frames_failed=self.failed, frames_skipped=self.skipped,
                input_rate_hz=(self.received - received0) / interval,
                processed_rate_hz=(self.processed - processed0) / interval,
                latency_p50_ms=float(p50), latency_p99_ms=float(p99),
                inference_p50_ms=float(np.median(inference)) if inference.size else math.nan,
                interval_s=interval, new_drops=drops - drops0, new_invalid=self.dropped_invalid - invalid0,
                new_failed=self.failed - failed0, camera_info_mismatched=self.camera_info_mismatched,
                new_camera_info_mismatched=self.camera_info_mismatched - mismatched0)


@dataclass(frozen=True)
class DiagnosticsReport:
    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def diagnostics_report(snapshot: StatsSnapshot, *, backend: str, device: str, model: str,
                       input_topic: str = "image") -> DiagnosticsReport:
    """The values and level of the node's DiagnosticStatus for one interval."""
    if snapshot.new_failed:
        level, message = ERROR, f"{snapshot.new_failed} frame(s) failed in inference or publishing"
    elif snapshot.input_rate_hz == 0:
        level, message = WARN, f"no images received on {input_topic}"
    elif snapshot.new_invalid:
        level, message = WARN, f"{snapshot.new_invalid} invalid frame(s) dropped"
    elif snapshot.new_camera_info_mismatched:
        level, message = WARN, (f"{snapshot.new_camera_info_mismatched} camera_info message(s) did not match "
                                "their image's size (not republished / no cloud)")
    elif snapshot.processed_rate_hz == 0 and snapshot.frames_skipped:
        level, message = OK, "idle: no one subscribes to the outputs (only_when_subscribed)"
    elif snapshot.processed_rate_hz == 0:
        level, message = WARN, "receiving images but none processed"
    else:
        level, message = OK, f"segmenting at {snapshot.processed_rate_hz:.1f} Hz"
    values = [
        ("input rate (Hz)", f"{snapshot.input_rate_hz:.2f}"),
        ("processed rate (Hz)", f"{snapshot.processed_rate_hz:.2f}"),
        ("frames received", str(snapshot.frames_received)),
        ("frames processed", str(snapshot.frames_processed)),
        ("frames dropped", str(snapshot.frames_dropped)),
        ("dropped stale", str(snapshot.frames_dropped_stale)),
        ("dropped invalid", str(snapshot.frames_dropped_invalid)),
        ("failed", str(snapshot.frames_failed)),
        ("skipped (no subscribers)", str(snapshot.frames_skipped)),
        ("camera_info mismatched", str(snapshot.camera_info_mismatched)),
        ("latency p50 (ms)", _ms(snapshot.latency_p50_ms)),
        ("latency p99 (ms)", _ms(snapshot.latency_p99_ms)),
        ("inference p50 (ms)", _ms(snapshot.inference_p50_ms)),
        ("backend", backend),
        ("device", device),
        ("model", model),
        ("input topic", input_topic),
    ]
    return DiagnosticsReport(level, message, values)


def camera_diagnostics(cameras: list[CameraState], *, node_name: str, backend: str, device: str, model: str,
                       input_topic: Callable[[CameraState], str]) -> list[tuple[str, DiagnosticsReport]]:
    """One (status name, report) per camera: `<node>: segmentation`, or `<node>: segmentation front`."""
    reports = []
    for camera in cameras:
        report = diagnostics_report(camera.stats.snapshot(), backend=backend, device=device, model=model,
                                    input_topic=input_topic(camera))
        if camera.name:
            report.values.insert(0, ("camera", camera.name))
        reports.append((f"{node_name}: segmentation" + (f" {camera.name}" if camera.name else ""), report))
        if camera.ood is not None:
            level, message = camera.ood.level()
            values = ([("camera", camera.name)] if camera.name else []) + camera.ood.diagnostics_values()
            reports.append((f"{node_name}: out-of-distribution" + (f" {camera.name}" if camera.name else ""),
                            DiagnosticsReport(level, message, values)))
    return reports


# Depth images kept per camera: a frame waits in its slot while depth keeps arriving, so the one
# taken with it is looked up among the last few (at 30 Hz, a quarter of a second).
DEPTH_HISTORY = 8


def camera_topic(camera: str, topic: str) -> str:
    """A camera's topic: `front/labels`; with no camera name (single-camera mode) just `labels`."""
    return f"{camera}/{topic}" if camera else topic


@dataclass
class CameraState:
    """One camera of the node: its name ('' in single-camera mode), its counters, its latest input
    CameraInfo (republished with each result's header), its newest registered depth images and their
    CameraInfo (for `points`: the one closest in time to each frame) and where its outputs go."""

    name: str
    publish: Callable[[str, Any], None]  # (output name, message)
    stats: NodeStats = field(default_factory=NodeStats)
    camera_info: Any = None
    depths: deque = field(default_factory=lambda: deque(maxlen=DEPTH_HISTORY))
    depth_info: Any = None
    # (output name) -> whether anyone subscribes to it now (the node asks its publisher per frame;
    # a recording is a subscriber too). An output no one listens to is not computed.
    listening: Callable[[str], bool] = lambda output: True
    ood: OODMonitor | None = None  # the out-of-distribution alarm (ood_check), set by the pipeline

    def topic(self, topic: str) -> str:
        return camera_topic(self.name, topic)

    @property
    def label(self) -> str:
        """How log lines name the camera: "camera 'front': " or nothing in single-camera mode."""
        return f"camera '{self.name}': " if self.name else ""
