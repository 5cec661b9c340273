"""Confidence output: round(255 x top-class softmax probability) from every backend and precision,
against a float64 reference, with the labels tail unchanged when it is off."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from test_backends import random_frames

from bisenetv2_ros.inference import cpu
from bisenetv2_ros.inference.backend_base import Backend
from bisenetv2_ros.inference.backends import BackendError
from bisenetv2_ros.inference.cpu import native_bf16
from bisenetv2_ros.inference.onnx_graph import channels_last_tail_onnx, fused_onnx_bytes
from bisenetv2_ros.inference.onnxruntime_backend import OnnxRuntimeBackend, make_session
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model

CPU_BACKENDS = ("torch", "onnxruntime")


def reference(model, info, input_size, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain float64 pipeline -> (labels, confidence, 255 x top probability before rounding) at the frame
    size; the top probability taken at the logits' resolution and upsampled bilinearly."""
    norm = info.normalization
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255.0
    x = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False)
    x = (x - torch.tensor(norm.mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(norm.std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        small, _ = model.eval().double().forward_logits(x)
        model.float()
        logits = F.interpolate(small, size=frames.shape[1:3], mode="bilinear", align_corners=False)
    top = F.interpolate(torch.softmax(small, dim=1).amax(dim=1, keepdim=True), size=frames.shape[1:3],
                        mode="bilinear", align_corners=False)[:, 0] * 255
    return logits.argmax(1).to(torch.uint8).numpy(), top.round().to(torch.uint8).numpy(), top.numpy()


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_model(tiny_weights)


@pytest.fixture(scope="module")
def segmenters(tiny_weights):
    return {name: Segmenter(tiny_weights, backend=name, device="cpu", precision="fp32") for name in CPU_BACKENDS}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("frame_size", [(120, 160), (75, 101)])
def test_confidence_matches_the_float64_reference(segmenters, tiny, backend, frame_size):
    model, info = tiny
    seg = segmenters[backend]
    frames = random_frames((2, *frame_size), seed=sum(frame_size))
    expected_labels, expected, top = reference(model, info, seg.input_size, frames)
    labels, confidence = seg.segment_batch(frames, confidence=True)
    assert confidence.shape == labels.shape == (2, *frame_size) and confidence.dtype == np.uint8
    # A real spread of values was compared, not a constant map (the tiny model is untrained: low values).
    assert expected.max() - expected.min() >= 20
    difference = np.abs(confidence.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert (difference == 0).mean() >= 0.99
    # Where the two differ, the float64 value sits next to a rounding boundary.
    fraction = top - np.floor(top)
    assert np.all(np.abs(fraction[difference > 0] - 0.5) < 0.01)
    assert (labels == expected_labels).mean() >= 0.995
    # The lowest possible value is 255 / classes: every class equally likely.
    assert confidence.min() >= int(np.floor(255 / len(info.classes)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_labels_are_the_same_with_and_without_confidence(segmenters, backend):
    seg = segmenters[backend]
    frames = random_frames((2, 90, 130), seed=8)
    labels, confidence = seg.segment_batch(frames, confidence=True)
    assert np.array_equal(labels, seg.segment_batch(frames))
    single_labels, single_confidence = seg.segment(frames[1], confidence=True)
    assert np.array_equal(single_labels, labels[1]) and np.array_equal(single_confidence, confidence[1])
    bgr_labels, bgr_confidence = seg.segment(np.ascontiguousarray(frames[0][..., ::-1]), "bgr", confidence=True)
    assert np.array_equal(bgr_labels, labels[0]) and np.array_equal(bgr_confidence, confidence[0])


def _ops(data: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(data).graph.node]


@pytest.mark.parametrize("opset", [17, 18])
def test_onnx_graph_with_and_without_confidence(tiny, opset):
    model, info = tiny
    plain = fused_onnx_bytes(model, info.normalization, (64, 96), "dynamic", opset=opset)
    both = fused_onnx_bytes(model, info.normalization, (64, 96), "dynamic", opset=opset, confidence=True)
    # Off: one output and no confidence operators at all.
    assert [o.name for o in onnx.load_from_string(plain).graph.output] == ["labels"]
    assert "Softmax" not in _ops(plain) and "ReduceMax" not in _ops(plain)
    assert [o.name for o in onnx.load_from_string(both).graph.output] == ["labels", "confidence"]
    assert _ops(both).count("Softmax") == 1 and _ops(both).count("Resize") == _ops(plain).count("Resize") + 1
    # The CPU graph (channels-last labels tail) gives the plain graph's labels and confidence.
    channels_last = channels_last_tail_onnx(both)
    frames = random_frames((2, 75, 101), seed=opset)
    expected = make_session(both).run(None, {"frames": frames})
    got = make_session(channels_last).run(None, {"frames": frames})
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert np.array_equal(got[0], make_session(plain).run(None, {"frames": frames})[0])


def test_int8_confidence_keeps_the_softmax_float_and_stays_close(tiny, segmenters, tmp_path):
    model, info = tiny
    calibration = random_frames((4, *info.train_resolution), seed=4)
    backend = OnnxRuntimeBackend(model, info.normalization, info.train_resolution, "cpu", "int8",
                                 calibration_frames=calibration, cache_dir=tmp_path)
    frames = random_frames((2, 90, 130), seed=9)
    labels, confidence = backend.run(frames, confidence=True)
    # Each graph is quantised on its own (ONNX Runtime may fuse the two differently): nearly the same labels.
    agreement = (labels == backend.run(frames)).mean()
    print("int8 labels agreement with/without confidence", agreement)
    assert agreement >= 0.99
    _, fp32 = segmenters["onnxruntime"].segment_batch(frames, confidence=True)
    assert np.abs(confidence.astype(int) - fp32.astype(int)).mean() < 8
    # The quantised graph quantises the network only: nothing quantised feeds the softmax.
    from bisenetv2_ros.inference.int8 import quantize_fused_onnx, quantizer_settings

    quantised = onnx.load_from_string(quantize_fused_onnx(backend.onnx_bytes("rgb", None, confidence=True), calibration,
                                                          **quantizer_settings(cpu.cpu_info().flags)))
    producers = {output: node for node in quantised.graph.node for output in node.output}
    softmax = next(node for node in quantised.graph.node if node.op_type == "Softmax")
    assert producers[softmax.input[0]].op_type == "Conv"
    assert "DequantizeLinear" in [n.op_type for n in quantised.graph.node]


def test_bf16_confidence_stays_close_to_fp32(tiny_weights, segmenters):
    seg = Segmenter(tiny_weights, backend="torch", device="cpu", precision="bf16",
                    backend_options={"emulate_bf16": not native_bf16(cpu.cpu_info().flags)})
    frames = random_frames((1, 90, 130), seed=10)
    labels, confidence = seg.segment_batch(frames, confidence=True)
    _, fp32 = segmenters["torch"].segment_batch(frames, confidence=True)
    assert confidence.dtype == np.uint8 and confidence.shape == labels.shape
    assert np.abs(confidence.astype(int) - fp32.astype(int)).mean() < 4


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_confidence(tiny, tiny_weights, segmenters, tmp_path, precision):
    pytest.importorskip("openvino")
    if precision == "bf16" and not native_bf16(cpu.cpu_info().flags):
        pytest.skip("OpenVINO bf16 needs a CPU with native bf16")
    from bisenetv2_ros.inference.openvino_backend import OpenVinoBackend

    model, info = tiny
    options = {"calibration_frames": random_frames((4, *info.train_resolution), seed=4)} if precision == "int8" else {}
    backend = OpenVinoBackend(model, info.normalization, info.train_resolution, "cpu", precision, cache_dir=tmp_path,
                              **options)
    frames = random_frames((2, 90, 130), seed=13)
    labels, confidence = backend.run(frames, confidence=True)
    assert confidence.dtype == np.uint8 and confidence.shape == labels.shape == (2, 90, 130)
    assert (labels == backend.run(frames)).mean() >= 0.99
    fp32_labels, fp32 = segmenters["onnxruntime"].segment_batch(frames, confidence=True)
    difference = np.abs(confidence.astype(int) - fp32.astype(int))
    if precision == "fp32":
        assert np.array_equal(labels, fp32_labels) or (labels == fp32_labels).mean() >= 0.999
        assert difference.max() <= 1
    else:
        assert difference.mean() < 8


def test_backend_without_a_confidence_output_says_so():
    class LabelsOnly(Backend):
        name = "labels-only"

        def _run(self, frames, channel_order):
            return np.zeros(frames.shape[:3], np.uint8)

    backend = LabelsOnly("cpu", "fp32", (8, 8))
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    assert backend.run(frames).shape == (1, 8, 8)
    with pytest.raises(BackendError, match="labels-only backend has no confidence output"):
        backend.run(frames, confidence=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend,precision", [("torch", "fp32"), ("torch", "fp16"), ("tensorrt", "fp32"),
                                               ("tensorrt", "fp16")])
def test_gpu_confidence_close_to_cpu_fp32(tiny_weights, segmenters, tmp_path, backend, precision):
    import importlib.util

    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed")
    seg = Segmenter(tiny_weights, backend=backend, device="cuda", precision=precision, engine_cache_dir=tmp_path)
    frames = random_frames((2, 120, 160), seed=12)
    labels, confidence = seg.segment_batch(frames, confidence=True)
    cpu_labels, cpu_confidence = segmenters["torch"].segment_batch(frames, confidence=True)
    assert np.array_equal(labels, seg.segment_batch(frames))
    assert (labels == cpu_labels).mean() >= 0.98
    # TF32 convolutions (TensorRT and cuDNN defaults on recent GPUs) move fp32 scores slightly too
    assert np.abs(confidence.astype(int) - cpu_confidence.astype(int)).mean() < (0.5 if precision == "fp32" else 2)


def test_confidence_with_test_time_augmentation_is_refused(tiny_weights):
    from bisenetv2_ros.inference.tta import TTASettings

    seg = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32", tta=TTASettings(scales=(1.0,)))
    frames = random_frames((1, 40, 56), seed=14)
    assert seg.segment_batch(frames).shape == (1, 40, 56)
    with pytest.raises(ValueError, match="confidence is not available with test-time augmentation"):
        seg.segment_batch(frames, confidence=True)
