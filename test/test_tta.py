"""Offline test-time augmentation (bisenetv2_ros.inference.tta): Segmenter(tta=...), `segment --tta`, `evaluate.py --tta`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.inference.backends import BackendError
from bisenetv2_ros.inference.fused import FusedSegmentation
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.inference.tta import DEFAULT_TTA_SCALES, TTASettings, parse_scales, tta_scores
from bisenetv2_ros.weights.checkpoint import IMAGENET_NORMALIZATION
from training.evaluate import main as evaluate_main


def smooth_frames(seed: int, count: int = 2, height: int = 40, width: int = 56) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR) for s in small])


@pytest.fixture(scope="module")
def plain(tiny_weights) -> Segmenter:
    return Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32")


@pytest.mark.parametrize("height, width", [(40, 56), (64, 96)])  # resized to 64x96, and not resized
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_one_scale_without_flip_gives_exactly_the_plain_labels(tiny_weights, plain, height, width, order):
    single = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32",
                       tta=TTASettings(scales=(1.0,), flip=False))
    frames = smooth_frames(0, height=height, width=width)
    expected = plain.segment_batch(frames, order)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(single.segment_batch(frames, order), expected)
    np.testing.assert_array_equal(single.segment(frames[0], order), expected[0])


def test_full_tta_changes_some_labels_and_is_mirror_consistent(tiny_weights, plain):
    tta = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32", tta=TTASettings())
    frames = smooth_frames(1)
    labels = tta.segment_batch(frames)
    assert labels.shape == (2, 40, 56) and labels.dtype == np.uint8
    assert 0 < (labels != plain.segment_batch(frames)).mean() < 0.9  # other views really contributed
    fused = tta.backend.pipeline("rgb")
    with torch.inference_mode():
        scores = tta_scores(fused, torch.from_numpy(frames), tta.tta)
        mirrored = tta_scores(fused, torch.from_numpy(np.ascontiguousarray(frames[:, :, ::-1])), tta.tta)
    torch.testing.assert_close(mirrored, scores.flip(3), atol=1e-5, rtol=1e-5)  # flip TTA is mirror-symmetric
    torch.testing.assert_close(scores.sum(1), torch.ones(2, 40, 56), atol=1e-5, rtol=0)  # a mean of softmaxes


class PointwiseNet(nn.Module):
    """A 1x1 convolution then bilinear upsampling: every operation commutes with a horizontal flip."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=tuple(output_size), mode="bilinear", align_corners=False)


def test_flip_tta_of_a_mirror_symmetric_model_equals_its_plain_softmax_and_scales_are_averaged():
    fused = FusedSegmentation(PointwiseNet(), IMAGENET_NORMALIZATION, (20, 28))
    frames = torch.from_numpy(smooth_frames(2))
    with torch.inference_mode():
        plain_logits = tta_scores(fused, frames, TTASettings((1.0,), flip=False))
        flipped = tta_scores(fused, frames, TTASettings((1.0,), flip=True))
        torch.testing.assert_close(flipped, plain_logits.softmax(1), atol=1e-6, rtol=1e-6)
        two_scales = tta_scores(fused, frames, TTASettings((1.0, 0.5), flip=False))
        half = tta_scores(fused, frames, TTASettings((0.5,), flip=False))
        torch.testing.assert_close(two_scales, (plain_logits.softmax(1) + half.softmax(1)) / 2, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(half, plain_logits, atol=1e-3)  # the scales are really different views
        assert torch.equal(fused(frames), plain_logits.argmax(1).to(torch.uint8))  # the fused pipeline's labels


@pytest.mark.parametrize("scales, flip, message", [
    ((), True, "non-empty list of positive numbers"), ((0.0,), True, "positive numbers"),
    ((-1.0, 1.0), True, "positive numbers"), ((float("nan"),), True, "positive numbers"),
    (("1",), True, "positive numbers"), ((True,), True, "positive numbers"), (1.0, True, "non-empty list"),
    ((1.0, 1.0), True, "must not repeat a scale"), ((1.0,), "yes", "flip must be True or False"),
])
def test_settings_are_validated(scales, flip, message):
    with pytest.raises(ValueError, match=message):
        TTASettings(scales, flip)


def test_settings_defaults_and_scale_parsing():
    settings = TTASettings()
    assert settings.scales == DEFAULT_TTA_SCALES and settings.flip and settings.views == 6
    assert TTASettings([1, 2], False).scales == (1.0, 2.0)
    assert parse_scales("0.5,1,1.5") == (0.5, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"TTA scales '0.5,x' must be comma-separated numbers"):
        parse_scales("0.5,x")
    with pytest.raises(ValueError, match="positive"):
        parse_scales("0,1")


def test_backends_without_logits_and_bad_tta_values_are_refused(tiny_weights):
    with pytest.raises(BackendError, match=r"test-time augmentation needs the network's logits, which the onnxruntime "
                                           r"backend does not return .*use backend 'torch'"):
        Segmenter(tiny_weights, backend="onnxruntime", device="cpu", precision="fp32", tta=TTASettings())
    with pytest.raises(ValueError, match=r"tta must be a TTASettings \(bisenetv2_ros.inference.tta\) or None, got tuple"):
        Segmenter(tiny_weights, backend="torch", tta=(1.0,))


def _segment(*extra: str, image: Path, weights: Path) -> int:
    return cli.main(["segment", str(image), "--weights", str(weights), "--device", "cpu", "--precision", "fp32",
                     "--quiet", *extra])


def test_cli_segment_tta_writes_the_tta_labels_and_picks_torch(tiny_weights, tmp_path, capsys):
    frame_rgb = smooth_frames(3, count=1)[0]
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), frame_rgb[..., ::-1])
    assert _segment("--tta", "--tta-scales", "1,1.25", image=image, weights=tiny_weights) == 0  # backend auto
    assert "[torch fp32, cpu, 64x96, TTA scales 1,1.25 + flip]" in capsys.readouterr().out
    labels = cv2.imread(str(tmp_path / "street_segmented" / "labels" / "street.png"), cv2.IMREAD_UNCHANGED)
    expected = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32",
                         tta=TTASettings((1.0, 1.25), flip=True)).segment(frame_rgb)
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(SystemExit) as exit_info:
        _segment("--tta-scales", "0,1", image=image, weights=tiny_weights)
    assert exit_info.value.code == 2
    assert "argument --tta-scales: TTA scales must be a non-empty list of positive numbers" in capsys.readouterr().err
    assert _segment("--tta-no-flip", "--backend", "onnxruntime", "--output", str(tmp_path / "o"), image=image,
                    weights=tiny_weights) != 0
    err = capsys.readouterr().err
    assert "test-time augmentation needs the network's logits" in err and not (tmp_path / "o").exists()


