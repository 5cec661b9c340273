"""Datasets: Cityscapes id mapping, CamVid void, folder datasets, errors, augmentation, sampler."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bisenetv2_ros.classes import CAMVID, CITYSCAPES, IGNORE_INDEX
from bisenetv2_ros.conventions import normalization_scale_shift
from training.augmentation import TrainTransform
from training.datasets import (
    CITYSCAPES_LABEL_TO_TRAIN,
    DatasetError,
    ResumableSampler,
    build_dataset,
    camvid,
    cityscapes,
    folder,
)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def cityscapes_root(tmp_path: Path) -> Path:
    """Two cities; the first label holds every labelId 0..33 once per column, plus 255."""
    ids = np.array(list(range(34)) + [255], dtype=np.uint8)
    label = np.tile(ids, (4, 1))
    for city, name in (("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")):
        _write(tmp_path / "leftImg8bit" / "train" / city / f"{name}_leftImg8bit.png", _rgb(4, len(ids)))
        _write(tmp_path / "gtFine" / "train" / city / f"{name}_gtFine_labelIds.png", label)
        # A decoy trainIds file that must not be used.
        _write(tmp_path / "gtFine" / "train" / city / f"{name}_gtFine_labelTrainIds.png", np.zeros_like(label))
    return tmp_path


def test_cityscapes_label_ids_map_to_the_19_official_train_ids(cityscapes_root):
    dataset = cityscapes(cityscapes_root, "train")
    assert len(dataset) == 2 and dataset.classes == CITYSCAPES
    image, label = dataset[0]
    assert image.shape == (4, 35, 3) and label.dtype == np.uint8
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert CITYSCAPES_LABEL_TO_TRAIN == expected
    for column, label_id in enumerate(list(range(34)) + [255]):
        assert (label[:, column] == expected.get(label_id, IGNORE_INDEX)).all(), label_id
    assert sorted(set(np.unique(label)) - {IGNORE_INDEX}) == list(range(19))


def test_cityscapes_missing_label_and_bad_label_value_name_the_file(cityscapes_root):
    label = cityscapes_root / "gtFine" / "train" / "bremen" / "bremen_000001_000019_gtFine_labelIds.png"
    _write(label, np.full((4, 35), 40, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"bremen_000001_000019_gtFine_labelIds\.png.*\[40\]"):
        cityscapes(cityscapes_root, "train")[1]
    label.unlink()
    with pytest.raises(DatasetError, match="bremen_000001_000019_leftImg8bit.png has no label"):
        cityscapes(cityscapes_root, "train")


def _camvid_root(root: Path, values: np.ndarray) -> Path:
    _write(root / "train" / "0001TP_000001.png", _rgb(*values.shape))
    _write(root / "trainannot" / "0001TP_000001.png", values)
    return root


def test_camvid_void_is_ignored_and_out_of_range_values_fail(tmp_path):
    values = np.array([[0, 5, 10, 11, 255]], dtype=np.uint8).repeat(3, 0)
    dataset = camvid(_camvid_root(tmp_path / "ok", values), "train")
    assert dataset.classes == CAMVID
    _, label = dataset[0]
    np.testing.assert_array_equal(label[0], [0, 5, 10, IGNORE_INDEX, IGNORE_INDEX])
    bad = _camvid_root(tmp_path / "bad", np.array([[0, 12, 200]], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"trainannot/0001TP_000001\.png contains values \[12, 200\]"):
        camvid(bad, "train")[0]


def _folder_root(root: Path, stems=("a", "b"), labels=("a", "b"), value: int = 1) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("ground\nobstacle\n")
    for stem in stems:
        _write(root / "images" / f"{stem}.jpg", _rgb(6, 8))
    for stem in labels:
        _write(root / "labels" / f"{stem}.png", np.full((6, 8), value, dtype=np.uint8))
    return root


def test_folder_dataset_reads_pairs_and_classes(tmp_path):
    dataset = folder(_folder_root(tmp_path), "train")
    assert dataset.classes.names[:2] == ("ground", "obstacle") and len(dataset.classes) == 2
    image, label = dataset[1]
    assert image.shape == (6, 8, 3) and (label == 1).all()
    assert build_dataset("folder", tmp_path, "train").samples == dataset.samples


def test_folder_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match=r"images/b\.jpg has no label"):
        folder(_folder_root(tmp_path / "missing", labels=("a",)))
    with pytest.raises(DatasetError, match=r"labels/c\.png has no image"):
        folder(_folder_root(tmp_path / "orphan", labels=("a", "b", "c")))
    with pytest.raises(DatasetError, match=r"labels/a\.png contains values \[2\]"):
        folder(_folder_root(tmp_path / "value", value=2))[0]
    root = _folder_root(tmp_path / "broken")
    (root / "images" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*images/a\.jpg"):
        folder(root)[0]
    with pytest.raises(DatasetError, match="class list .*classes.txt does not exist"):
        folder(root, classes_file=tmp_path / "nope" / "classes.txt")


def test_train_transform_is_a_function_of_the_seed():
    transform = TrainTransform(crop_size=(16, 24), scales=[0.75, 1.0, 2.0], mean=[0.5] * 3, std=[0.25] * 3,
                               base_size=(20, 30))
    image, label = _rgb(40, 60), np.random.default_rng(1).integers(0, 5, (40, 60), dtype=np.uint8)
    x1, y1 = transform(image, label, np.random.default_rng([0, 7]))
    x2, y2 = transform(image, label, np.random.default_rng([0, 7]))
    assert x1.shape == (3, 16, 24) and x1.dtype == torch.float32 and y1.shape == (16, 24) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    outputs = {transform(image, label, np.random.default_rng([0, s]))[0].sum().item() for s in range(8)}
    assert len(outputs) > 1
    # Scale 0.75 of 20x30 is 15x22: the crop is padded with ignore.
    small = TrainTransform((16, 24), [0.75], [0.5] * 3, [0.25] * 3, base_size=(20, 30), hflip=False)
    _, y = small(image, label, np.random.default_rng(0))
    assert (y[15:] == IGNORE_INDEX).all() and (y[:, 22:] == IGNORE_INDEX).all() and (y[:15, :22] < 5).all()


def test_train_transform_normalises_like_the_checkpoint_says():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = TrainTransform((8, 8), [1.0], mean, std, hflip=False)
    image = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    x, _ = transform(image, np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    expected = (image.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x.numpy().transpose(1, 2, 0), expected, atol=1e-5)
    # 0 and 255 land at the ends of the normalised range, per channel
    scale, shift = normalization_scale_shift(mean, std)
    assert shift == pytest.approx([-m / s for m, s in zip(mean, std)])
    assert [255 * a + b for a, b in zip(scale, shift)] == pytest.approx([(1 - m) / s for m, s in zip(mean, std)])


def test_resumable_sampler_resumes_exactly_and_shards_ranks():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(ResumableSampler(10, 4, seed=3), 4 * 6)
    resumed = take(ResumableSampler(10, 4, seed=3, start_iteration=3), 4 * 3)
    assert resumed == full[12:]
    # Each epoch (10 positions) is a permutation of the dataset.
    assert sorted(i for i, _ in full[:10]) == list(range(10))
    rank0 = take(ResumableSampler(10, 2, seed=3, rank=0, world_size=2), 4)
    rank1 = take(ResumableSampler(10, 2, seed=3, rank=1, world_size=2), 4)
    assert [s[1] for s in rank0] + [s[1] for s in rank1] != []
    positions = sorted(seed[1] for _, seed in rank0 + rank1)
    assert positions == list(range(8))
    assert [i for i, _ in rank0[:2] + rank1[:2] + rank0[2:] + rank1[2:]] == [i for i, _ in full[:8]]
