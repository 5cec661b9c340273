"""Segmentation datasets (Cityscapes, CamVid SegNet layout, generic folders; COCO-Stuff and ADE20K in
``datasets_zoo``), class statistics of their labels and the resumable sample stream; the training
augmentation applied to each sample is in ``augmentation``.

Every dataset yields uint8 RGB images and uint8 label maps in train ids (IGNORE_INDEX = 255 for
unlabelled pixels). Training samples are indexed by ``(index, seed)``: the augmentation of a sample
depends only on its seed, so the data stream is reproducible with any number of workers and can be
resumed exactly from an iteration number (see ``ResumableSampler``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from bisenetv2_ros.classes import CAMVID, CITYSCAPES, IGNORE_INDEX, ClassSet
from bisenetv2_ros.conventions import is_image_file
from bisenetv2_ros.image_files import ImageFileError, read_image_file

# Official Cityscapes labelId -> trainId (cityscapesScripts labels.py); everything else is ignored.
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def cityscapes_lookup() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        table[label_id] = train_id
    return table


class DatasetError(ValueError):
    """A missing, unreadable or malformed dataset file; the message names it."""


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB."""
    try:
        return cv2.cvtColor(read_image_file(path), cv2.COLOR_BGR2RGB)
    except ImageFileError as error:
        raise DatasetError(str(error)) from None


def read_label(path: Path) -> np.ndarray:
    """HxW uint8 single-channel label image."""
    try:
        label = read_image_file(path, cv2.IMREAD_UNCHANGED, what="label image")
    except ImageFileError as error:
        raise DatasetError(str(error)) from None
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(f"label image {path} must be single-channel 8-bit, got shape {label.shape} {label.dtype}")
    return label


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


class SegmentationDataset(Dataset):
    """A list of (image, label) files plus a lookup table from stored label values to train ids.

    ``lookup`` maps every raw label value to a train id or IGNORE_INDEX; raw values that should
    never occur map to ``INVALID`` and raise an error naming the file.
    """

    INVALID = -1

    def __init__(self, samples: Sequence[Sample], classes: ClassSet, lookup: np.ndarray, name: str,
                 transform=None) -> None:
        if not samples:
            raise DatasetError(f"{name}: no samples found")
        self.samples = list(samples)
        self.classes = classes
        self.lookup = np.asarray(lookup, dtype=np.int16)
        self.name = name
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image = read_image(sample.image)
        raw = read_label(sample.label)
        if raw.shape != image.shape[:2]:
            raise DatasetError(f"label {sample.label} is {raw.shape[::-1]} (WxH) but image {sample.image} is "
                               f"{image.shape[1::-1]}")
        return image, self.train_ids(raw, sample.label)

    def train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """A stored label image -> uint8 train ids; a value that should never occur is an error naming ``path``."""
        label = self.lookup[raw]
        if (label == self.INVALID).any():
            bad = sorted(int(v) for v in np.unique(raw[label == self.INVALID]))
            raise DatasetError(f"label {path} contains values {bad[:10]} outside the {len(self.classes)} "
                               f"classes (0..{len(self.classes) - 1}) and the ignore value {IGNORE_INDEX}")
        return label.astype(np.uint8)

    def __getitem__(self, item):
        """``index`` -> (image, label) arrays; ``(index, seed)`` -> transformed tensors for training."""
        if isinstance(item, (tuple, list)):
            index, seed = item
        else:
            index, seed = item, None
        image, label = self.load(int(index))
        if self.transform is None:
            return image, label
        return self.transform(image, label, np.random.default_rng(seed))


def _direct_lookup(num_classes: int, extra_ignore: Sequence[int] = ()) -> np.ndarray:
    table = np.full(256, SegmentationDataset.INVALID, dtype=np.int16)
    table[:num_classes] = np.arange(num_classes)
    table[IGNORE_INDEX] = IGNORE_INDEX
    for value in extra_ignore:
        table[value] = IGNORE_INDEX
    return table


def _pair_by_stem(image_dir: Path, label_dir: Path, label_suffix: str = ".png") -> list[Sample]:
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} does not exist")
    if not label_dir.is_dir():
        raise DatasetError(f"label folder {label_dir} does not exist")
    images = sorted(p for p in image_dir.iterdir() if is_image_file(p))
    labels = {p.stem: p for p in label_dir.iterdir() if is_image_file(p)}
    samples = []
    for image in images:
        label = labels.pop(image.stem, None)
        if label is None:
            raise DatasetError(f"image {image} has no label {label_dir / (image.stem + label_suffix)}")
        samples.append(Sample(image, label))
    if labels:
        orphan = sorted(labels.values())[0]
        raise DatasetError(f"label {orphan} has no image {image_dir / orphan.stem}.* ({len(labels)} labels without images)")
    return samples


