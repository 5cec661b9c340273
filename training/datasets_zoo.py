"""COCO-Stuff-164k and ADE20K (SceneParsing) in the folder layouts their publishers ship and the two
BiSeNet zoos read, so ``evaluate.py`` and ``train.py`` take them (``--dataset coco-stuff`` / ``ade20k``).

COCO-Stuff-164k (cocodataset.org: ``train2017.zip``, ``val2017.zip``, ``stuffthingmaps_trainval2017.zip``;
label values 0..181 = the 182 COCO ids minus one, 255 = unlabelled), under ``root``:

* ``images/{train2017,val2017}/*.jpg`` with ``labels/{split}/*.png`` (CoinCheung/BiSeNet's
  ``datasets/coco``: the stuffthingmaps as unzipped), or with ``annotations/{split}/*.png`` (the same
  maps where mmsegmentation keeps them): the 11 COCO thing ids that have no annotations
  (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) are dropped and the other 171 numbered in order;
* ``annotations/{split}/*_labelTrainIds.png`` (mmsegmentation's ``data/coco_stuff164k`` after its
  ``tools/convert_datasets/coco_stuff164k.py``): already 0..170, used when present.

ADE20K (``ADEChallengeData2016.zip``; label 0 = "other", 1..150 the classes): ``root`` is the unzipped
``ADEChallengeData2016`` (mmsegmentation's ``data/ade``/..., CoinCheung's ``datasets/ade20k`` holds the
same two folders) or the folder above it: ``images/{training,validation}/*.jpg`` with
``annotations/{split}/*.png``; 0 becomes ignore and 1..150 become 0..149 (mmsegmentation's
``reduce_zero_label``, CoinCheung's ``lb_map``). Splits: ``train``/``val`` or the folder names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bisenetv2_ros.class_tables import ADE20K, COCO_STUFF
from bisenetv2_ros.classes import IGNORE_INDEX
from bisenetv2_ros.conventions import is_image_file

from .datasets import DatasetError, Sample, SegmentationDataset, _pair_by_stem

COCO_UNANNOTATED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)  # of the 182 stuffthingmaps ids
COCO_SPLITS = {"train": "train2017", "val": "val2017"}
ADE20K_SPLITS = {"train": "training", "val": "validation"}
TRAIN_IDS_SUFFIX = "_labelTrainIds.png"


def coco_stuff_lookup() -> np.ndarray:
    """stuffthingmaps value (0..181, 255) -> train id (0..170, 255); anything else is invalid."""
    table = np.full(256, SegmentationDataset.INVALID, dtype=np.int16)
    kept = [i for i in range(182) if i not in COCO_UNANNOTATED_IDS]
    table[kept] = np.arange(len(kept))
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def _train_ids_lookup(num_classes: int) -> np.ndarray:
    table = np.full(256, SegmentationDataset.INVALID, dtype=np.int16)
    table[:num_classes] = np.arange(num_classes)
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def ade20k_lookup() -> np.ndarray:
    """0 ("other") -> ignore, 1..150 -> 0..149; anything else is invalid."""
    table = np.full(256, SegmentationDataset.INVALID, dtype=np.int16)
    table[0] = IGNORE_INDEX
    table[1:151] = np.arange(150)
    return table


def _pair_train_ids(image_dir: Path, label_dir: Path) -> list[Sample]:
    """``<stem>.jpg`` with ``<stem>_labelTrainIds.png``."""
    samples = []
    for image in sorted(p for p in image_dir.iterdir() if is_image_file(p)):
        label = label_dir / f"{image.stem}{TRAIN_IDS_SUFFIX}"
        if not label.is_file():
            raise DatasetError(f"image {image} has no label {label}")
        samples.append(Sample(image, label))
    return samples


def coco_stuff(root: str | Path, split: str = "val", transform=None) -> SegmentationDataset:
    """COCO-Stuff-164k, 171 classes, in either publisher's layout (module doc)."""
    root = Path(root)
    folder = COCO_SPLITS.get(split, split)
    image_dir = root / "images" / folder
    if not image_dir.is_dir():
        raise DatasetError(f"COCO-Stuff image folder {image_dir} does not exist (expected {root}/images/"
                           f"{{train2017,val2017}}, as CoinCheung/BiSeNet and mmsegmentation lay it out)")
    converted = root / "annotations" / folder
    if converted.is_dir() and any(converted.glob(f"*{TRAIN_IDS_SUFFIX}")):
        return SegmentationDataset(_pair_train_ids(image_dir, converted), COCO_STUFF, _train_ids_lookup(171),
                                   f"coco-stuff/{split}", transform)
    for label_dir in (root / "labels" / folder, converted):
        if label_dir.is_dir():
            return SegmentationDataset(_pair_by_stem(image_dir, label_dir), COCO_STUFF, coco_stuff_lookup(),
                                       f"coco-stuff/{split}", transform)
    raise DatasetError(f"COCO-Stuff labels not found: neither {root / 'labels' / folder} (stuffthingmaps) nor "
                       f"{converted} exists")


def ade20k(root: str | Path, split: str = "val", transform=None) -> SegmentationDataset:
    """ADE20K SceneParsing, 150 classes (module doc)."""
    root = Path(root)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016" / "images").is_dir():
        root = root / "ADEChallengeData2016"
    folder = ADE20K_SPLITS.get(split, split)
    image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
    if not image_dir.is_dir():
        raise DatasetError(f"ADE20K image folder {image_dir} does not exist (expected ADEChallengeData2016/"
                           f"images/{{training,validation}})")
    return SegmentationDataset(_pair_by_stem(image_dir, label_dir), ADE20K, ade20k_lookup(), f"ade20k/{split}",
                               transform)
