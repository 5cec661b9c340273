"""Segmentation datasets (Cityscapes, CamVid SegNet layout, generic folders; COCO-Stuff and ADE20K in
``datasets_zoo``) and training augmentation.

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
from bisenetv2_ros.conventions import is_image_file, normalization_scale_shift

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


def camvid_drive(path: Path) -> str:
    """The drive (sequence) of a CamVid frame: the file-name prefix before the first underscore."""
    return path.name.split("_", 1)[0]


def camvid(root: str | Path, split: str = "train", transform=None) -> SegmentationDataset:
    """SegNet layout: ``{split}/*.png|jpg`` with ``{split}annot/*.png``; 11 classes, 11 (void) -> ignore.

    ``split`` is a SegNet folder (train, val, test) or a drive-disjoint split from CAMVID_DRIVE_SPLITS
    (drive_train, drive_val), which gathers the frames of its drives from the train and val folders.
    """
    root = Path(root)
    if split in CAMVID_DRIVE_SPLITS:
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
# Augmentation


class PhotometricJitter:
    """Random brightness, contrast, saturation, hue, gamma and per-channel gain (white balance) on a
    uint8 RGB image (labels untouched).

    Each factor is drawn uniformly from its range; a range of (1, 1) (or 0 for hue) switches it off.
    Why: the drives differ in lighting (0001TP is filmed at dusk), and a model trained on two drives
    otherwise learns their exposure and white balance along with the classes.
    """

    def __init__(self, brightness: Sequence[float] = (0.6, 1.4), contrast: Sequence[float] = (0.7, 1.3),
                 saturation: Sequence[float] = (0.7, 1.3), hue: float = 0.05,
                 gamma: Sequence[float] = (0.7, 1.5), channel_gain: float = 0.0) -> None:
        self.brightness = tuple(float(v) for v in brightness)
        self.contrast = tuple(float(v) for v in contrast)
        self.saturation = tuple(float(v) for v in saturation)
        self.hue = float(hue)  # max shift as a fraction of the hue circle
        self.gamma = tuple(float(v) for v in gamma)
        self.channel_gain = float(channel_gain)  # each of R, G, B scaled by 1 +- up to this (colour cast)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, c, s = (rng.uniform(*r) for r in (self.brightness, self.contrast, self.saturation))
        h, g = rng.uniform(-self.hue, self.hue), rng.uniform(*self.gamma)
        gains = 1.0 + rng.uniform(-self.channel_gain, self.channel_gain, 3) if self.channel_gain else np.ones(3)
        x = image.astype(np.float32)
        x *= (b * gains).astype(np.float32)
        x = (x - x.mean()) * c + x.mean()
        gray = x @ np.float32([0.299, 0.587, 0.114])
        x = (x - gray[..., None]) * s + gray[..., None]
        x = np.clip(x, 0, 255).astype(np.uint8)
        if h:
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # uint8 hue is 0..179
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(h * 180))) % 180).astype(np.uint8)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
        return cv2.LUT(x, lut)


class TrainTransform:
    """Resize to base size, random scale, random crop (pad with ignore), optional resize, random flip,
    photometric jitter, normalize. Returns (float32 CHW tensor, int64 HW tensor).

    The scale is drawn from ``scales`` (a list) or uniformly from ``scale_range`` (lo, hi) when given.
    Resizing happens once, from the original frame straight to base_size x scale, so a full-resolution
    frame keeps its detail at large scales.
    """

    def __init__(self, crop_size: Sequence[int], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float], base_size: Sequence[int] | None = None,
                 train_size: Sequence[int] | None = None, hflip: bool = True,
                 scale_range: Sequence[float] | None = None, photometric: PhotometricJitter | None = None,
                 rare_class_ids: Sequence[int] = (), rare_crop_fraction: float = 0.0) -> None:
        self.crop_h, self.crop_w = int(crop_size[0]), int(crop_size[1])
        # Class-aware crops: this fraction of the crops is centred on a random pixel of a rare class
        # present in the frame, so thin, rare things (pole, sign, pedestrian, bicyclist) are seen often.
        self.rare_class_ids = np.asarray(sorted(set(int(c) for c in rare_class_ids)), dtype=np.int64)
        self.rare_crop_fraction = float(rare_crop_fraction)
        # Copy-paste of rare-class pixels from another frame (training/copy_paste.py), before the geometry.
        self.paste = None
        self.scales = [float(s) for s in scales]
        self.scale_range = tuple(float(v) for v in scale_range) if scale_range else None
        self.base_size = tuple(base_size) if base_size else None
        self.train_size = tuple(train_size) if train_size else None
        self.hflip = hflip
        self.photometric = photometric
        self.scale, self.shift = (np.asarray(v, dtype=np.float32) for v in normalization_scale_shift(mean, std))

    def geometry(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """Scale, crop, resize and flip; the label follows every pixel of the image."""
        h, w = self.base_size if self.base_size else image.shape[:2]
        if self.scale_range:
            scale = float(rng.uniform(*self.scale_range))
        else:
            scale = self.scales[int(rng.integers(len(self.scales)))]
        sh, sw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST)
        pad_h, pad_w = max(0, self.crop_h - sh), max(0, self.crop_w - sw)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        top, left = self.crop_origin(label, rng)
        image = image[top:top + self.crop_h, left:left + self.crop_w]
        label = label[top:top + self.crop_h, left:left + self.crop_w]
        if self.train_size and self.train_size != (self.crop_h, self.crop_w):
            image = cv2.resize(image, self.train_size[::-1], interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, self.train_size[::-1], interpolation=cv2.INTER_NEAREST)
        if self.hflip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def crop_origin(self, label: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of the crop: uniform, or (rare_crop_fraction of the time) centred on a
        random rare-class pixel, clamped so the crop stays inside the frame."""
        max_top, max_left = label.shape[0] - self.crop_h, label.shape[1] - self.crop_w
        if self.rare_class_ids.size and self.rare_crop_fraction > 0 and rng.random() < self.rare_crop_fraction:
            ys, xs = np.nonzero(np.isin(label, self.rare_class_ids))
            if ys.size:
                k = int(rng.integers(ys.size))
                top = min(max(int(ys[k]) - self.crop_h // 2, 0), max_top)
                left = min(max(int(xs[k]) - self.crop_w // 2, 0), max_left)
                return top, left
        return int(rng.integers(max_top + 1)), int(rng.integers(max_left + 1))

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        if self.paste is not None:
            image, label = self.paste(image, label, rng)
        image, label = self.geometry(image, label, rng)
        if self.photometric is not None:
            image = self.photometric(image, rng)
        x = image.astype(np.float32) * self.scale + self.shift
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                torch.from_numpy(label).long())


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