def cityscapes(root: str | Path, split: str = "train", transform=None) -> SegmentationDataset:
    """``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``gtFine/{split}/{city}/*_gtFine_labelIds.png``.

    The 19 train ids are derived from the labelIds with the official mapping (pre-made trainId
    files are not trusted). labelId values above 33 (and 255 is not a labelId) are an error; -1
    (license plate) is stored as 255 in some releases and is ignored like every unlisted id.
    """
    root = Path(root)
    image_root, label_root = root / "leftImg8bit" / split, root / "gtFine" / split
    if not image_root.is_dir():
        raise DatasetError(f"Cityscapes image folder {image_root} does not exist")
    samples = []
    for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = label_root / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DatasetError(f"image {image} has no label {label}")
        samples.append(Sample(image, label))
    table = np.full(256, SegmentationDataset.INVALID, dtype=np.int16)
    table[:34] = IGNORE_INDEX
    table[255] = IGNORE_INDEX
    table[list(CITYSCAPES_LABEL_TO_TRAIN)] = list(CITYSCAPES_LABEL_TO_TRAIN.values())
    return SegmentationDataset(samples, CITYSCAPES, table, f"cityscapes/{split}", transform)


# Drive-disjoint CamVid splits. The SegNet release's `val` (101 frames of drive 0016E5) shares its drive
# with 204 of the 367 `train` frames, so it measures how well a model knows that drive, not how it does
# on a new camera. These splits keep every drive on one side: the file-name prefix is the drive.
CAMVID_DRIVE_SPLITS: dict[str, tuple[str, ...]] = {
    "drive_train": ("0006R0", "0016E5"),  # 101 + 204 train frames + the 101 val frames = 406
    "drive_val": ("0001TP",),  # 62 frames of a drive no drive_train frame comes from
}
CAMVID_FOLDERS = ("train", "val")  # the SegNet folders the drive splits draw from (test is not shipped)
# Every labelled frame of both folders (train 367 + val 101 = 468, all three drives): what the paper trains its
# CamVid model on (Sec. 5: train + val). A model trained on it has no unseen CamVid drive left to be measured on.
CAMVID_ALL_SPLIT = "all"


def camvid_drive(path: Path) -> str:
    """The drive (sequence) of a CamVid frame: the file-name prefix before the first underscore."""
    return path.name.split("_", 1)[0]


def camvid(root: str | Path, split: str = "train", transform=None) -> SegmentationDataset:
    """SegNet layout: ``{split}/*.png|jpg`` with ``{split}annot/*.png``; 11 classes, 11 (void) -> ignore.

    ``split`` is a SegNet folder (train, val, test), a drive-disjoint split from CAMVID_DRIVE_SPLITS
    (drive_train, drive_val), which gathers the frames of its drives from the train and val folders, or
    ``all`` (CAMVID_ALL_SPLIT): every labelled frame of both folders.
    """
    root = Path(root)
    if split == CAMVID_ALL_SPLIT:
        samples = [s for folder_name in CAMVID_FOLDERS
                   for s in _pair_by_stem(root / folder_name, root / f"{folder_name}annot")]
    elif split in CAMVID_DRIVE_SPLITS:
        drives = CAMVID_DRIVE_SPLITS[split]
        samples = [s for folder_name in CAMVID_FOLDERS
                   for s in _pair_by_stem(root / folder_name, root / f"{folder_name}annot")
                   if camvid_drive(s.image) in drives]
        if not samples:
            raise DatasetError(f"camvid/{split}: no frames of drives {list(drives)} in {root}/train or {root}/val")
    else:
        samples = _pair_by_stem(root / split, root / f"{split}annot")
    return SegmentationDataset(samples, CAMVID, _direct_lookup(len(CAMVID), extra_ignore=(11,)),
                               f"camvid/{split}", transform)


def camvid_split_drives(root: str | Path, split: str) -> set[str]:
    """The drives whose frames a CamVid split holds, read from its file names (an error if it has none)."""
    return {camvid_drive(sample.image) for sample in camvid(root, split).samples}


