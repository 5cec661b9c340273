"""Backends: fused pre/post-processing against a plain reference, parity, channel order, batches, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenetv2_ros.inference.backends import choose_backend
from bisenetv2_ros.inference.fused import FusedSegmentation, fold_batchnorm
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model

CPU_BACKENDS = ("torch", "onnxruntime")
ODD_FRAME_SIZES = ((1080, 1920), (375, 1242), (360, 480))


def reference_labels(model, info, input_size, frames: np.ndarray) -> np.ndarray:
    """Plain, unfused pipeline: float frames, resize, normalise, eager network, upsample logits, argmax."""
    norm = info.normalization
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255.0
    x = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False)
    x = (x - torch.tensor(norm.mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(norm.std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        logits, _ = model.eval().forward_logits(x.float())
        logits = F.interpolate(logits, size=frames.shape[1:3], mode="bilinear", align_corners=False)
    return logits.argmax(1).to(torch.uint8).numpy()


def random_frames(shape, seed=0) -> np.ndarray:
    # Smooth random images (a few blobs) give label maps with real regions, unlike white noise.
    rng = np.random.default_rng(seed)
    n, h, w = shape
    small = rng.integers(0, 256, (n, 6, 8, 3)).astype(np.float32)
    big = F.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    noise = rng.normal(0, 12, (n, h, w, 3))
    return np.clip(big.permute(0, 2, 3, 1).numpy() + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    model, info = load_model(tiny_weights)
    return model, info


@pytest.fixture(scope="module")
def segmenters(tiny_weights):
    return {name: Segmenter(tiny_weights, backend=name, device="cpu", precision="fp32") for name in CPU_BACKENDS}


def test_fold_batchnorm_matches_within_1e4(tiny):
    model, _ = tiny
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.detail.modules())
    remaining = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(remaining) == 1  # the context block's BN on pooled features follows no convolution
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 30  # the original is untouched
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (expected - got).abs().max().item() < 1e-4
    assert expected.abs().max().item() > 1e-2  # a non-trivial output was compared


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("frame_size", ODD_FRAME_SIZES)
def test_fused_pipeline_matches_plain_reference(segmenters, tiny, backend, frame_size):
    model, info = tiny
    seg = segmenters[backend]
    frames = random_frames((1, *frame_size), seed=sum(frame_size))
    expected = reference_labels(model, info, seg.input_size, frames)
    labels = seg.segment(frames[0])
    assert labels.shape == frame_size and labels.dtype == np.uint8
    assert len(np.unique(expected)) >= 2
    assert (labels == expected[0]).mean() >= 0.995


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_parity_with_torch_fp32_eager(segmenters, tiny, backend):
    model, info = tiny
    frames = random_frames((3, 120, 160), seed=7)
    eager = FusedSegmentation(model, info.normalization, segmenters[backend].input_size)
    with torch.inference_mode():
        expected = eager(torch.from_numpy(frames)).numpy()
    got = segmenters[backend].segment_batch(frames)
    assert (got == expected).mean() >= 0.995


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rgb_and_bgr_frames_give_the_same_labels(segmenters, backend):
    seg = segmenters[backend]
    frame = random_frames((1, 90, 130), seed=3)[0]
    rgb = seg.segment(frame, channel_order="rgb")
    assert np.array_equal(seg.segment(np.ascontiguousarray(frame[..., ::-1]), channel_order="bgr"), rgb)
    # and the order matters: the same pixels read as BGR are a different image
    assert not np.array_equal(seg.segment(frame, channel_order="bgr"), rgb)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batch_equals_per_frame(segmenters, backend):
    seg = segmenters[backend]
    frames = random_frames((3, 75, 101), seed=5)
    batch = seg.segment_batch(frames)
    assert batch.shape == (3, 75, 101)
    for frame, labels in zip(frames, batch):
        assert np.array_equal(seg.segment(frame), labels)
    assert np.array_equal(seg.segment_batch(list(frames)), batch)


def test_torchscript_compile_mode_matches_eager(tiny_weights):
    eager = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32")
    scripted = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32",
                         backend_options={"compile": "script"})
    frames = random_frames((2, 70, 90), seed=11)
    assert np.array_equal(scripted.segment_batch(frames), eager.segment_batch(frames))
    assert len(scripted.backend._compiled) == 1  # cached per shape
    scripted.segment_batch(frames)
    assert len(scripted.backend._compiled) == 1


def test_auto_backend_choice_is_logged(tiny_weights, caplog):
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        seg = Segmenter(tiny_weights, backend="auto", precision="fp32")
    expected = choose_backend("auto", "fp32")[0]
    assert seg.backend_name == expected
    messages = [r.getMessage() for r in caplog.records if r.name == "bisenetv2_ros"]
    assert any(m.startswith(f"backend auto -> {expected}") for m in messages), messages
    if not torch.cuda.is_available():
        assert seg.device == "cpu" and seg.backend_name == "onnxruntime"


def test_colorize_and_overlay(segmenters):
    seg = segmenters["torch"]
    labels = np.array([[0, 1], [10, 200]], dtype=np.uint8)
    colors = seg.colorize(labels)
    assert colors[0, 0].tolist() == list(seg.classes.palette[0])
    assert colors[1, 0].tolist() == list(seg.classes.palette[10])
    assert colors[1, 1].tolist() == [0, 0, 0]
    frame = np.full((2, 2, 3), 100, np.uint8)
    blended = seg.overlay(frame, labels, alpha=0.5)
    expected = np.round(0.5 * 100 + 0.5 * colors.astype(np.float64))
    assert np.abs(blended.astype(int) - expected).max() <= 1
    bgr = seg.overlay(frame, labels, alpha=1.0, channel_order="bgr")
    assert np.array_equal(bgr, colors[..., ::-1])


def test_clear_errors(tiny_weights):
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        Segmenter(tiny_weights, backend="tflite")
    # unsupported precisions: test_cpu_precision.py::test_unsupported_precisions_fail_clearly
    with pytest.raises(ValueError, match="needs calibration images"):
        Segmenter(tiny_weights, backend="tensorrt", precision="int8")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Segmenter(tiny_weights, backend="torch", precision="fp8")
    with pytest.raises(ValueError, match="channel_order"):
        Segmenter(tiny_weights, backend="torch", device="cpu").segment(np.zeros((8, 8, 3), np.uint8), "rgba")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Segmenter(tiny_weights, backend="torch", device="cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            Segmenter(tiny_weights, backend="tensorrt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CPU-only PyTorch or no GPU)")
@pytest.mark.parametrize("precision,minimum", [("fp32", 0.995), ("fp16", 0.98)])
def test_torch_cuda_parity(tiny_weights, segmenters, precision, minimum):
    seg = Segmenter(tiny_weights, backend="torch", device="cuda", precision=precision)
    frames = random_frames((2, 240, 320), seed=1)
    assert (seg.segment_batch(frames) == segmenters["torch"].segment_batch(frames)).mean() >= minimum


def _tensorrt_with_gpu() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(not _tensorrt_with_gpu(), reason="TensorRT 10 with a CUDA GPU is not available here")
@pytest.mark.parametrize("precision,minimum", [("fp32", 0.995), ("fp16", 0.98)])
def test_tensorrt_parity_and_engine_cache(tiny_weights, segmenters, tmp_path, precision, minimum):
    seg = Segmenter(tiny_weights, backend="tensorrt", device="cuda", precision=precision, engine_cache_dir=tmp_path)
    frames = random_frames((1, 240, 320), seed=2)
    assert (seg.segment_batch(frames) == segmenters["torch"].segment_batch(frames)).mean() >= minimum
    assert len(list(tmp_path.glob("*.engine"))) == 1
    again = Segmenter(tiny_weights, backend="tensorrt", device="cuda", precision=precision, engine_cache_dir=tmp_path)
    assert np.array_equal(again.segment_batch(frames), seg.segment_batch(frames))


def test_onnxruntime_frames_at_the_model_size_get_a_graph_without_resize(tiny_weights, tiny):
    seg = Segmenter(tiny_weights, backend="onnxruntime", device="cpu")
    backend = seg.backend
    height, width = seg.input_size
    assert backend.graph_shape((2, height, width)) == (None, height, width)
    assert backend.graph_shape((1, height + 1, width)) is None
    at_size = random_frames((2, height, width), seed=3)
    other = random_frames((1, 75, 130), seed=4)
    for frames in (at_size, other, at_size[:1]):
        expected = reference_labels(*tiny, seg.input_size, frames)
        assert (seg.segment_batch(frames) == expected).mean() >= 0.995
    graphs = {key[1] for key in backend._sessions}
    assert graphs == {None, (None, height, width)}  # one dynamic graph, one fixed-size graph for any batch
    # (order, graph shape, confidence, 1/8 class scores out: the CPU default, labels tail outside the graph)
    fixed = backend._sessions[("rgb", (None, height, width), False, True)]
    import onnx  # the fixed graph resizes nothing but the logits
    resizes = [n for n in onnx.load_from_string(backend.onnx_bytes("rgb", (None, height, width))).graph.node
               if n.op_type == "Resize"]
    dynamic_resizes = [n for n in onnx.load_from_string(backend.onnx_bytes("rgb", None)).graph.node if n.op_type == "Resize"]
    assert len(dynamic_resizes) == len(resizes) + 1
    assert fixed.get_inputs()[0].shape[1:] == [height, width, 3]
