"""The labels tail outside the graph (inference/labels_tail.py): the same labels as upsampling every
class score to the frame and taking the argmax, with at most 8 bytes of scratch per frame pixel whatever
the class count (measured with tracemalloc), and ONNX Runtime's default path using it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenetv2_ros.inference.labels_tail import MAX_SCRATCH_PER_PIXEL, source_index, upsample_argmax


def reference(logits: np.ndarray, size, align_corners=False) -> np.ndarray:
    scores = torch.from_numpy(logits)
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=align_corners).argmax(1).to(torch.uint8).numpy()


def region_logits(classes: int, height: int, width: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    """Scores like a network's: smooth regions (a coarse random label map, blurred) plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (batch, max(1, height // 4), max(1, width // 4)))
    one_hot = np.eye(classes, dtype=np.float32)[coarse].transpose(0, 3, 1, 2)
    smooth = F.interpolate(torch.from_numpy(one_hot), size=(height, width), mode="bilinear").numpy()
    return (4 * smooth + rng.normal(0, 0.3, (batch, classes, height, width))).astype(np.float32)


@pytest.mark.parametrize("align_corners", [False, True])
def test_source_index_matches_pytorch(align_corners):
    # An identity-like probe: upsampling the positions themselves recovers lower + weight exactly.
    for source, target in ((36, 1080), (48, 1920), (36, 480), (7, 13), (5, 5), (1, 9)):
        lower, upper, weight = source_index(source, target, align_corners)
        positions = torch.arange(source, dtype=torch.float32).view(1, 1, source, 1)
        expected = F.interpolate(positions, size=(target, 1), mode="bilinear", align_corners=align_corners).view(-1)
        assert np.allclose(lower + weight * (upper - lower), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("classes, small, size, align_corners", [
    (11, (36, 48), (1080, 1920), False),   # the embedded model at 1080p
    (11, (36, 48), (480, 640), False),
    (19, (8, 12), (50, 70), False),        # not a multiple of the scores' size
    (3, (5, 7), (64, 96), True),
    (150, (6, 8), (48, 64), False),        # many classes (ADE20K)
    (2, (9, 9), (9, 9), False),            # the scores' own size
])
def test_labels_equal_the_full_resolution_argmax(classes, small, size, align_corners):
    logits = region_logits(classes, *small, seed=classes, batch=2)
    got = upsample_argmax(logits, size, align_corners)
    expected = reference(logits, size, align_corners)
    assert got.shape == (2, *size) and got.dtype == np.uint8
    # Equal except where two interpolated scores tie to float32 rounding (the sums run in another order).
    assert (got == expected).mean() >= 0.99999
    scores = F.interpolate(torch.from_numpy(logits), size=size, mode="bilinear", align_corners=align_corners).numpy()
    differing = np.argwhere(got != expected)
    for n, y, x in differing:
        pixel = scores[n, :, y, x]
        assert abs(pixel[got[n, y, x]] - pixel[expected[n, y, x]]) <= 1e-5 * max(1.0, abs(pixel).max())


@pytest.mark.parametrize("classes", [2, 11, 19, 150])
def test_scratch_stays_within_8_bytes_per_frame_pixel(classes):
    height, width = 720, 1280
    logits = region_logits(classes, 90, 160, seed=1)  # noisy scores: many border cells, the worst case
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        labels = upsample_argmax(logits, (height, width))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    scratch = peak - labels.nbytes  # the labels are the output, not scratch
    assert scratch <= MAX_SCRATCH_PER_PIXEL * height * width, (classes, scratch / (height * width))
    # The graph's tail would hold 4 x classes bytes per pixel of scores: the bound is real for 2+ classes.
    assert (labels == reference(logits, (height, width))).mean() >= 0.99999


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"logits must be \(N, C, h, w\) with 1..256 classes, got shape \(3, 4\)"):
        upsample_argmax(np.zeros((3, 4), np.float32), (8, 8))
    with pytest.raises(ValueError, match="size must be"):
        upsample_argmax(np.zeros((1, 2, 3, 4), np.float32), (0, 8))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnxruntime_labels_are_the_same_with_the_tail_outside(tiny_weights, tmp_path, precision):
    from bisenetv2_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    from bisenetv2_ros.weights.known_weights import load_model

    model, info = load_model(tiny_weights)
    rng = np.random.default_rng(0)
    extra = {"calibration_frames": rng.integers(0, 256, (4, 64, 96, 3), dtype=np.uint8),
             "cache_dir": tmp_path} if precision == "int8" else {}
    outside = OnnxRuntimeBackend(model, info.normalization, (64, 96), "cpu", precision, **extra)
    graph = OnnxRuntimeBackend(model, info.normalization, (64, 96), "cpu", precision, labels_tail="graph", **extra)
    assert outside.labels_tail == "outside"  # the CPU default
    for shape in ((1, 64, 96), (2, 120, 160), (1, 37, 211)):
        frames = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        got, expected = outside.run(frames, "bgr"), graph.run(frames, "bgr")
        assert got.shape == shape and got.dtype == np.uint8
        assert (got == expected).mean() >= 0.999, shape
    labels, confidence = outside.run(frames, "bgr", confidence=True)  # confidence keeps the in-graph tail
    assert np.array_equal(labels, expected) and confidence.shape == labels.shape


def test_onnxruntime_uint8_resize_in_is_opt_in_and_keeps_the_frame_size(tiny_weights):
    from bisenetv2_ros.inference.backend_base import BackendError
    from bisenetv2_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    from bisenetv2_ros.weights.known_weights import load_model

    model, info = load_model(tiny_weights)
    default = OnnxRuntimeBackend(model, info.normalization, (64, 96), "cpu")
    uint8 = OnnxRuntimeBackend(model, info.normalization, (64, 96), "cpu", resize_in="uint8")
    assert default.resize_in == "graph"
    # Smooth frames (a real camera's are): the uint8 rounding of the resized pixels then rarely flips a label.
    rng = np.random.default_rng(5)
    frames = np.stack([cv2_smooth(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (240, 320)) for _ in range(2)])
    got, expected = uint8.run(frames, "rgb"), default.run(frames, "rgb")
    assert got.shape == (2, 240, 320) and (got == expected).mean() >= 0.99
    assert {key[1] for key in uint8._sessions} == {(None, 64, 96)}  # only the model-size graph ran
    labels, confidence = uint8.run(frames, "rgb", confidence=True)  # confidence: the graph's own resize
    assert labels.shape == confidence.shape == (2, 240, 320)
    with pytest.raises(BackendError, match="resize_in must be graph or uint8, got 'area'"):
        OnnxRuntimeBackend(model, info.normalization, (64, 96), "cpu", resize_in="area")


def cv2_smooth(small: np.ndarray, size) -> np.ndarray:
    import cv2

    return cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC)
