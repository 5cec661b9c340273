"""Drive-disjoint CamVid splits, label-aligned augmentation, photometric jitter, class weights, resume schedule."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bisenetv2_ros.classes import IGNORE_INDEX
from training.augmentation import PhotometricJitter, TrainTransform
from training.datasets import (
    CAMVID_DRIVE_SPLITS,
    camvid,
    camvid_drive,
    label_histogram,
    median_frequency_weights,
)
from training.losses import OhemCrossEntropy

DRIVE_FRAMES = {"train": ["0001TP_000010", "0001TP_000040", "0006R0_f00930", "0016E5_00390"],
                "val": ["0016E5_07000", "0016E5_07030"]}


def _fake_camvid(root: Path) -> Path:
    """SegNet layout with the real drive prefixes; every label holds classes 0..10 and void (11)."""
    rng = np.random.default_rng(0)
    for folder, stems in DRIVE_FRAMES.items():
        (root / folder).mkdir(parents=True)
        (root / f"{folder}annot").mkdir()
        for stem in stems:
            cv2.imwrite(str(root / folder / f"{stem}.png"), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            cv2.imwrite(str(root / f"{folder}annot" / f"{stem}.png"),
                        (np.arange(12 * 16) % 12).reshape(12, 16).astype(np.uint8))
    return root


def test_drive_splits_share_no_drive_and_cover_both_folders(tmp_path):
    root = _fake_camvid(tmp_path / "camvid")
    train, val = camvid(root, "drive_train"), camvid(root, "drive_val")
    train_drives = {camvid_drive(s.image) for s in train.samples}
    val_drives = {camvid_drive(s.image) for s in val.samples}
    assert train_drives == {"0006R0", "0016E5"} and val_drives == {"0001TP"}
    assert not train_drives & val_drives
    # drive_train takes 0016E5 frames from both the train and the val folder.
    assert sorted(s.image.parent.name for s in train.samples) == ["train", "train", "val", "val"]
    assert len(val) == 2 and val.name == "camvid/drive_val"
    _, label = val[0]
    assert (label[label < 11] == np.arange(12 * 16).reshape(12, 16)[label < 11] % 12).all()
    assert (label[(np.arange(12 * 16) % 12).reshape(12, 16) == 11] == IGNORE_INDEX).all()  # void -> ignore


def test_real_camvid_drive_splits(camvid_dir):
    train, val = camvid(camvid_dir, "drive_train"), camvid(camvid_dir, "drive_val")
    assert (len(train), len(val)) == (406, 62)
    train_stems = {s.image.stem for s in train.samples}
    assert not train_stems & {s.image.stem for s in val.samples}
    assert {camvid_drive(s.image) for s in train.samples}.isdisjoint({camvid_drive(s.image) for s in val.samples})
    assert set(CAMVID_DRIVE_SPLITS["drive_train"]) | set(CAMVID_DRIVE_SPLITS["drive_val"]) == {
        camvid_drive(p) for folder in ("train", "val") for p in (camvid_dir / folder).iterdir()}


def _encoded_frame(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A frame whose red channel is 20 * class and whose label is that class (void = 11 -> 255)."""
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 12, (h // 10, w // 10))
    classes = np.kron(blocks, np.ones((10, 10), dtype=np.int64)).astype(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 20 * classes
    image[..., 1] = 7
    label = np.where(classes == 11, IGNORE_INDEX, classes).astype(np.uint8)
    return image, label


@pytest.mark.parametrize("seed", range(12))
def test_geometric_augmentation_keeps_labels_on_their_pixels(seed):
    image, label = _encoded_frame()
    transform = TrainTransform((48, 64), [1.0], [0.0] * 3, [1 / 255] * 3, base_size=(60, 80),
                               scale_range=(0.5, 2.0))
    out_image, out_label = transform.geometry(image, label, np.random.default_rng([0, seed]))
    assert out_image.shape == (48, 64, 3) and out_label.shape == (48, 64)
    padded = out_label == IGNORE_INDEX
    klass = np.where(out_image[..., 0] == 220, 11, out_image[..., 0] // 20)
    # Pixels well inside a block (same value as their 4 neighbours) are unaffected by interpolation.
    red = out_image[..., 0].astype(int)
    interior = np.zeros_like(padded)
    interior[1:-1, 1:-1] = ((red[1:-1, 1:-1] == red[:-2, 1:-1]) & (red[1:-1, 1:-1] == red[2:, 1:-1])
                            & (red[1:-1, 1:-1] == red[1:-1, :-2]) & (red[1:-1, 1:-1] == red[1:-1, 2:])
                            & (red[1:-1, 1:-1] % 20 == 0) & (out_image[1:-1, 1:-1, 1] == 7))
    assert interior.sum() > 100
    labelled = interior & ~padded
    assert (out_label[labelled] == klass[labelled]).all()
    # Void stays void: every interior pixel of a void block is ignore; padding (image 0) is ignore too.
    assert (out_label[interior & (klass == 11)] == IGNORE_INDEX).all()
    assert set(np.unique(out_label)) <= set(range(11)) | {IGNORE_INDEX}
    pad_pixels = (out_image.sum(2) == 0)
    assert (out_label[pad_pixels] == IGNORE_INDEX).all()


def test_small_scales_pad_with_ignore_and_flips_move_labels_with_pixels():
    image, label = _encoded_frame()
    transform = TrainTransform((48, 64), [1.0], [0.0] * 3, [1 / 255] * 3, base_size=(60, 80), scale_range=(0.5, 0.5),
                               hflip=False)
    out_image, out_label = transform.geometry(image, label, np.random.default_rng(1))
    assert (out_label[30:] == IGNORE_INDEX).all() and (out_label[:, 40:] == IGNORE_INDEX).all()
    assert (out_image[30:] == 0).all()
    flipped = TrainTransform((60, 80), [1.0], [0.0] * 3, [1 / 255] * 3, hflip=True)
    seen = set()
    for seed in range(6):
        img, lab = flipped.geometry(image, label, np.random.default_rng(seed))
        mirrored = np.array_equal(img, image[:, ::-1])
        assert mirrored or np.array_equal(img, image)
        assert np.array_equal(lab, label[:, ::-1] if mirrored else label)
        seen.add(mirrored)
    assert seen == {True, False}


def test_photometric_jitter_changes_pixels_never_labels():
    image, label = _encoded_frame()
    image[..., 2] = np.random.default_rng(0).integers(0, 256, image.shape[:2])
    jitter = PhotometricJitter()
    plain = TrainTransform((60, 80), [1.0], [0.0] * 3, [1 / 255] * 3, hflip=False)
    jittered = TrainTransform((60, 80), [1.0], [0.0] * 3, [1 / 255] * 3, hflip=False, photometric=jitter)
    for seed in range(5):
        x0, y0 = plain(image, label, np.random.default_rng(seed))
        x1, y1 = jittered(image, label, np.random.default_rng(seed))
        assert torch.equal(y0, y1) and torch.equal(y0, torch.from_numpy(label).long())
        assert not torch.equal(x0, x1)
    dark = PhotometricJitter(brightness=(0.5, 0.5), contrast=(1, 1), saturation=(1, 1), hue=0, gamma=(1, 1))
    out = dark(image, np.random.default_rng(0))
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - image // 2).max() <= 1
    cast = PhotometricJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=0, gamma=(1, 1),
                             channel_gain=0.2)
    grey = np.full((4, 4, 3), 100, np.uint8)
    tinted = cast(grey, np.random.default_rng(0)).astype(int)
    assert len({int(v) for v in tinted[0, 0]}) > 1 and np.abs(tinted - 100).max() <= 20
    identity = PhotometricJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=0, gamma=(1, 1))
    assert np.abs(identity(image, np.random.default_rng(0)).astype(int) - image).max() <= 1


def test_median_frequency_weights_favour_rare_classes(tmp_path):
    weights = median_frequency_weights([800, 100, 100, 0], power=1.0)
    assert np.allclose(weights, [100 / 800, 1.0, 1.0, 1.0])
    assert np.allclose(median_frequency_weights([800, 100, 100], power=0.5), [np.sqrt(1 / 8), 1.0, 1.0])
    root = _fake_camvid(tmp_path / "camvid")
    counts = label_histogram(camvid(root, "drive_val"))
    assert counts.tolist() == [2 * 16] * 11  # 12x16 labels cycle 0..11; void (11) is not counted


def test_class_weighted_loss_is_the_weighted_mean():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])  # 1x2x1x2: pixel 0 -> class 0, pixel 1 -> class 1
    target = torch.tensor([[[1, 1]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    plain = OhemCrossEntropy(enabled=False)(logits, target)
    assert torch.isclose(plain, per_pixel.mean())
    weighted = OhemCrossEntropy(enabled=False, class_weights=torch.tensor([1.0, 3.0]))
    assert torch.isclose(weighted(logits, target), per_pixel.mean())  # one class present: weights cancel
    target = torch.tensor([[[0, 1]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    expected = (1.0 * per_pixel[0] + 3.0 * per_pixel[1]) / 4.0
    assert torch.isclose(weighted(logits, target), expected)


def _tiny_camvid_checkpoint(path: Path, seed: int) -> Path:
    from bisenetv2_ros.classes import CAMVID
    from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
    from bisenetv2_ros.weights.checkpoint import IMAGENET_NORMALIZATION, Checkpoint, CheckpointInfo, save_checkpoint

    torch.manual_seed(seed)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=11, width_multiplier=0.25, head_channels=8, aux_head_channels=8))
    info = CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (32, 32), "camvid:drive_train",
                          metrics={"val_miou": 0.1}, provenance={"source": "training/train.py"})
    return save_checkpoint(Checkpoint.from_model(model, info, kind="train", training_state={"iteration": 1}), path)


def test_promote_refuses_a_model_that_does_not_beat_the_baseline_and_stores_both_splits(tmp_path, capsys):
    from bisenetv2_ros.weights.checkpoint import load_checkpoint
    from training.promote import main as promote

    root = _fake_camvid(tmp_path / "camvid")
    candidate = _tiny_camvid_checkpoint(tmp_path / "best.pt", seed=0)
    baseline = tmp_path / "baseline.pt"
    assert promote([str(candidate), "--root", str(root), "--output", str(baseline), "--baseline", str(candidate),
                    "--force"]) == 0  # the first write: a deploy copy of the candidate
    output = tmp_path / "weights" / "default.pt"
    # The same weights do not beat themselves: refused, nothing written.
    assert promote([str(candidate), "--root", str(root), "--output", str(output), "--baseline", str(baseline)]) == 1
    assert not output.exists()
    assert "not promoted" in capsys.readouterr().err
    assert promote([str(candidate), "--root", str(root), "--output", str(output), "--baseline", str(baseline),
                    "--force"]) == 0
    shipped = load_checkpoint(output)
    assert shipped.kind == "deploy" and shipped.info.train_resolution == (32, 32)
    metrics = shipped.info.metrics
    assert {"drive_val_miou", "val_miou", "drive_val_iou/pole", "val_pixel_accuracy"} <= set(metrics)
    assert 0.0 <= metrics["drive_val_miou"] <= 1.0
    assert "drive_val" in shipped.info.provenance["selected_by"]
    out = capsys.readouterr().out
    assert "KNOWN_WEIGHTS['camvid']: info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (32, 32)" in out


def test_embedded_default_matches_its_named_entry():
    from bisenetv2_ros.weights.checkpoint import load_checkpoint
    from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, KNOWN_WEIGHTS, resolve_weights

    entry = KNOWN_WEIGHTS[DEFAULT_WEIGHTS]
    shipped = load_checkpoint(resolve_weights(DEFAULT_WEIGHTS))
    # A promotion that forgets weights/known_weights.py would leave the listed resolution wrong.
    assert shipped.info.train_resolution == entry.info.train_resolution
    assert shipped.info.classes.names == entry.info.classes.names
    assert shipped.kind == "deploy"
