"""COCO-Stuff-164k and ADE20K in their publishers' folder layouts (tiny synthetic fixtures)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenetv2_ros.class_tables import ADE20K, COCO_STUFF
from bisenetv2_ros.classes import IGNORE_INDEX
from training.config import load_config
from training.datasets import DatasetError, build_dataset
from training.datasets_zoo import COCO_UNANNOTATED_IDS, coco_stuff_lookup


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)


# stuffthingmaps values -> the train ids both publishers use
RAW_COCO = np.array([[0, 10, 12, 181, 255, 24, 26, 91]], dtype=np.uint8).repeat(6, 0)
COCO_TRAIN_IDS = np.array([[0, 10, 11, 170, 255, 23, 24, 80]], dtype=np.uint8).repeat(6, 0)


def test_coco_lookup_drops_the_eleven_unannotated_ids():
    table = coco_stuff_lookup()
    assert len(COCO_UNANNOTATED_IDS) == 11 and len(COCO_STUFF) == 171
    np.testing.assert_array_equal(table[RAW_COCO[0]], COCO_TRAIN_IDS[0])
    assert all(table[i] == -1 for i in COCO_UNANNOTATED_IDS) and table[182] == -1
    # the names follow: raw 12 (stop sign, id 13 in COCO) is train id 11
    assert COCO_STUFF.names[11] == "stop sign" and COCO_STUFF.names[80] == "banner"


@pytest.mark.parametrize("labels_folder", ["labels", "annotations"])
def test_coco_stuff_coincheung_layout_raw_stuffthingmaps(tmp_path, labels_folder):
    _write(tmp_path / "images/val2017/000000000139.jpg", _photo(0))
    _write(tmp_path / f"{labels_folder}/val2017/000000000139.png", RAW_COCO)
    dataset = build_dataset("coco-stuff", tmp_path, "val")
    image, label = dataset[0]
    assert image.shape == (6, 8, 3) and dataset.classes == COCO_STUFF
    np.testing.assert_array_equal(label, COCO_TRAIN_IDS)


def test_coco_stuff_mmseg_layout_takes_the_converted_train_ids(tmp_path):
    _write(tmp_path / "images/train2017/a.jpg", _photo(1))
    _write(tmp_path / "annotations/train2017/a.png", RAW_COCO)  # the raw map stays beside the converted one
    _write(tmp_path / "annotations/train2017/a_labelTrainIds.png", COCO_TRAIN_IDS)
    dataset = build_dataset("coco-stuff", tmp_path, "train")
    assert len(dataset) == 1
    np.testing.assert_array_equal(dataset[0][1], COCO_TRAIN_IDS)


def test_coco_stuff_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"COCO-Stuff image folder .*images/val2017 does not exist"):
        build_dataset("coco-stuff", tmp_path, "val")
    _write(tmp_path / "images/val2017/b.jpg", _photo(2))
    with pytest.raises(DatasetError, match="COCO-Stuff labels not found"):
        build_dataset("coco-stuff", tmp_path, "val")
    _write(tmp_path / "labels/val2017/b.png", np.full((6, 8), 25, np.uint8))  # an unannotated id
    with pytest.raises(DatasetError, match=r"b\.png contains values \[25\] outside the 171 classes"):
        build_dataset("coco-stuff", tmp_path, "val")[0]


@pytest.mark.parametrize("nested", [False, True])
def test_ade20k_zero_is_ignored_and_ids_shift_down(tmp_path, nested):
    base = tmp_path / "ADEChallengeData2016" if nested else tmp_path
    raw = np.array([[0, 1, 2, 150, 75, 0, 3, 1]], dtype=np.uint8).repeat(6, 0)
    _write(base / "images/validation/ADE_val_00000001.jpg", _photo(3))
    _write(base / "annotations/validation/ADE_val_00000001.png", raw)
    dataset = build_dataset("ade20k", tmp_path, "val")
    assert dataset.classes == ADE20K and dataset.name == "ade20k/val"
    expected = np.array([[IGNORE_INDEX, 0, 1, 149, 74, IGNORE_INDEX, 2, 0]], dtype=np.uint8).repeat(6, 0)
    np.testing.assert_array_equal(dataset[0][1], expected)
    assert ADE20K.names[0] == "wall" and ADE20K.names[149] == "flag"


def test_ade20k_value_above_150_is_named(tmp_path):
    _write(tmp_path / "images/training/x.jpg", _photo(4))
    _write(tmp_path / "annotations/training/x.png", np.full((6, 8), 151, np.uint8))
    with pytest.raises(DatasetError, match=r"x\.png contains values \[151\] outside the 150 classes"):
        build_dataset("ade20k", tmp_path, "train")[0]


def test_train_config_accepts_the_new_datasets():
    assert load_config(None, ["data.dataset=ade20k"]).data.dataset == "ade20k"
    assert load_config(None, ["data.dataset=coco-stuff"]).data.dataset == "coco-stuff"
    with pytest.raises(ValueError, match="data.dataset must be cityscapes, camvid, folder, coco-stuff or ade20k"):
        load_config(None, ["data.dataset=voc"])


def test_train_py_trains_on_ade20k(tmp_path):
    """Two iterations of the real Trainer on a tiny ADE20K folder: a 150-class model, ADE20K names."""
    from test_training import _tiny_config

    from bisenetv2_ros.weights.checkpoint import load_checkpoint
    from training.train import Trainer

    rng = np.random.default_rng(5)
    for split in ("training", "validation"):
        for i in range(2):
            _write(tmp_path / f"data/images/{split}/ADE_{i}.jpg", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
            _write(tmp_path / f"data/annotations/{split}/ADE_{i}.png", rng.integers(0, 151, (32, 48), dtype=np.uint8))
    config = _tiny_config(tmp_path / "data", tmp_path / "run", 2)
    config = type(config).from_dict({**config.to_dict(), "data": {**config.to_dict()["data"], "dataset": "ade20k"}})
    result = Trainer(config, progress=False).train()
    assert result["iteration"] == 2
    checkpoint = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert checkpoint.config.num_classes == 150 and checkpoint.info.classes == ADE20K
