"""training/evaluate.py --protocol: the publishers' pipelines on a dataset, end to end (tiny synthetic
ADE20K folder, a tiny random 150-class checkpoint; nothing downloads)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from test_protocols import reference_coincheung, reference_mmseg

from bisenetv2_ros.class_tables import ADE20K
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint
from bisenetv2_ros.weights.known_weights import ADE20K_NORMALIZATION
from training.datasets import build_dataset
from training.evaluate import ConfusionMatrix, main


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for folder in ("images/validation", "annotations/validation"):
        (root / folder).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / f"images/validation/ADE_val_{i}.png"), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        cv2.imwrite(str(root / f"annotations/validation/ADE_val_{i}.png"), rng.integers(0, 5, (30, 40), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def ade_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=150, width_multiplier=0.25, head_channels=16, aux_heads=False))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        model.head.classifier.weight[4:] -= 3.0  # favour the classes the labels hold, so IoUs are not all 0
    info = CheckpointInfo(ADE20K, ADE20K_NORMALIZATION, (64, 96), "ade20k")
    return save_checkpoint(Checkpoint.from_model(model.eval(), info), tmp_path_factory.mktemp("w") / "ade.pt")


def _expected(ade_root, ade_weights, scores_of) -> ConfusionMatrix:
    from bisenetv2_ros.weights.known_weights import load_model

    model, _ = load_model(ade_weights)
    matrix = ConfusionMatrix(150)
    dataset = build_dataset("ade20k", ade_root, "val")
    for i in range(len(dataset)):
        image, label = dataset[i]
        matrix.update(scores_of(model, image).argmax(1)[0].numpy(), label)
    return matrix


def test_coincheung_protocol_end_to_end(ade_root, ade_weights, tmp_path):
    out = tmp_path / "cc.json"
    result = main(["--weights", str(ade_weights), "--dataset", "ade20k", "--root", str(ade_root.parent),
                   "--protocol", "coincheung", "--output", str(out)])
    written = json.loads(out.read_text())
    assert written["protocol"] == "coincheung" and written["frames"] == 2
    # BiSeNetV2 on ADE20K: short side 640 (its config), single scale, no crop
    assert written["protocol_settings"]["short_side"] == 640 and written["protocol_settings"]["crop"] is None
    expected = _expected(ade_root, ade_weights,
                         lambda m, im: reference_coincheung(m, im, ADE20K_NORMALIZATION, short_side=640))
    assert result["miou"] == pytest.approx(expected.miou(), abs=1e-9) and result["miou"] > 0
    assert result["pixels"] == int((expected.matrix.sum()))
    tp = np.diag(expected.matrix)
    formula = np.mean(tp / (expected.matrix.sum(0) + expected.matrix.sum(1) - tp + 1))
    assert result["miou_publisher_formula"] == pytest.approx(formula) and formula < result["miou"]


def test_mmseg_protocol_end_to_end(ade_root, ade_weights, tmp_path):
    result = main(["--weights", str(ade_weights), "--dataset", "ade20k", "--root", str(ade_root), "--protocol",
                   "mmseg", "--output", str(tmp_path / "mm.json")])
    assert tuple(result["protocol_settings"]["scale"]) == (2048, 512) and result["protocol_settings"]["mode"] == "whole"
    expected = _expected(ade_root, ade_weights,
                         lambda m, im: reference_mmseg(m, im, ADE20K_NORMALIZATION, (2048, 512)))
    assert result["miou"] == pytest.approx(expected.miou(), abs=1e-9)
    assert "miou_publisher_formula" not in result  # mmseg's IoU is the exact one


def test_protocol_flags_that_do_not_fit_are_refused(ade_root, ade_weights, capsys):
    common = ["--weights", str(ade_weights), "--dataset", "ade20k", "--root", str(ade_root)]
    for extra, message in ((["--protocol", "coincheung", "--tta"], "--tta/--flip/--scales belong to the project"),
                           (["--protocol", "paper"], "the paper states no evaluation resolution for ade20k"),
                           (["--protocol", "mmseg", "--mmseg-mode", "slide"], "needs a crop size and a stride")):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_project_protocol_stays_the_default(ade_root, ade_weights, tmp_path):
    result = main(["--weights", str(ade_weights), "--dataset", "ade20k", "--root", str(ade_root), "--output",
                   str(tmp_path / "p.json")])
    assert result["protocol"] == "project" and result["input_size"] == [64, 96] and result["backend"]


def test_paper_protocol_runs_at_the_papers_resolution(tiny_weights, camvid_dir, tmp_path):
    result = main(["--weights", str(tiny_weights), "--dataset", "camvid", "--root", str(camvid_dir), "--split",
                   "val", "--protocol", "paper", "--limit", "1", "--output", str(tmp_path / "paper.json")])
    assert result["protocol"] == "paper" and result["input_size"] == [720, 960] and result["frames"] == 1
    project = main(["--weights", str(tiny_weights), "--dataset", "camvid", "--root", str(camvid_dir), "--split",
                    "val", "--limit", "1", "--input-size", "720x960", "--output", str(tmp_path / "project.json")])
    assert project["miou"] == result["miou"]  # the same pipeline, only the resolution is the paper's
