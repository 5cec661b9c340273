"""ONNX export of the fused pipeline: checker, opset, dynamic and fixed frame sizes, the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bisenetv2_ros.backends.fused import FusedSegmentation
from bisenetv2_ros.backends.onnxruntime_backend import make_session
from bisenetv2_ros.known_weights import load_model
from bisenetv2_ros.export import check_onnx, export_onnx, main


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
    from bisenetv2_ros.export import channels_last_tail_onnx, fused_onnx_bytes

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
    from bisenetv2_ros.export import channels_last_tail_onnx, fused_onnx_bytes

    model, info = load_model(tiny_weights)
    once = channels_last_tail_onnx(fused_onnx_bytes(model, info.normalization, (64, 96)))
    with pytest.raises(ValueError, match=r"Resize\(sizes\) -> ArgMax\(axis=1\)"):
        channels_last_tail_onnx(once)  # already rewritten: the ArgMax is on axis 3


def test_export_command_line_channels_last_tail(tiny_weights, tmp_path):
    out = tmp_path / "cpu.onnx"
    assert main([str(tiny_weights), str(out), "--channels-last-tail"]) == 0
    assert any(n.name == "channels_last_tail/Transpose" for n in onnx.load(str(out)).graph.node)
    with pytest.raises(SystemExit):
        main([str(tiny_weights), str(tmp_path / "trt.onnx"), "--channels-last-tail", "--frame-size", "64x80",
              "--tensorrt", "fp16"])


def test_sessions_do_not_spin_by_default(tiny_weights, tmp_path):
    path = export_onnx(tiny_weights, tmp_path / "tiny.onnx")
    spin_option = "session.intra_op.allow_spinning"
    assert make_session(str(path)).get_session_options().get_session_config_entry(spin_option) == "0"
    with pytest.raises(Exception, match="does not have configuration"):  # spinning allowed: entry left unset (ONNX Runtime's default)
        make_session(str(path), spin=True).get_session_options().get_session_config_entry(spin_option)
