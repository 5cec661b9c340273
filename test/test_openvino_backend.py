"""The OpenVINO backend: fp32 against the torch fp32 reference, int8 from the weights' calibration table,
bf16 only where the CPU has it, its cache, and a clear error without the package."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from conftest import CAMVID_DIR
from test_backends import random_frames, reference_labels
from test_calibration_table import _camvid_frames_or_synthetic

from bisenetv2_ros.inference import cpu
from bisenetv2_ros.inference.backends import BackendError, openvino_importable
from bisenetv2_ros.inference.cpu import auto_precision, cpu_info, native_bf16
from bisenetv2_ros.inference.fused import FusedSegmentation
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model

HERE = cpu_info()
needs_openvino = pytest.mark.skipif(not openvino_importable(), reason="openvino is not installed (pip install openvino)")


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_model(tiny_weights)


@pytest.fixture(scope="module")
def fp32(tiny_weights, tmp_path_factory):
    return Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp32",
                     engine_cache_dir=tmp_path_factory.mktemp("ov_cache"))


@needs_openvino
@pytest.mark.parametrize("frame_size", ((360, 480), (375, 1242)))
def test_fp32_matches_the_plain_fp32_reference(fp32, tiny, frame_size):
    model, info = tiny
    frames = random_frames((1, *frame_size), seed=sum(frame_size))
    expected = reference_labels(model, info, fp32.input_size, frames)
    labels = fp32.segment(frames[0])
    assert fp32.backend_name == "openvino" and fp32.precision == "fp32"
    assert labels.shape == frame_size and labels.dtype == np.uint8 and len(np.unique(expected)) >= 2
    assert (labels == expected[0]).mean() >= 0.995


@needs_openvino
def test_fp32_matches_torch_fp32_eager_at_the_model_size_in_both_orders_and_batches(fp32, tiny):
    model, info = tiny
    frames = random_frames((3, *fp32.input_size), seed=8)
    with torch.inference_mode():
        expected = FusedSegmentation(model, info.normalization, fp32.input_size)(torch.from_numpy(frames)).numpy()
    got = fp32.segment_batch(frames)
    assert got.shape == expected.shape and (got == expected).mean() >= 0.995
    bgr = np.ascontiguousarray(frames[..., ::-1])
    assert np.array_equal(fp32.segment_batch(bgr, channel_order="bgr"), got)
    assert np.array_equal(fp32.segment(frames[1]), got[1])  # batch of 1 == row of a batch of 3


@needs_openvino
def test_compiled_models_are_cached_and_a_changed_setting_rebuilds(tiny_weights, tmp_path, caplog):
    frame = random_frames((1, 50, 70), seed=1)[0]
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        first = Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp32", engine_cache_dir=tmp_path)
        labels = first.segment(frame)
    files = list(tmp_path.glob("openvino-*-fp32-1x50x70-rgb.engine"))
    assert len(files) == 1 and "engine cache miss" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        again = Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp32", engine_cache_dir=tmp_path)
        assert np.array_equal(again.segment(frame), labels)
    assert "engine cache hit" in caplog.text and "compiling" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        other = Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp32", engine_cache_dir=tmp_path,
                          backend_options={"threads": 1})
        assert np.array_equal(other.segment(frame), labels)
    assert "is stale (changed: config)" in caplog.text


@needs_openvino
def test_int8_compiles_the_quantised_graph_and_agrees_with_fp32(tmp_path):
    """The embedded model, calibrated from the table it carries; real CamVid frames where present."""
    frames = _camvid_frames_or_synthetic(CAMVID_DIR, count=4)
    reference = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="fp32")
    quantised = Segmenter("camvid", backend="openvino", device="cpu", precision="int8", engine_cache_dir=tmp_path)
    assert quantised.backend.calibration.table is not None
    agreement = np.mean([(quantised.segment(f) == reference.segment(f)).mean() for f in frames])
    assert agreement >= 0.99, f"openvino int8 labels agree with fp32 on {100 * agreement:.2f} % of pixels"
    assert list(tmp_path.glob("openvino-*-int8-1x480x640-rgb.engine"))


@needs_openvino
@pytest.mark.skipif(not native_bf16(HERE.flags), reason=f"this CPU ({HERE.model}) has no native bf16 "
                    "(amx_bf16 / avx512_bf16): OpenVINO would run f32, so the backend refuses bf16 (tested below)")
def test_bf16_where_native_agrees_with_fp32(tmp_path):
    frames = _camvid_frames_or_synthetic(CAMVID_DIR, count=4)
    reference = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="fp32")
    bf16 = Segmenter("camvid", backend="openvino", device="cpu", precision="bf16", engine_cache_dir=tmp_path)
    agreement = np.mean([(bf16.segment(f) == reference.segment(f)).mean() for f in frames])
    assert agreement >= 0.99, f"openvino bf16 labels agree with fp32 on {100 * agreement:.2f} % of pixels"


@needs_openvino
def test_bf16_without_native_support_is_refused(tiny_weights, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("Simulated AVX2 CPU", frozenset({"avx2", "fma"})))
    with pytest.raises(BackendError, match="needs a CPU with native bf16.*Simulated AVX2 CPU"):
        Segmenter(tiny_weights, backend="openvino", device="cpu", precision="bf16")


def test_a_missing_openvino_is_one_clear_error(tiny_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendError, match=r"needs the openvino package.*pip install openvino"):
        Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp32")


def test_openvino_runs_on_the_cpu_only(tiny_weights):
    with pytest.raises(BackendError, match="fp16"):
        Segmenter(tiny_weights, backend="openvino", device="cpu", precision="fp16")
    with pytest.raises(BackendError, match="not available with the openvino backend on cuda|no CUDA device"):
        Segmenter(tiny_weights, backend="openvino", device="cuda", precision="fp32")


@pytest.mark.parametrize("flags, calibration, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, True, "bf16"),
    ({"avx2", "fma"}, True, "int8"),
    ({"avx2", "fma"}, False, "fp32"),
    (set(), True, "fp32"),
])
def test_auto_precision_with_the_openvino_backend_keeps_it(flags, calibration, expected):
    precision, backend, _ = auto_precision(frozenset(flags), "openvino", calibration)
    assert (precision, backend) == (expected, "openvino")
