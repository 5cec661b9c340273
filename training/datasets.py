"""Segmentation datasets (Cityscapes, CamVid SegNet layout, generic folders) and training augmentation.

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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

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
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path} (missing, unreadable or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """HxW uint8 single-channel label image."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label image {path} (missing, unreadable or not an image)")
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
        label = self.lookup[raw]
        if (label == self.INVALID).any():
            bad = sorted(int(v) for v in np.unique(raw[label == self.INVALID]))
            raise DatasetError(f"label {sample.label} contains values {bad[:10]} outside the {len(self.classes)} "
                               f"classes (0..{len(self.classes) - 1}) and the ignore value {IGNORE_INDEX}")
        return image, label.astype(np.uint8)

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
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
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


def camvid(root: str | Path, split: str = "train", transform=None) -> SegmentationDataset:
    """SegNet layout: ``{split}/*.png|jpg`` with ``{split}annot/*.png``; 11 classes, 11 (void) -> ignore."""
    root = Path(root)
    samples = _pair_by_stem(root / split, root / f"{split}annot")
    return SegmentationDataset(samples, CAMVID, _direct_lookup(len(CAMVID), extra_ignore=(11,)),
                               f"camvid/{split}", transform)


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
    raise ValueError(f"unknown dataset kind {kind!r}; use cityscapes, camvid or folder")


# --------------------------------------------------------------------------------------------
# Augmentation


class TrainTransform:
    """Resize to base size, random scale, random crop (pad with ignore), optional resize, random flip,
    normalize. Returns (float32 CHW tensor, int64 HW tensor)."""

    def __init__(self, crop_size: Sequence[int], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float], base_size: Sequence[int] | None = None,
                 train_size: Sequence[int] | None = None, hflip: bool = True) -> None:
        self.crop_h, self.crop_w = int(crop_size[0]), int(crop_size[1])
        self.scales = [float(s) for s in scales]
        self.base_size = tuple(base_size) if base_size else None
        self.train_size = tuple(train_size) if train_size else None
        self.hflip = hflip
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.std = np.asarray(std, dtype=np.float32) * 255.0

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        h, w = self.base_size if self.base_size else image.shape[:2]
        scale = self.scales[int(rng.integers(len(self.scales)))]
        sh, sw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST)
        pad_h, pad_w = max(0, self.crop_h - sh), max(0, self.crop_w - sw)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        top = int(rng.integers(image.shape[0] - self.crop_h + 1))
        left = int(rng.integers(image.shape[1] - self.crop_w + 1))
        image = image[top:top + self.crop_h, left:left + self.crop_w]
        label = label[top:top + self.crop_h, left:left + self.crop_w]
        if self.train_size and self.train_size != (self.crop_h, self.crop_w):
            image = cv2.resize(image, self.train_size[::-1], interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, self.train_size[::-1], interpolation=cv2.INTER_NEAREST)
        if self.hflip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        x = (image.astype(np.float32) - self.mean) / self.std
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(label)).long())


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
