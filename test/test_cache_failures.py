"""A cache is an optimisation, never a point of failure (issue 32, rule 1).

An unusable cache folder (a file, read-only, full) is one warning naming BISENETV2_CACHE and the run
goes on uncached; a failure caused by the machine's state is never cached as the `auto` decision; a
decision is replaced only once the new one is complete.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import AVX512_BF16_FLAGS

from bisenetv2_ros.inference import engine_cache, measured_auto
from bisenetv2_ros.inference.backends import create_backend
from bisenetv2_ros.inference.engine_cache import EngineCache
from bisenetv2_ros.inference.measured_auto import Candidate, caused_by_environment
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model

pytest.importorskip("onnxruntime", reason="the ONNX Runtime candidates need onnxruntime")

TIMES = {"torch fp32": 40.0, "onnxruntime fp32": 30.0, "onnxruntime int8": 10.0}


@pytest.fixture
def measuring(monkeypatch, simulated_cpu, tmp_path):
    monkeypatch.setenv("BISENETV2_AUTO", "measure")
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path / "cache"))
    simulated_cpu(AVX512_BF16_FLAGS, "Simulated EPYC")
    monkeypatch.setattr(measured_auto, "_importable", lambda module: module != "openvino")
    monkeypatch.setattr(measured_auto, "time_candidates",
                        lambda backends, frames, rounds=5, load_processes=0: {n: TIMES.get(n, 50.0) for n in backends})
    monkeypatch.setattr(engine_cache, "_warned_folders", set())


def decisions(root: Path) -> list[Path]:
    return sorted((root / "engines").glob("auto-*.auto"))


def test_a_cache_that_is_a_file_is_one_warning_naming_the_variable(tiny_weights, measuring, tmp_path, caplog,
                                                                   monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("BISENETV2_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        seg = Segmenter(tiny_weights, frame_size=(48, 80))
        again = Segmenter(tiny_weights, frame_size=(48, 80))
    assert seg.auto_decision.name == again.auto_decision.name == "onnxruntime fp32"
    warnings = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per folder and process, not per file
    assert f"$BISENETV2_CACHE={blocker}" in warnings[0] and "Not a directory" in warnings[0]
    assert blocker.read_text() == "x"
    frames = np.zeros((1, 48, 80, 3), np.uint8)
    assert seg.segment_batch(frames).shape == (1, 48, 80)


@pytest.mark.parametrize("name, reason", [("n" * 300, "File name too long"), ("loop", "Too many levels of symbolic links")])
def test_a_cache_path_the_file_system_refuses_is_one_warning(tiny_weights, measuring, tmp_path, caplog, monkeypatch,
                                                             name, reason):
    """Found beyond the issue's list: a cache folder named longer than the file system allows (or a loop
    of links) stopped the run with a bare `[Errno 36]` as the cache was looked up, before anything was built."""
    folder = tmp_path / name
    if name == "loop":
        os.symlink(tmp_path / "loop2", folder)
        os.symlink(folder, tmp_path / "loop2")
    monkeypatch.setenv("BISENETV2_CACHE", str(folder))
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        seg = Segmenter(tiny_weights, frame_size=(48, 80))
    assert seg.segment_batch(np.zeros((1, 48, 80, 3), np.uint8)).shape == (1, 48, 80)
    warnings = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1 and f"$BISENETV2_CACHE={folder}" in warnings[0] and reason in warnings[0], warnings


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_unwritable_cache_runs_int8_uncached(tiny_weights, tmp_path, monkeypatch, caplog, code):
    """The int8 graph (the ~24 s of `auto` before) is built and used; only its caching is skipped."""
    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(engine_cache, "write_atomic", refuse)
    monkeypatch.setattr(engine_cache, "_warned_folders", set())
    folder = tmp_path / "engines"
    payload, path = EngineCache(folder).load_or_build({"name": "x"}, {"k": 1}, lambda: b"graph", lambda b: b)
    assert payload == b"graph" and not path.exists()
    model, info = load_model(tiny_weights)
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        backend = create_backend("onnxruntime", model, info, "cpu", "int8", (64, 96), folder,
                                 {"calibration_frames": np.zeros((2, 64, 96, 3), np.uint8)})
        labels = backend.run(np.zeros((1, 64, 96, 3), np.uint8), "rgb")
    assert labels.shape == (1, 64, 96)
    assert "the engine cache folder given (--engine-cache / engine_cache_dir)" in caplog.text
    assert os.strerror(code) in caplog.text


def test_a_disk_full_failure_is_never_cached_as_the_decision(tiny_weights, measuring, tmp_path, caplog):
    """int8 failed with ENOSPC while measuring: fp32 runs now, and int8 is measured again next start."""
    model, info = load_model(tiny_weights)
    disk_full = [True]

    def build(candidate: Candidate):
        if candidate.precision == "int8" and disk_full[0]:
            raise RuntimeError("quantisation failed") from OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return create_backend(candidate.backend, model, info, "cpu", candidate.precision, (64, 96), None,
                              {"calibration_frames": np.zeros((2, 64, 96, 3), np.uint8)})

    def choose():
        return measured_auto.measured_backend("auto", "auto", model, info, (64, 96), (1, 48, 80), {}, True, None,
                                              build)

    root = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        first = choose()
    assert first.auto_decision.name == "onnxruntime fp32" and decisions(root) == []
    assert "onnxruntime int8 failed because of this machine's state" in caplog.text
    disk_full[0] = False  # space freed: the next start measures again and finds int8
    second = choose()
    assert second.auto_decision.name == "onnxruntime int8" and len(decisions(root)) == 1


def test_a_stopped_remeasure_keeps_the_previous_decision(tiny_weights, measuring, tmp_path, monkeypatch):
    from bisenetv2_ros.cli import commands as cli

    assert cli.main(["tune", "--weights", str(tiny_weights), "--frame-size", "48x80"]) == 0
    (path,) = decisions(tmp_path / "cache")
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(measured_auto, "measure", interrupted)
    assert cli.main(["tune", "--weights", str(tiny_weights), "--frame-size", "48x80", "--again"]) == 130
    assert path.read_bytes() == before, "the decision the node uses must survive a stopped tune --again"


@pytest.mark.parametrize("error,expected", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (PermissionError(errno.EACCES, "Permission denied"), True),
    (RuntimeError("[ONNXRuntimeError] : 1 : FAIL : write failed: No space left on device"), True),
    (MemoryError(), True),
    (RuntimeError("unsupported operator ConvInteger"), False),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
])
def test_what_counts_as_the_machine_state(error, expected):
    assert caused_by_environment(error) is expected
