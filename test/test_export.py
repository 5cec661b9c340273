"""ONNX export of the fused pipeline: checker, opset, dynamic and fixed frame sizes, the commands,
and failures that end in one line with nothing written."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.cli import export as export_module
from bisenetv2_ros.cli.export import DEPRECATION, ExportRequest, export_checkpoint, export_onnx, main
from bisenetv2_ros.inference import tensorrt_backend
from bisenetv2_ros.inference.fused import FusedSegmentation
from bisenetv2_ros.inference.onnx_graph import channels_last_tail_onnx, check_onnx, fused_onnx_bytes
from bisenetv2_ros.inference.onnxruntime_backend import make_session
from bisenetv2_ros.output_safety import record_file
from bisenetv2_ros.weights.checkpoint import load_checkpoint
from bisenetv2_ros.weights.known_weights import load_model
from training.export import main as training_export_main
from training.export import run as training_export_run

REPO = Path(__file__).resolve().parents[1]
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TENSORRT = "building a TensorRT engine needs the TensorRT 10 Python package 'tensorrt', which is not installed here"
needs_no_tensorrt = pytest.mark.skipif(HAVE_TENSORRT, reason="checks the failure without TensorRT; it is installed")


def eager_labels(weights, frames, input_size=(64, 96), channel_order="rgb"):
    model, info = load_model(weights)
    with torch.inference_mode():
        return FusedSegmentation(model, info.normalization, input_size, channel_order)(torch.from_numpy(frames)).numpy()


def frames_of(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_dynamic_export_passes_checker_and_runs_two_frame_sizes(tiny_weights, tmp_path):
    path = export_onnx(tiny_weights, tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    session = make_session(str(path))
    for shape in ((1, 120, 160, 3), (2, 375, 500, 3)):
        frames = frames_of(shape, seed=shape[1])
        labels = session.run(None, {"frames": frames})[0]
        assert labels.shape == shape[:3] and labels.dtype == np.uint8
        assert (labels == eager_labels(tiny_weights, frames)).mean() >= 0.995


def test_fixed_size_bgr_export(tiny_weights, tmp_path):
    path = export_onnx(tiny_weights, tmp_path / "fixed.onnx", input_size=(64, 96), frame_size=(90, 120),
                       channel_order="bgr", batch=1, opset=18)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 90, 120, 3]
    frames = frames_of((1, 90, 120, 3), seed=4)
    labels = make_session(str(path)).run(None, {"frames": frames})[0]
    assert (labels == eager_labels(tiny_weights, frames[..., ::-1].copy())).mean() >= 0.995


def test_export_rejects_old_opset_and_bad_sizes(tiny_weights, tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(tiny_weights, tmp_path / "old.onnx", opset=13)
    with pytest.raises(ValueError, match="frame_size"):
        export_onnx(tiny_weights, tmp_path / "bad.onnx", frame_size=(0, 10))
    assert not (tmp_path / "old.onnx").exists()


def test_check_onnx_rejects_a_broken_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(Exception):
        check_onnx(bad)


def test_export_command_line(tiny_weights, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main([str(tiny_weights), str(out), "--input-size", "32x48", "--frame-size", "64x80"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [64, 80, 3]


@pytest.mark.parametrize("frame_size", ["dynamic", (90, 120)])
def test_channels_last_tail_gives_the_same_labels(tiny_weights, tmp_path, frame_size):
    model, info = load_model(tiny_weights)
    plain = fused_onnx_bytes(model, info.normalization, (64, 96), frame_size)
    rewritten = channels_last_tail_onnx(plain)
    check_onnx(rewritten)
    graph = onnx.load_from_string(rewritten).graph
    (argmax,) = [n for n in graph.node if n.op_type == "ArgMax"]
    assert onnx.helper.get_attribute_value(next(a for a in argmax.attribute if a.name == "axis")) == 3
    transposes = [n for n in graph.node if n.name == "channels_last_tail/Transpose"]
    assert len(transposes) == 1 and list(transposes[0].attribute[0].ints) == [0, 2, 3, 1]
    shapes = [(1, 90, 120, 3)] if frame_size != "dynamic" else [(1, 90, 120, 3), (2, 61, 203, 3)]
    for shape in shapes:
        frames = frames_of(shape, seed=shape[2])
        expected = make_session(plain).run(None, {"frames": frames})[0]
        got = make_session(rewritten).run(None, {"frames": frames})[0]
        assert got.shape == shape[:3] and len(np.unique(expected)) >= 2
        assert np.array_equal(got, expected)


def test_channels_last_tail_rejects_a_graph_without_the_pattern(tiny_weights):
    model, info = load_model(tiny_weights)
    once = channels_last_tail_onnx(fused_onnx_bytes(model, info.normalization, (64, 96)))
    with pytest.raises(ValueError, match=r"Resize\(sizes\) -> ArgMax\(axis=1\)"):
        channels_last_tail_onnx(once)  # already rewritten: the ArgMax is on axis 3


def test_export_command_line_channels_last_tail(tiny_weights, tmp_path, capsys):
    out = tmp_path / "cpu.onnx"
    assert main([str(tiny_weights), str(out), "--channels-last-tail"]) == 0
    assert any(n.name == "channels_last_tail/Transpose" for n in onnx.load(str(out)).graph.node)
    assert capsys.readouterr().err.splitlines() == [DEPRECATION]  # the old command works, and says so


def test_sessions_do_not_spin_by_default(tiny_weights, tmp_path):
    path = export_onnx(tiny_weights, tmp_path / "tiny.onnx")
    spin_option = "session.intra_op.allow_spinning"
    assert make_session(str(path)).get_session_options().get_session_config_entry(spin_option) == "0"
    with pytest.raises(Exception, match="does not have configuration"):  # spinning allowed: entry left unset (ONNX Runtime's default)
        make_session(str(path), spin=True).get_session_options().get_session_config_entry(spin_option)


# ------------------------------------------------------------------------------------------------
# bisenetv2 export: the one export command


def onnx_dims(path):
    return [d.dim_value or d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


def test_bisenetv2_export_writes_deploy_and_onnx(tiny_weights, tmp_path, capsys):
    out, model = tmp_path / "deploy.pt", tmp_path / "sub" / "m.onnx"
    assert cli.main(["export", str(tiny_weights), "-o", str(out), "--onnx", str(model), "--input-size", "32x48"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"deploy checkpoint (deploy -> deploy) -> {out}",
                     f"ONNX model (uint8 frames in, uint8 labels out; network 32x48) -> {model}"]
    assert load_checkpoint(out).kind == "deploy"
    assert onnx_dims(model) == ["batch", "height", "width", 3]
    # no staged leftovers; each folder's record of what export wrote (what --overwrite recognises)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        ".bisenetv2-outputs.json", "deploy.pt", "sub", "sub/.bisenetv2-outputs.json", "sub/m.onnx"]


def test_bisenetv2_export_fixed_shape_bgr(tiny_weights, tmp_path):
    model = tmp_path / "fixed.onnx"
    assert cli.main(["export", str(tiny_weights), "--onnx", str(model), "--fixed-shape", "--batch", "2",
                     "--frame-size", "40x56", "--channel-order", "bgr", "--opset", "18"]) == 0
    assert onnx_dims(model) == [2, 40, 56, 3]
    frames = frames_of((2, 40, 56, 3), seed=9)
    labels = make_session(str(model)).run(None, {"frames": frames})[0]
    assert (labels == eager_labels(tiny_weights, frames[..., ::-1].copy())).mean() >= 0.995


def test_bisenetv2_export_rejects_a_bad_size_before_reading_anything(tiny_weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["export", str(tiny_weights), "--onnx", str(tmp_path / "m.onnx"), "--input-size", "512,1024x3"])
    assert raised.value.code == 2 and "expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert cli.main(["export", str(tiny_weights), "--onnx", str(tmp_path / "m.onnx"), "--opset", "13"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bisenetv2 export: error: opset must be >= 17 (the fused graph uses opset-17 operators), got 13"]
    assert list(tmp_path.iterdir()) == []


@needs_no_tensorrt
def test_bisenetv2_export_engine_without_tensorrt_writes_nothing(tiny_weights, tmp_path, capsys):
    argv = ["export", str(tiny_weights), "-o", str(tmp_path / "d.pt"), "--onnx", str(tmp_path / "out" / "m.onnx"),
            "--engine", str(tmp_path / "engines")]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"bisenetv2 export: error: {NO_TENSORRT}"] and captured.out == ""
    assert list(tmp_path.iterdir()) == []


@needs_no_tensorrt
def test_old_module_command_with_tensorrt_fails_in_one_line_and_writes_nothing(tiny_weights, tmp_path):
    """python -m bisenetv2_ros.export ... --tensorrt, as a user runs it: exit 1, no traceback, no .onnx."""
    result = subprocess.run([sys.executable, "-m", "bisenetv2_ros.export", str(tiny_weights), str(tmp_path / "m.onnx"),
                             "--frame-size", "64x80", "--tensorrt", "fp16", "--engine-cache", str(tmp_path / "eng")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [DEPRECATION, f"python -m bisenetv2_ros.export: error: {NO_TENSORRT}"]
    assert list(tmp_path.iterdir()) == []


@needs_no_tensorrt
def test_training_export_with_tensorrt_fails_in_one_line_and_writes_nothing(tiny_weights, tmp_path, capsys):
    argv = [str(tiny_weights), str(tmp_path / "d.pt"), "--onnx", str(tmp_path / "m.onnx"),
            "--tensorrt", str(tmp_path / "eng")]
    assert training_export_run(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        "training/export.py: --tensorrt is deprecated; use --engine CACHE_DIR",
        f"training/export.py: error: {NO_TENSORRT}"]
    assert list(tmp_path.iterdir()) == []


def test_no_gpu_is_found_before_anything_is_written(tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tensorrt_backend, "tensorrt_importable", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "_import_tensorrt", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "cuda_available", lambda: False)
    assert cli.main(["export", str(tiny_weights), "-o", str(tmp_path / "d.pt"), "--engine", str(tmp_path / "e")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bisenetv2 export: error: building a TensorRT engine needs a CUDA GPU, and torch sees none here"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_engine_build_leaves_no_file_and_keeps_the_old_ones(tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tensorrt_backend, "require_engine_build", lambda *args, **kwargs: None)

    def failing_build(*args, **kwargs):
        raise tensorrt_backend.BackendError("TensorRT failed to build a fp16 engine")

    monkeypatch.setattr(tensorrt_backend, "build_engine_cached", failing_build)
    (tmp_path / "m.onnx").write_bytes(b"the previous export")
    record_file(tmp_path / "m.onnx", "bisenetv2 export")  # as a previous `bisenetv2 export` leaves it
    assert cli.main(["export", str(tiny_weights), "-o", str(tmp_path / "new" / "d.pt"), "--onnx",
                     str(tmp_path / "m.onnx"), "--engine", str(tmp_path / "e"), "--overwrite"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bisenetv2 export: error: TensorRT failed to build a fp16 engine"]
    # neither the new folder nor staged files
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bisenetv2-outputs.json", "m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"the previous export"


def test_an_interrupted_export_leaves_nothing(tiny_weights, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "fused_onnx_bytes", interrupted)
    checkpoint = load_checkpoint(tiny_weights)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, ExportRequest(output=tmp_path / "d.pt", onnx=tmp_path / "m.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_the_prebuilt_engine_is_the_one_the_backend_looks_for(tiny_weights, tmp_path, monkeypatch, capsys):
    """The engine is built from the graph TensorRTBackend builds itself (same bytes, same cache slot),
    so the node finds the prebuilt engine instead of building its own."""
    builds = []

    def fake_build(onnx_bytes, directory, precision, frame_shape, channel_order, workspace_gib, calibration, name,
                   device):
        builds.append((onnx_bytes, directory, precision, frame_shape, channel_order, name))
        return directory / "engine"

    monkeypatch.setattr(tensorrt_backend, "require_engine_build", lambda *args, **kwargs: None)
    monkeypatch.setattr(tensorrt_backend, "build_engine_cached", fake_build)
    assert cli.main(["export", str(tiny_weights), "--engine", str(tmp_path), "--frame-size", "40x56", "--batch", "2",
                     "--precision", "int8", "--calibration-images", str(tmp_path), "--channel-order", "bgr"]) == 0
    assert capsys.readouterr().out.strip() == f"TensorRT int8 engine for 2x40x56 frames -> {tmp_path / 'engine'}"
    model, info = load_model(tiny_weights)
    expected = tensorrt_backend.engine_onnx_bytes(model, info.normalization, info.train_resolution, (2, 40, 56), "bgr")
    assert builds == [(expected, tmp_path, "int8", (2, 40, 56), "bgr", tensorrt_backend.ENGINE_NAME)]


def test_half_export_builds_graphs_from_the_stored_fp16_weights(tiny_weights, tmp_path, monkeypatch):
    seen = []
    real = export_module.fused_onnx_bytes

    def spy(model, *args, **kwargs):
        seen.append(model.state_dict()["head.classifier.weight"].clone())
        return real(model, *args, **kwargs)

    monkeypatch.setattr(export_module, "fused_onnx_bytes", spy)
    export_checkpoint(load_checkpoint(tiny_weights), ExportRequest(output=tmp_path / "d.pt", half=True,
                                                                   onnx=tmp_path / "m.onnx"))
    original = load_checkpoint(tiny_weights).state_dict["head.classifier.weight"]
    assert torch.equal(seen[0], original.half().float()) and not torch.equal(seen[0], original)


def test_training_export_old_size_flag_still_works_with_a_note(tiny_weights, tmp_path, capsys):
    out = training_export_main([str(tiny_weights), str(tmp_path / "d.pt"), "--onnx", str(tmp_path / "m.onnx"),
                                "--onnx-input-size", "32", "48"])
    captured = capsys.readouterr()
    assert out == tmp_path / "d.pt" and out.is_file()
    assert captured.err.splitlines() == ["training/export.py: --onnx-input-size is deprecated; use --input-size HxW"]
    assert f"ONNX model (uint8 frames in, uint8 labels out; network 32x48) -> {tmp_path / 'm.onnx'}" in captured.out


def test_the_export_flags_load_without_torch():
    """`bisenetv2 --help` builds the export flags from bisenetv2_ros.cli.export: that must not load torch."""
    code = ("import sys, argparse\nimport bisenetv2_ros.cli.export as e\ne.add_arguments(argparse.ArgumentParser())\n"
            "print(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_training_export_rejects_a_foreign_metrics_file_in_one_line(tiny_weights, tmp_path, capsys):
    (tmp_path / "val.json").write_text('{"accuracy": 0.9}')
    assert training_export_run([str(tiny_weights), str(tmp_path / "d.pt"), "--metrics", str(tmp_path / "val.json")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"training/export.py: error: --metrics {tmp_path / 'val.json'} is not the JSON of "
        "training/evaluate.py --output (KeyError('miou'))"]
    assert [p.name for p in tmp_path.iterdir()] == ["val.json"]
