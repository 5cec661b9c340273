"""Measured `auto`: the choice on simulated timings, flags and label agreement; its cache; overrides."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import AMX_FLAGS, AVX2_FLAGS, AVX512_BF16_FLAGS

from bisenetv2_ros.inference import measured_auto
from bisenetv2_ros.inference.backends import Backend, BackendError
from bisenetv2_ros.inference.background_load import BackgroundLoad
from bisenetv2_ros.inference.measured_auto import AutoContext, Candidate, Measurement, candidates_for, choose
from bisenetv2_ros.inference.segmenter import Segmenter

pytest.importorskip("onnxruntime", reason="the ONNX Runtime candidates need onnxruntime")


# ------------------------------------------------------------------------------------------------
# The choice (pure)


def test_lowest_mean_of_quiet_and_loaded_wins():
    # torch collapses under contention: fastest quiet, but not the choice
    name, rows = choose([Measurement("torch bf16", 30.0, 120.0, 0.002), Measurement("onnxruntime int8", 35.0, 50.0, 0.004),
                         Measurement("onnxruntime fp32", 40.0, 60.0, 0.0)])
    assert name == "onnxruntime int8"
    assert [row["status"] for row in rows] == ["ok", "chosen", "ok"]
    assert [row["score_ms"] for row in rows] == [75.0, 42.5, 50.0]


def test_of_near_ties_the_one_that_slows_down_least_under_load_wins():
    # scores 29.5 and 30.4 are within 10 %: the smaller loaded p50 decides; 34.0 is not close
    name, _ = choose([Measurement("openvino bf16", 20.4, 38.6, 0.0), Measurement("onnxruntime int8", 23.9, 36.9, 0.001),
                      Measurement("torch bf16", 34.0, 34.0, 0.0)])
    assert name == "onnxruntime int8"
    assert choose([Measurement("a x", 20.0, None, 0.0), Measurement("b y", 21.0, None, 0.0)])[0] == "a x"  # quiet only


def test_labels_off_by_more_than_one_percent_are_rejected_however_fast():
    name, rows = choose([Measurement("onnxruntime int8", 10.0, 12.0, 0.0101), Measurement("torch fp32", 50.0, 90.0, 0.0)],
                        {"torch bf16": "no native bf16"})
    assert name == "torch fp32"
    assert rows[0]["status"] == "rejected: labels differ from fp32 on more than 1% of pixels"
    assert rows[2] == {"name": "torch bf16", "status": "not available: no native bf16"}
    assert choose([Measurement("a x", 9.0, None, 0.01), Measurement("b y", 10.0, None, 0.0)])[0] == "a x"  # 1 % is fine


def test_nothing_usable_is_one_clear_error():
    with pytest.raises(BackendError, match="no candidate path could run here.*torch fp32: failed: boom.*explicitly"):
        choose([Measurement("torch fp32", error="boom"), Measurement("onnxruntime int8", 5.0, 6.0, 0.5)])


@pytest.mark.parametrize("flags,calibration,request_,expected", [
    (AVX2_FLAGS, False, ("auto", "auto"), ["torch fp32", "onnxruntime fp32"]),
    (AVX2_FLAGS, True, ("auto", "auto"), ["torch fp32", "onnxruntime fp32", "onnxruntime int8"]),
    (AVX512_BF16_FLAGS, True, ("auto", "auto"), ["torch fp32", "torch bf16", "onnxruntime fp32", "onnxruntime int8"]),
    (AMX_FLAGS, False, ("torch", "auto"), ["torch fp32", "torch bf16"]),  # a named backend is kept
    (AMX_FLAGS, True, ("auto", "fp32"), ["torch fp32", "onnxruntime fp32"]),  # a named precision is kept
])
def test_candidates_follow_the_simulated_cpu(flags, calibration, request_, expected):
    # Simulated installs too: onnxruntime present, the optional openvino absent (its rows: below).
    usable, skipped = candidates_for(*request_, AutoContext(frozenset(flags), calibration,
                                                            lambda module: module != "openvino"))
    assert [c.name for c in usable] == expected
    if "torch bf16" in skipped:
        assert "no native bf16" in skipped["torch bf16"]
    if request_ == ("auto", "auto") and not calibration:
        assert skipped["onnxruntime int8"] == "no int8 calibration frames known for these weights"


@pytest.mark.parametrize("flags,calibration,expected", [
    (AVX2_FLAGS, True, ["openvino fp32", "openvino int8"]),
    (AVX2_FLAGS, False, ["openvino fp32"]),
    (AVX512_BF16_FLAGS, True, ["openvino fp32", "openvino bf16", "openvino int8"]),
])
def test_openvino_paths_join_where_it_is_installed(flags, calibration, expected):
    usable, skipped = candidates_for("openvino", "auto", AutoContext(frozenset(flags), calibration, lambda module: True))
    assert [c.name for c in usable] == expected
    if "openvino bf16" not in expected:
        assert "no native bf16" in skipped["openvino bf16"]
    usable, skipped = candidates_for("auto", "auto", AutoContext(frozenset(flags), calibration,
                                                                 lambda module: module != "openvino"))
    assert not [c for c in usable if c.backend == "openvino"]
    assert skipped["openvino fp32"] == "openvino is not importable"


def test_without_onnxruntime_only_torch_is_measured():
    usable, skipped = candidates_for("auto", "auto", AutoContext(frozenset(AVX2_FLAGS), True, lambda module: False))
    assert [c.name for c in usable] == ["torch fp32"]
    assert skipped["onnxruntime fp32"] == "onnxruntime is not importable"


# ------------------------------------------------------------------------------------------------
# measure(): a candidate whose labels are wrong is never timed and never chosen


class ConstantBackend(Backend):
    name = "constant"

    def __init__(self, label: int) -> None:
        super().__init__("cpu", "fp32", (8, 8))
        self.label = label

    def _run(self, frames, channel_order):
        return np.full(frames.shape[:3], self.label, np.uint8)


def test_measure_rejects_a_candidate_whose_labels_differ(monkeypatch):
    timed = []

    def fake_time(backends, frames, rounds=5, load_processes=0):
        timed.append((sorted(backends), load_processes))
        return {name: {"good fp32": 20.0, "bad int8": 5.0}[name] * (2 if load_processes else 1) for name in backends}

    monkeypatch.setattr(measured_auto, "time_candidates", fake_time)
    check = np.zeros((2, 8, 8, 3), np.uint8)
    reference = np.full((2, 8, 8), 3, np.uint8)
    candidates = [Candidate("good", "fp32", lambda c: None), Candidate("bad", "int8", lambda c: None),
                  Candidate("broken", "fp32", lambda c: None)]

    def build(candidate):
        if candidate.backend == "broken":
            raise BackendError("cannot build here")
        return ConstantBackend(3 if candidate.backend == "good" else 4)

    measurements, built = measured_auto.measure(candidates, build, check, reference, check[:1], load_processes=1)
    assert timed == [(["good fp32"], 0), (["good fp32"], 1)]  # quiet, then under one busy process
    by_name = {m.name: m for m in measurements}
    assert (by_name["good fp32"].quiet_ms, by_name["good fp32"].loaded_ms, by_name["good fp32"].disagreement) == (20.0, 40.0, 0.0)
    assert by_name["bad int8"].disagreement == 1.0 and by_name["bad int8"].quiet_ms is None
    assert by_name["broken fp32"].error == "cannot build here"
    name, rows = choose(measurements)
    assert name == "good fp32" and rows[1]["status"].startswith("rejected")


def test_near_ties_of_synthetic_frames_are_left_out_of_the_count(tiny_weights):
    import torch

    from bisenetv2_ros.inference.fused import FusedSegmentation
    from bisenetv2_ros.weights.known_weights import load_model

    model, info = load_model(tiny_weights)
    frames, source = measured_auto.check_frames(info, {}, (40, 60))
    assert frames.shape == (measured_auto.CHECK_FRAMES, 40, 60, 3) and "synthetic" in source
    labels, counted = measured_auto.fp32_reference(model, info, (64, 96), frames)
    with torch.inference_mode():
        plain = FusedSegmentation(model, info.normalization, (64, 96), "rgb")(torch.from_numpy(frames)).numpy()
    assert counted is None and np.array_equal(labels, plain)
    same, counted = measured_auto.fp32_reference(model, info, (64, 96), frames, tie_margin=0.25)
    assert np.array_equal(same, labels) and counted.shape == labels.shape and 0.5 < counted.mean() < 1.0

    # a candidate that differs only on uncounted pixels passes the check
    flipped = labels.copy()
    flipped[~counted] += 1
    candidate = Candidate("flips", "ties", lambda c: None)

    class Flipped(ConstantBackend):
        def _run(self, batch, channel_order):
            index = next(i for i, frame in enumerate(frames) if np.array_equal(frame, batch[0]))
            return flipped[index][None]

    measured, _ = measured_auto.measure([candidate], lambda c: Flipped(0), frames, labels, frames[:1], 0, counted)
    assert measured[0].disagreement == 0.0
    measured, _ = measured_auto.measure([candidate], lambda c: Flipped(0), frames, labels, frames[:1], 0)
    assert measured[0].disagreement == round(float((~counted).mean()), 5)


# ------------------------------------------------------------------------------------------------
# The Segmenter: measured once, cached, keyed, overridden


SIMULATED_MS = {"torch fp32": (45.0, 180.0), "torch bf16": (30.0, 110.0), "onnxruntime fp32": (35.0, 60.0),
                "onnxruntime int8": (23.0, 35.0)}


@pytest.fixture
def measuring(monkeypatch, simulated_cpu, tmp_path):
    """Measuring switched on, timings simulated (SIMULATED_MS), an empty cache; returns the timing calls."""
    monkeypatch.setenv("BISENETV2_AUTO", "measure")
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path / "cache"))
    simulated_cpu(AVX512_BF16_FLAGS, "Simulated EPYC")
    calls = []

    def fake_time(backends, frames, rounds=5, load_processes=0):
        calls.append((tuple(backends), frames.shape, load_processes))
        return {name: SIMULATED_MS[name][1 if load_processes else 0] for name in backends}

    monkeypatch.setattr(measured_auto, "time_candidates", fake_time)
    # The optional openvino simulated absent (whether installed or not); its rows are tested above.
    monkeypatch.setattr(measured_auto, "_importable", lambda module: module != "openvino")
    return calls


def decision_files() -> list[Path]:
    return list((Path(os.environ["BISENETV2_CACHE"]) / "engines").glob("auto-*.auto"))


def test_auto_measures_once_then_reuses_the_cached_decision(tiny_weights, measuring, caplog):
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        seg = Segmenter(tiny_weights, frame_size=(48, 80), batch=2)
    # no calibration known for the synthetic weights: int8 is not a candidate; onnxruntime fp32 has the
    # lowest mean of quiet and loaded (47.5 ms) although torch bf16 is faster on a quiet machine
    assert (seg.backend_name, seg.precision, seg.device) == ("onnxruntime", "fp32", "cpu")
    assert [call[0] for call in measuring] == [("torch fp32", "torch bf16", "onnxruntime fp32")] * 2
    assert [call[1] for call in measuring] == [(2, 48, 80, 3)] * 2 and [c[2] for c in measuring] == [0, 1]
    decision = seg.auto_decision
    assert decision.frame_shape == [2, 48, 80] and decision.name == "onnxruntime fp32"
    rows = {row["name"]: row for row in decision.rows}
    assert rows["torch bf16"]["status"] == "ok" and rows["onnxruntime fp32"]["status"] == "chosen"
    assert rows["onnxruntime int8"]["status"].startswith("not available")
    assert rows["torch fp32"]["disagreement"] == 0.0
    assert caplog.text.count("auto -> onnxruntime fp32 on cpu (Simulated EPYC") == 1  # the table, logged once
    assert "\n".join(decision.table_lines()) in caplog.text
    assert any(line.split() == ["onnxruntime", "fp32", "35.0", "60.0", "47.5", "0.00%", "chosen"]
               for line in decision.table_lines())
    assert len(decision_files()) == 1

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        again = Segmenter(tiny_weights, frame_size=(48, 80), batch=2)
    assert len(measuring) == 2, "a cached decision is not measured again"
    assert (again.backend_name, again.precision) == ("onnxruntime", "fp32")
    assert "auto decision cache hit" in caplog.text and "cached decision of" in caplog.text
    assert again.auto_decision.rows == decision.rows
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), np.uint8)
    assert np.array_equal(again.segment_batch(frames), seg.segment_batch(frames))


def test_a_changed_machine_or_frame_size_is_measured_again(tiny_weights, measuring, simulated_cpu, caplog):
    Segmenter(tiny_weights, frame_size=(48, 80))
    assert len(measuring) == 2
    Segmenter(tiny_weights, frame_size=(40, 64))  # another frame size: another decision
    assert len(measuring) == 4
    simulated_cpu(AVX2_FLAGS, "Simulated EPYC")  # same model name, other flags: the key is stale
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        seg = Segmenter(tiny_weights, frame_size=(48, 80))
    assert "is stale (changed: cpu_flags)" in caplog.text
    assert measuring[-1][0] == ("torch fp32", "onnxruntime fp32")  # no bf16 without native bf16
    assert len(measuring) == 6 and seg.auto_decision.name == "onnxruntime fp32"
    Segmenter(tiny_weights, frame_size=(48, 80), backend_options={"auto_remeasure": True})
    assert len(measuring) == 8


def test_a_corrupt_decision_file_is_measured_again(tiny_weights, measuring, caplog):
    seg = Segmenter(tiny_weights)
    (path,) = decision_files()
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        again = Segmenter(tiny_weights)
    assert "is corrupt" in caplog.text and len(measuring) == 4
    assert again.auto_decision.name == seg.auto_decision.name


@pytest.mark.parametrize("backend,precision,expected", [
    ("torch", "fp32", ("torch", "fp32")),
    ("onnxruntime", "fp32", ("onnxruntime", "fp32")),
    ("torch", "bf16", ("torch", "bf16")),
])
def test_explicit_backend_and_precision_are_never_measured(tiny_weights, measuring, backend, precision, expected):
    seg = Segmenter(tiny_weights, backend=backend, precision=precision)
    assert (seg.backend_name, seg.precision) == expected and seg.auto_decision is None
    assert measuring == []


def test_one_named_half_chooses_the_other(tiny_weights, measuring):
    seg = Segmenter(tiny_weights, backend="torch")  # precision auto among torch fp32 / bf16
    assert (seg.backend_name, seg.precision) == ("torch", "bf16")
    assert measuring[0][0] == ("torch fp32", "torch bf16")
    seg = Segmenter(tiny_weights, precision="fp32")  # backend auto among the fp32 paths
    assert (seg.backend_name, seg.precision) == ("onnxruntime", "fp32")


def test_rule_mode_and_a_bad_mode(tiny_weights, measuring, monkeypatch):
    monkeypatch.setenv("BISENETV2_AUTO", "rule")
    assert Segmenter(tiny_weights).auto_decision is None and measuring == []
    monkeypatch.setenv("BISENETV2_AUTO", "fastest")
    with pytest.raises(BackendError, match="BISENETV2_AUTO='fastest' is not understood; use 'measure'"):
        Segmenter(tiny_weights)


def test_real_measurement_end_to_end(tiny_weights, monkeypatch, tmp_path):
    """The unsimulated path once: real backends timed (figures not asserted), under one busy process."""
    monkeypatch.setenv("BISENETV2_AUTO", "measure")
    monkeypatch.setattr(measured_auto, "TIMED_ROUNDS", 2)
    seg = Segmenter(tiny_weights, device="cpu", engine_cache_dir=tmp_path, frame_size=(40, 60))
    decision = seg.auto_decision
    assert decision.name == f"{seg.backend_name} {seg.precision}" and decision.load_processes == 1
    timed = [row for row in decision.rows if row["status"] in ("ok", "chosen")]
    assert {"torch fp32", "onnxruntime fp32"} <= {row["name"] for row in timed}
    assert all(row["quiet_ms"] > 0 and row["loaded_ms"] > 0 for row in timed)
    assert "synthetic frames" in decision.check_frames


# ------------------------------------------------------------------------------------------------
# Background load


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_background_load_is_always_stopped():
    with BackgroundLoad(2) as load:
        pids = load.pids
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="inside"):
        with BackgroundLoad(1) as load:
            pids = load.pids
            raise RuntimeError("inside")
    assert not any(_alive(pid) for pid in pids)
    with BackgroundLoad(0) as load:
        assert load.pids == []
    with pytest.raises(ValueError, match="0 or more"):
        BackgroundLoad(-1)


# ------------------------------------------------------------------------------------------------
# Ahead of time (`bisenetv2 tune`) and in the benchmark


def test_tune_caches_the_decision_the_next_start_reuses(tiny_weights, measuring, capsys):
    from bisenetv2_ros.cli import commands as cli

    assert cli.main(["tune", "--weights", str(tiny_weights), "--frame-size", "48x80"]) == 0
    out = capsys.readouterr().out
    assert "auto -> onnxruntime fp32 (measured" in out and "torch bf16" in out and len(measuring) == 2
    seg = Segmenter(tiny_weights, frame_size=(48, 80))  # what the node and `segment` build
    assert len(measuring) == 2 and seg.auto_decision.name == "onnxruntime fp32"
    assert cli.main(["tune", "--weights", str(tiny_weights), "--frame-size", "48x80", "--again"]) == 0
    assert len(measuring) == 4
    assert cli.main(["tune", "--weights", str(tiny_weights), "--backend", "onnxruntime", "--precision", "fp32"]) == 1
    assert "nothing to measure" in capsys.readouterr().err


def test_benchmark_shows_the_auto_table_and_times_under_load(tiny_weights, measuring, capsys):
    import json

    from bisenetv2_ros.cli import commands as cli

    assert cli.main(["benchmark", "--weights", str(tiny_weights), "--frame-size", "48x80", "--iters", "2",
                     "--warmup", "0", "--background-load", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["background_load"] == 1 and (report["backend"], report["precision"]) == ("onnxruntime", "fp32")
    assert [row["name"] for row in report["auto"]["rows"]][:3] == ["torch fp32", "torch bf16", "onnxruntime fp32"]
    with pytest.raises(SystemExit):
        cli.main(["benchmark", "--background-load", "-1"])
    assert "argument --background-load: expected 0 or a positive integer, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_the_package_makes_openmp_threads_wait_passively(given, expected):
    """Set before torch can load OpenMP (which reads it once); a value the user gave wins."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, sys, bisenetv2_ros; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == [expected, "False"], result.stderr