def folder(root: str | Path, split: str = "train", classes_file: str | Path | None = None,
           transform=None) -> SegmentationDataset:
    """``{root}/{split}/images/*`` + ``{root}/{split}/labels/*.png`` (same stems), or ``images/`` +
    ``labels/`` directly under root when there is no split folder; classes from ``classes_file``
    (default ``{root}/classes.txt``). Label values: 0..N-1, 255 = ignore."""
    root = Path(root)
    base = root / split if (root / split / "images").is_dir() else root
    classes_path = Path(classes_file) if classes_file else root / "classes.txt"
    if not classes_path.is_file():
        raise DatasetError(f"class list {classes_path} does not exist (one class name per line)")
    classes = ClassSet.from_file(classes_path)
    samples = _pair_by_stem(base / "images", base / "labels")
    return SegmentationDataset(samples, classes, _direct_lookup(len(classes)), f"folder:{base}", transform)


def build_dataset(kind: str, root: str | Path, split: str, classes_file: str | None = None,
                  transform=None) -> SegmentationDataset:
    if kind == "cityscapes":
        return cityscapes(root, split, transform)
    if kind == "camvid":
        return camvid(root, split, transform)
    if kind == "folder":
        return folder(root, split, classes_file, transform)
    if kind in ("coco-stuff", "ade20k"):
        from . import datasets_zoo

        return (datasets_zoo.coco_stuff if kind == "coco-stuff" else datasets_zoo.ade20k)(root, split, transform)
    raise ValueError(f"unknown dataset kind {kind!r}; use cityscapes, camvid, folder, coco-stuff or ade20k")


# --------------------------------------------------------------------------------------------
# Class statistics and the sample stream (augmentation: training/augmentation.py)


def rare_class_ids(class_names: Sequence[str], rare: Sequence[str], option: str = "data.rare_classes") -> list[int]:
    """Class names -> ids for class-aware crops and copy-paste; an unknown name is an error that lists
    the classes (``option``: the config key named in it)."""
    lookup = {name.lower(): index for index, name in enumerate(class_names)}
    unknown = [name for name in rare if name.lower() not in lookup]
    if unknown:
        raise DatasetError(f"{option} {unknown} are not classes of this dataset: {list(class_names)}")
    return [lookup[name.lower()] for name in rare]


def label_histogram(dataset: SegmentationDataset) -> np.ndarray:
    """Pixel count of each class over a dataset's labels (ignore excluded)."""
    counts = np.zeros(len(dataset.classes), dtype=np.int64)
    for i in range(len(dataset)):
        raw = read_label(dataset.samples[i].label)
        label = dataset.lookup[raw]
        counts += np.bincount(label[(label >= 0) & (label < len(counts))].ravel(), minlength=len(counts))[: len(counts)]
    return counts


def require_labelled_pixels(dataset: SegmentationDataset) -> None:
    """A DatasetError when no label of ``dataset`` holds a single class pixel (all void): training on
    it would run with loss 0 and learn nothing. Stops at the first labelled frame."""
    for sample in dataset.samples:
        if (dataset.train_ids(read_label(sample.label), sample.label) < len(dataset.classes)).any():
            return
    raise DatasetError(f"{dataset.name}: every pixel of its {len(dataset)} labels is void (ignore value {IGNORE_INDEX} or "
                       f"a value mapped to it), so there is nothing to learn; check the label files")


def median_frequency_weights(counts: Sequence[int], power: float = 1.0) -> np.ndarray:
    """Median-frequency class balancing (Eigen & Fergus 2015, as used by SegNet on CamVid):
    w_c = (median(f) / f_c) ** power. power < 1 softens it; absent classes get weight 1."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1)
    present = freq > 0
    weights = np.ones_like(freq)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return weights.astype(np.float32)


class ResumableSampler(Sampler):
    """Endless stream of ``(index, seed)`` for one process, starting at any iteration.

    Global sample position p = iteration * global_batch + rank * local_batch + k. Epoch
    e = p // len(dataset) is a permutation drawn from ``seed + e``; the augmentation seed of the
    sample is ``(seed, p)``. Everything is a pure function of the position, so a resumed run sees
    exactly the batches an uninterrupted one would, and the ranks of a DDP run never overlap
    (the role of DistributedSampler, plus exact resume).
    """

    def __init__(self, dataset_size: int, local_batch: int, seed: int = 0, start_iteration: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.size, self.local_batch = dataset_size, local_batch
        self.seed, self.start_iteration = seed, start_iteration
        self.rank, self.world_size = rank, world_size
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator)
        return self._perm

    def position(self, iteration: int, k: int) -> int:
        return (iteration * self.world_size + self.rank) * self.local_batch + k

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        iteration = self.start_iteration
        while True:
            for k in range(self.local_batch):
                p = self.position(iteration, k)
                yield int(self._permutation(p // self.size)[p % self.size]), [self.seed, p]
            iteration += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2 ** 62
