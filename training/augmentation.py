"""Training augmentation: photometric jitter and the train transform (scale, class-aware crop, flip,
normalize) applied to each ``(image, label)`` sample of a ``datasets.SegmentationDataset``.

Every random draw comes from the ``numpy.random.Generator`` passed in, seeded per sample by
``datasets.ResumableSampler``, so a sample's augmentation is a pure function of its position.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from bisenetv2_ros.classes import IGNORE_INDEX
from bisenetv2_ros.conventions import normalization_scale_shift


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
