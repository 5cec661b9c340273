"""Exact mIoU: confusion matrix against hand computation; Segmenter and logits paths agree."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bisenetv2_ros.classes import IGNORE_INDEX
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.known_weights import load_model
from training.evaluate import ConfusionMatrix, evaluate_model, evaluate_segmenter, format_table, main, predict_logits


def test_confusion_matrix_miou_by_hand():
    target = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE_INDEX]])
    prediction = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    matrix = ConfusionMatrix(4)
    matrix.update(prediction, target)
    np.testing.assert_array_equal(matrix.matrix, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 2 / 3; class 3: absent.
    iou = matrix.iou()
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 2 / 3])
    assert np.isnan(iou[3])
    assert matrix.miou() == pytest.approx(5 / 9)
    assert matrix.pixel_accuracy() == pytest.approx(5 / 7)
    summary = matrix.summary(["a", "b", "c", "d"])
    assert summary["per_class_iou"]["d"] is None and summary["pixels"] == 7
    assert "55.56%" in format_table(summary)
    matrix.update(prediction, target)  # accumulates
    assert matrix.matrix.sum() == 14 and matrix.miou() == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="outside 0..3"):
        matrix.update(np.array([0]), np.array([7]))


def test_a_class_predicted_but_absent_from_ground_truth_counts_as_zero():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([0, 2]), np.array([0, 0]))
    np.testing.assert_allclose(matrix.iou(), [0.5, np.nan, 0.0])
    assert matrix.miou() == pytest.approx(0.25)


@pytest.fixture()
def frames_dataset(tmp_path):
    """A folder dataset of 3 random 40x60 frames with random 11-class labels."""
    from training.datasets import folder

    rng = np.random.default_rng(0)
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(11)) + "\n")
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "labels" / f"{i}.png"), rng.integers(0, 11, (40, 60), dtype=np.uint8))
    return folder(tmp_path)


def test_logits_path_matches_the_segmenter(tiny_weights, frames_dataset):
    segmenter = Segmenter(tiny_weights, precision="fp32")
    model, info = load_model(tiny_weights)
    via_segmenter = evaluate_segmenter(segmenter, frames_dataset)
    via_logits = evaluate_model(model, frames_dataset, info.train_resolution, info.normalization)
    assert via_segmenter["pixels"] == via_logits["pixels"] == 3 * 40 * 60
    assert via_segmenter["miou"] == pytest.approx(via_logits["miou"], abs=1e-12)
    image, _ = frames_dataset[0]
    scores = predict_logits(model, image[None], info.train_resolution, info.normalization)
    np.testing.assert_array_equal(scores.argmax(1)[0].numpy(), segmenter.segment(image))


def test_flip_and_multiscale_average_probabilities(tiny_weights, frames_dataset):
    model, info = load_model(tiny_weights)
    image, _ = frames_dataset[0]
    plain = predict_logits(model, image[None], info.train_resolution, info.normalization)
    flipped = predict_logits(model, image[None], info.train_resolution, info.normalization, flip=True)
    assert flipped.shape == (1, 11, 40, 60)
    assert torch.allclose(flipped.sum(1), torch.full((1, 40, 60), 1.0), atol=1e-5)  # the mean of two softmaxes
    mirrored = predict_logits(model, image[None, :, ::-1], info.train_resolution, info.normalization, flip=True)
    torch.testing.assert_close(mirrored, flipped.flip(3), atol=1e-5, rtol=1e-5)  # flip TTA is mirror-symmetric
    multi = predict_logits(model, image[None], info.train_resolution, info.normalization, scales=(0.75, 1.0, 1.5))
    assert torch.allclose(multi.sum(1), torch.full((1, 40, 60), 1.0), atol=1e-5)
    assert plain.shape == multi.shape


def test_cli_writes_json(tiny_weights, frames_dataset, tmp_path):
    root = Path(frames_dataset.samples[0].image).parents[1]
    out = tmp_path / "result.json"
    result = main(["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--split", "none",
                   "--output", str(out), "--limit", "2"])
    written = json.loads(out.read_text())
    assert written["frames"] == 2 and written["pixels"] == 2 * 40 * 60
    assert written["miou"] == pytest.approx(result["miou"]) and written["input_size"] == [64, 96]
    flip = main(["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--flip",
                 "--output", str(tmp_path / "flip.json")])
    assert flip["flip"] is True and flip["frames"] == 3


def test_cli_input_size_is_height_by_width_and_takes_the_old_two_numbers(tiny_weights, frames_dataset, tmp_path,
                                                                         capsys):
    root = Path(frames_dataset.samples[0].image).parents[1]
    common = ["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--limit", "1"]
    assert main([*common, "--input-size", "32x64"])["input_size"] == [32, 64]
    assert "deprecated" not in capsys.readouterr().err
    assert main([*common, "--input-size", "32", "64"])["input_size"] == [32, 64]
    assert "warning: --input-size 32 64 is deprecated; use --input-size 32x64" in capsys.readouterr().err
    for bad in (["32"], ["32", "x"], ["32", "64", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--input-size", *bad])
        assert exit_info.value.code == 2
        assert "expected HEIGHTxWIDTH" in capsys.readouterr().err


def test_cli_reduced_precision_against_a_reference(tiny_weights, frames_dataset, tmp_path):
    root = Path(frames_dataset.samples[0].image).parents[1]
    result = main(["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--backend",
                   "onnxruntime", "--precision", "int8", "--calibration-images", str(root / "images"),
                   "--reference-precision", "fp32", "--output", str(tmp_path / "int8.json")])
    assert (result["backend"], result["precision"]) == ("onnxruntime", "int8")
    assert result["reference"]["precision"] == "fp32" and result["reference"]["pixels"] == result["pixels"]
    assert 0.5 < result["agreement_with_reference"] <= 1.0
    fp32 = main(["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--backend", "onnxruntime",
                 "--precision", "fp32", "--reference-precision", "fp32", "--output", str(tmp_path / "fp32.json")])
    assert fp32["agreement_with_reference"] == 1.0 and fp32["miou"] == fp32["reference"]["miou"]


def test_cli_with_a_reference_reads_the_weights_once(tiny_weights, frames_dataset, tmp_path, monkeypatch):
    root = Path(frames_dataset.samples[0].image).parents[1]
    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: reads.append(str(path)) or real_load(path, *a, **k))
    result = main(["--weights", str(tiny_weights), "--dataset", "folder", "--root", str(root), "--backend", "torch",
                   "--device", "cpu", "--precision", "fp32", "--reference-precision", "fp32", "--limit", "1",
                   "--output", str(tmp_path / "r.json")])
    assert result["agreement_with_reference"] == 1.0 and result["weights"] == str(tiny_weights)
    assert reads == [str(tiny_weights)]  # two Segmenters, one read
