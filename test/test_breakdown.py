"""``bisenetv2 benchmark --breakdown`` and the arithmetic-limit line: every stage is timed and computes
what the pipeline computes; medians, shares and ratios are computed right (fake clock, no timed assertion)."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import AVX2_FLAGS, AVX512_BF16_FLAGS

from bisenetv2_ros.benchmarks import backends_benchmark as benchmark
from bisenetv2_ros.benchmarks import breakdown
from bisenetv2_ros.classes import CAMVID
from bisenetv2_ros.inference import arithmetic_limit as limit_module
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model


def parse(argv):
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    return parser.parse_args(argv)


def test_each_stage_computes_what_the_pipeline_computes(tiny_weights):
    torch.manual_seed(0)
    model, info = load_model(tiny_weights)
    frame = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    calls = breakdown.stage_calls(model, info.normalization, (64, 96), frame, CAMVID.lookup_table())
    assert tuple(calls) == breakdown.STAGES
    segmenter = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32")
    labels, confidence = segmenter.segment(frame, channel_order="bgr", confidence=True)
    converted, order = calls["convert"]()
    assert order == "bgr" and np.array_equal(converted, frame)
    assert calls["resize in"]().shape == (1, 3, 64, 96)
    assert calls["resize in (cv2 uint8)"]().shape == (64, 96, 3)
    assert tuple(calls["network"]().shape[2:]) == (8, 12)  # 1/8 of the model size
    # labels at the frame size as the Segmenter's torch fp32 path gives them (batch norm folded: fp32 rounding)
    assert (calls["upsample + argmax (in graph)"]()[0].numpy() == labels).mean() >= 0.999
    assert np.array_equal(calls["upsample + argmax"]()[0], calls["upsample + argmax (in graph)"]()[0].numpy())
    assert np.abs(calls["confidence"]()[0].numpy().astype(int) - confidence).max() <= 1
    assert calls["colour"]().shape == (50, 70, 3) and calls["overlay"]().shape == (50, 70, 3)
    labels_msg, colour_msg = calls["message"]()
    assert (labels_msg.encoding, colour_msg.encoding, len(colour_msg.data)) == ("mono8", "rgb8", 50 * 70 * 3)


def test_time_stages_interleaves_and_summarises():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("convert", "network", "colour")}
    ticks = itertools.count()  # a fake clock advancing 1 ms per reading: every call "takes" 1 ms
    times = breakdown.time_stages(calls, iters=3, warmup=1, clock=lambda: next(ticks) / 1000.0)
    assert order == ["convert", "network", "colour"] * 4  # one warm-up round, then interleaved rounds
    assert times == {name: pytest.approx([1.0] * 3) for name in calls}
    summary = breakdown.summarise({"convert": [1.0, 2.0, 9.0], "network": [6.0, 6.0, 6.0], "colour": [2.0, 2.0, 0.5]})
    assert summary["p50_ms"] == {"convert": 2.0, "network": 6.0, "colour": 2.0} and summary["sum_p50_ms"] == 10.0
    assert summary["share"] == {"convert": 0.2, "network": 0.6, "colour": 0.2}
    assert breakdown.frame_size_work(summary) == pytest.approx(0.4)


def test_breakdown_and_limit_in_the_benchmark_report(tiny_weights, capsys, simulated_cpu, monkeypatch):
    simulated_cpu(AVX512_BF16_FLAGS, "Simulated AVX-512 CPU")
    monkeypatch.setattr(limit_module, "clock_ghz", lambda: 2.0)
    args = parse(["--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                  "--frame-size", "48x64", "--iters", "2", "--warmup", "0", "--breakdown", "--json"])
    assert benchmark.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    limit = report["arithmetic_limit"]
    macs = breakdown.network_macs(tiny_weights, (64, 96))
    assert limit["network_gmacs"] == round(macs / 1e9, 3) and limit["macs_per_cycle_per_core"] == 32
    expected_limit_ms = macs / (32 * limit["cores"] * 2.0e9) * 1e3
    assert limit["limit_ms"] == pytest.approx(expected_limit_ms, abs=1e-3)
    assert limit["end_to_end_over_limit"] == pytest.approx(report["end_to_end"]["p50_ms"] / expected_limit_ms, rel=0.02)
    (size,) = report["breakdown"]["sizes"]
    assert size["frame_hxw"] == [48, 64] and set(size["stages"]["p50_ms"]) == set(breakdown.STAGES)
    assert sum(size["stages"]["share"].values()) == pytest.approx(1.0, abs=0.01)
    assert size["chosen_end_to_end"]["path"] == "torch fp32" and size["chosen_end_to_end"]["p50_ms"] > 0


def test_breakdown_table_and_default_camera_sizes(tiny_weights, capsys, simulated_cpu, monkeypatch):
    simulated_cpu(AVX2_FLAGS, "Simulated AVX2 CPU")
    monkeypatch.setattr(limit_module, "clock_ghz", lambda: 3.0)
    monkeypatch.setattr(breakdown, "CAMERA_SIZES", ((24, 32), (48, 64)))  # small stand-ins for 480x640 .. 2160x3840
    args = parse(["--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                  "--iters", "1", "--warmup", "0", "--breakdown"])
    assert benchmark.run(args) == 0
    out = capsys.readouterr().out
    assert "frame 24x32, model 64x96" in out and "frame 48x64, model 64x96" in out
    assert "upsample + argmax" in out and "x the first size" in out
    assert "arithmetic limit (fp32, 256-bit FMA x 2, " in out and "x 3.0 GHz" in out
