"""BiSeNetV1 through the unchanged backends: torch and ONNX Runtime agree with a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_v1_checkpoint
from test_backends import random_frames, reference_labels

from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.models.bisenetv1 import BiSeNetV1
from bisenetv2_ros.weights.known_weights import load_model

pytest.importorskip("onnxruntime", reason="onnxruntime is needed for the ONNX Runtime backend")


@pytest.fixture(scope="module")
def segmenters(tiny_v1_weights):
    # fp32 pinned: the comparison is against an fp32 reference, whatever `auto` would pick on this CPU
    return {name: Segmenter(tiny_v1_weights, backend=name, device="cpu", precision="fp32")
            for name in ("torch", "onnxruntime")}


@pytest.mark.parametrize("frame_size", [(64, 96), (75, 131)])
def test_backends_match_the_torch_fp32_reference(segmenters, tiny_v1_weights, frame_size):
    model, info = load_model(tiny_v1_weights)
    assert isinstance(model, BiSeNetV1)
    frames = random_frames((2, *frame_size), seed=3)
    reference = reference_labels(model, info, (64, 96), frames)
    assert len(np.unique(reference)) >= 3  # a non-degenerate label map
    for name, segmenter in segmenters.items():
        labels = segmenter.segment_batch(frames)
        assert labels.shape == (2, *frame_size) and labels.dtype == np.uint8
        agreement = float((labels == reference).mean())
        assert agreement >= 0.995, f"{name}: {agreement:.4f} of the labels agree with the torch fp32 reference"


def test_pixel_shuffle_head_exports_and_agrees(tmp_path):
    path = make_tiny_v1_checkpoint(tmp_path / "ps.pt", seed=2, head_upsample="pixel_shuffle")
    model, info = load_model(path)
    frames = random_frames((1, 80, 120), seed=4)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False)
    mean = torch.tensor(info.normalization.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(info.normalization.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        reference = model((x - mean) / std, output_size=(80, 120)).argmax(1).to(torch.uint8).numpy()
    labels = Segmenter(path, backend="onnxruntime", device="cpu", precision="fp32").segment_batch(frames)
    assert float((labels == reference).mean()) >= 0.995


def test_every_batch_norm_of_bisenetv1_folds(tiny_v1_weights):
    from bisenetv2_ros.inference.fused import fold_batchnorm

    model, _ = load_model(tiny_v1_weights)
    folded = fold_batchnorm(model)
    # spatial 4, ResNet-18 20, ARMs 4, global context 1, refine 2, FFM 1, head 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 33
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # all follow a conv
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-3, rtol=1e-3)


def test_bisenetv1_onnx_export_cli_with_dynamic_frames(tiny_v1_weights, tmp_path):
    from bisenetv2_ros.cli.export import main
    from bisenetv2_ros.inference.fused import FusedSegmentation
    from bisenetv2_ros.inference.onnxruntime_backend import make_session

    assert main([str(tiny_v1_weights), str(tmp_path / "v1.onnx")]) == 0  # python -m bisenetv2_ros.export
    session = make_session(str(tmp_path / "v1.onnx"))
    model, info = load_model(tiny_v1_weights)
    for shape in ((1, 90, 120), (2, 57, 77)):
        frames = random_frames(shape, seed=shape[1])
        labels = session.run(None, {"frames": frames})[0]
        with torch.inference_mode():
            expected = FusedSegmentation(model, info.normalization, (64, 96))(torch.from_numpy(frames)).numpy()
        assert labels.shape == shape and float((labels == expected).mean()) >= 0.995
