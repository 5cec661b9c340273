"""The node's counters and diagnostics values (node_stats)."""

from __future__ import annotations

import math

import pytest

from bisenetv2_ros.ros import stats as node_stats
from bisenetv2_ros.ros.stats import NodeStats


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_stats_snapshot_rates_and_percentiles():
    clock = FakeClock()
    stats = NodeStats(window=100, clock=clock)
    for _ in range(30):
        stats.record_received()
    for latency in range(1, 101):
        stats.record_processed(inference_ms=latency / 2, latency_ms=float(latency))
    stats.record_stale_drop()
    stats.record_invalid()
    clock.now += 2.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(15.0) and snap.processed_rate_hz == pytest.approx(50.0)
    assert snap.latency_p50_ms == pytest.approx(50.5) and snap.latency_p99_ms == pytest.approx(99.01)
    assert snap.inference_p50_ms == pytest.approx(25.25)
    assert snap.frames_dropped == 2 and snap.new_drops == 2 and snap.new_invalid == 1
    clock.now += 1.0
    stats.record_received()
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(1.0) and snap.processed_rate_hz == 0.0
    assert snap.new_drops == 0 and snap.frames_received == 31


def test_latency_window_is_bounded():
    stats = NodeStats(window=10, clock=FakeClock())
    for latency in range(1000):
        stats.record_processed(1.0, float(latency))
    assert stats.snapshot().latency_p50_ms == pytest.approx(994.5)


def snapshot(**overrides):
    values = dict(frames_received=10, frames_processed=8, frames_dropped_stale=1, frames_dropped_invalid=1,
                  frames_failed=0, frames_skipped=0, input_rate_hz=10.0, processed_rate_hz=8.0,
                  latency_p50_ms=40.0, latency_p99_ms=80.0, inference_p50_ms=30.0, interval_s=1.0, new_drops=0,
                  new_invalid=0, new_failed=0)
    values.update(overrides)
    return node_stats.StatsSnapshot(**values)


def test_diagnostics_values_and_levels():
    report = node_stats.diagnostics_report(snapshot(), backend="torch", device="cpu", model="tiny.pt",
                                          input_topic="/segmentation/image")
    values = dict(report.values)
    assert report.level == node_stats.OK and report.message == "segmenting at 8.0 Hz"
    assert values["input rate (Hz)"] == "10.00" and values["processed rate (Hz)"] == "8.00"
    assert values["frames dropped"] == "2" and values["latency p50 (ms)"] == "40.0"
    assert values["latency p99 (ms)"] == "80.0" and values["backend"] == "torch" and values["device"] == "cpu"
    assert values["input topic"] == "/segmentation/image"

    idle = node_stats.diagnostics_report(snapshot(input_rate_hz=0.0, processed_rate_hz=0.0, latency_p50_ms=math.nan),
                                        backend="torch", device="cpu", model="m", input_topic="/segmentation/image")
    assert idle.level == node_stats.WARN and idle.message == "no images received on /segmentation/image"
    assert dict(idle.values)["latency p50 (ms)"] == "n/a"
    invalid = node_stats.diagnostics_report(snapshot(new_invalid=3), backend="b", device="d", model="m")
    assert invalid.level == node_stats.WARN and invalid.message == "3 invalid frame(s) dropped"
    idle = node_stats.diagnostics_report(snapshot(processed_rate_hz=0.0, frames_skipped=5), backend="b",
                                        device="d", model="m")
    assert idle.level == node_stats.OK and idle.message.startswith("idle: no one subscribes")
    stuck = node_stats.diagnostics_report(snapshot(processed_rate_hz=0.0), backend="b", device="d", model="m")
    assert stuck.level == node_stats.WARN and stuck.message == "receiving images but none processed"
    failed = node_stats.diagnostics_report(snapshot(new_failed=1), backend="b", device="d", model="m")
    assert failed.level == node_stats.ERROR