def test_the_node_and_the_cli_share_one_measured_decision(tiny_weights, measuring):
    from bisenetv2_ros.cli import commands as cli
    from bisenetv2_ros.ros import pipeline as node_core
    from bisenetv2_ros.ros.parameters import NodeSettings

    node_segmenter, _ = node_core.create_segmenter(NodeSettings(weights=str(tiny_weights), device="cpu"))
    assert len(measuring) == 2 and node_segmenter.auto_decision.name == "onnxruntime fp32"
    args = cli.build_parser().parse_args(["segment", "frame.png", "--weights", str(tiny_weights), "--device", "cpu"])
    cli_segmenter = cli._make_segmenter(args)
    assert len(measuring) == 2, "the CLI found the node's decision in the cache"
    assert (cli_segmenter.backend_name, cli_segmenter.precision) == (node_segmenter.backend_name, node_segmenter.precision)


def test_an_option_of_one_backend_does_not_disqualify_the_others(tiny_weights, measuring):
    """`resize_in` is ONNX Runtime's: auto passes it only to ONNX Runtime candidates (torch's rows failed
    with "unexpected keyword argument" before), and it keys the decision (it changes what is measured)."""
    seg = Segmenter(tiny_weights, frame_size=(48, 80), backend_options={"resize_in": "uint8"})
    rows = {row["name"]: row["status"] for row in seg.auto_decision.rows}
    assert rows["torch fp32"] == "ok" and rows["torch bf16"] == "ok" and rows["onnxruntime fp32"] == "chosen", rows
    assert seg.backend.resize_in == "uint8"
    assert len(measuring) == 2
    with pytest.raises(BackendError, match=r"^unknown backend option\(s\) resize_inn; each backend takes: torch: "):
        Segmenter(tiny_weights, frame_size=(48, 80), backend_options={"resize_inn": "uint8"})  # named, not measured
    assert len(measuring) == 2
    Segmenter(tiny_weights, frame_size=(48, 80))
    assert len(measuring) == 4  # without the option the decision is measured afresh, not reused


@pytest.mark.parametrize("backend, options, message", [
    ("torch", {"resize_in": "uint8"}, "backend option(s) resize_in do not apply to torch (resize_in: onnxruntime "
                                      "only); torch takes channels_last, compile, emulate_bf16, fold_bn"),
    ("onnxruntime", {"compile": "inductor"}, "compile do not apply to onnxruntime (compile: torch only)"),
    ("auto", {"resize_inn": "uint8"}, "unknown backend option(s) resize_inn; each backend takes: torch: "),
    ("onnxruntime", {"threds": 2}, "unknown backend option(s) threds;"),
])
def test_a_misplaced_or_misspelt_backend_option_is_named(tiny_weights, backend, options, message):
    with pytest.raises(BackendError) as refused:
        Segmenter(tiny_weights, backend=backend, precision="fp32", device="cpu", backend_options=options)
    assert message in str(refused.value) and "\n" not in str(refused.value)