@pytest.fixture()
def labelled_folder(tmp_path) -> Path:
    rng = np.random.default_rng(4)
    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i, frame in enumerate(smooth_frames(5, count=2)):
        cv2.imwrite(str(tmp_path / "data" / "images" / f"{i}.png"), frame)
        cv2.imwrite(str(tmp_path / "data" / "labels" / f"{i}.png"), rng.integers(0, 11, (40, 56), dtype=np.uint8))
    (tmp_path / "data" / "classes.txt").write_text("\n".join(f"c{i}" for i in range(11)) + "\n")
    return tmp_path / "data"


def test_evaluate_tta_goes_through_the_same_segmenter_path(tiny_weights, labelled_folder, tmp_path):
    from training.datasets import folder

    common = ["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(labelled_folder), "--split", "none"]
    result = evaluate_main([*common, "--tta", "--output", str(tmp_path / "tta.json")])
    assert (result["flip"], result["scales"], result["backend"]) == (True, list(DEFAULT_TTA_SCALES), "torch")
    segmenter = Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32", tta=TTASettings())
    from training.evaluate import evaluate_segmenter

    expected = evaluate_segmenter(segmenter, folder(labelled_folder))
    assert result["miou"] == expected["miou"] and result["pixels"] == 2 * 40 * 56
    only_scales = evaluate_main([*common, "--tta", "--scales", "1", "--output", str(tmp_path / "s.json")])
    assert only_scales["scales"] == [1.0] and only_scales["flip"] is True
    with pytest.raises(SystemExit):
        evaluate_main([*common, "--scales", "0", "--output", str(tmp_path / "bad.json")])
    with pytest.raises(BackendError, match="needs the network's logits"):
        evaluate_main([*common, "--tta", "--backend", "onnxruntime", "--output", str(tmp_path / "ort.json")])


def test_reduced_network_precision_single_view_equals_the_plain_bf16_labels(tiny_weights):
    # emulate_bf16: the bf16 path runs on any CPU (slowly), so this does not depend on the instruction set.
    options = {"emulate_bf16": True}
    plain_bf16 = Segmenter(tiny_weights, backend="torch", device="cpu", precision="bf16", backend_options=options)
    single = Segmenter(tiny_weights, backend="torch", device="cpu", precision="bf16", backend_options=options,
                       tta=TTASettings((1.0,), flip=False))
    frames = smooth_frames(6)
    np.testing.assert_array_equal(single.segment_batch(frames), plain_bf16.segment_batch(frames))
    assert single.segment_batch(frames).shape == (2, 40, 56)


def test_tta_runs_bisenetv1_too(tiny_v1_weights):
    plain_v1 = Segmenter(tiny_v1_weights, backend="torch", device="cpu", precision="fp32")
    single = Segmenter(tiny_v1_weights, backend="torch", device="cpu", precision="fp32",
                       tta=TTASettings((1.0,), flip=False))
    frames = smooth_frames(7)
    np.testing.assert_array_equal(single.segment_batch(frames), plain_v1.segment_batch(frames))
    full = Segmenter(tiny_v1_weights, backend="torch", device="cpu", precision="fp32", tta=TTASettings())
    assert full.segment_batch(frames).shape == (2, 40, 56)
