"""The publishers' test pipelines, so an imported checkpoint can be checked against its published mIoU.

``training/evaluate.py --protocol``:

* ``project`` (default): this package's own pipeline (``Segmenter``): float resize to the model
  resolution, the logits upsampled once, straight to the label size.
* ``paper``: the same pipeline at the resolution the BiSeNetV2 paper evaluates at (Sec. 5: a 2048x1024
  Cityscapes frame resized to 1024x512 and the prediction resized back; CamVid at 960x720).
* ``mmseg``: mmsegmentation's test pipeline (the v0.x configs the BiSeNet weights were published with):
  ``Resize(img_scale, keep_ratio=True)`` sizes the image with mmcv's ``rescale_size`` (scale factor
  min(long / max(h, w), short / min(h, w)), sides ``int(side * factor + 0.5)``) and resizes the uint8
  image with cv2 (INTER_LINEAR, so the network sees the rounded uint8 pixels), then normalises. Inference
  ``mode='whole'`` (every BiSeNet config): the decode head's 1/8 logits are resized (bilinear,
  ``align_corners=False``) to the network input, then again to the original image; ``mode='slide'``:
  ``crop_size`` windows every ``stride``, the last one moved back inside the image, each window's
  logits at its own size, summed and divided by the per-pixel window count, then resized to the
  original. ``ms+flip`` (the "mIoU(ms+flip)" column): img_scale times each ratio 0.5, 0.75, ..., 1.75,
  each view also mirrored; softmax at the original size, averaged.
* ``coincheung``: CoinCheung/BiSeNet ``tools/evaluate.py``: the image normalised as float, optionally
  its short side resized to ``eval_start_shortside`` (ADE20K configs; bilinear, ``align_corners=False``).
  ``ss`` / ``msf``: per scale, the size ``int(scale * side)`` rounded *up* to a multiple of 32, the image
  resized with ``align_corners=True``, the network's full-resolution logits resized to the label size
  with ``align_corners=True``, softmax summed (``msf``: scales 0.5..1.75 and mirrored views). ``ssc`` /
  ``mscf``: per scale, ``int(scale * side)`` (no rounding), the image zero-padded (centred) to at least
  the crop, crops of ``eval_crop`` every ceil(2/3 crop), the last moved back inside, each crop's softmax
  (with flip: plus the mirrored crop's, then exp of the sum) summed where it falls, the padding cut
  off, resized to the label size (``align_corners=True``). Their mIoU divides by tp + fp + fn + 1
  (``publisher_miou``), which this module reports beside the exact one.

The network's own output (``model(x)``: logits at the input size) stands for the publishers' networks:
the importers make it identical to theirs for inputs that are multiples of 32 (test_importers*.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bisenetv2_ros.conventions import normalization_scale_shift
from bisenetv2_ros.weights.checkpoint import Normalization

PROTOCOLS = ("project", "paper", "mmseg", "coincheung")
MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # both publishers' multi-scale factors

# The BiSeNetV2 paper's evaluation resolution (H, W) per dataset (Sec. 5).
PAPER_INPUT_SIZES = {"cityscapes": (512, 1024), "camvid": (720, 960)}
# mmsegmentation's test img_scale (long, short) per dataset config (_base_/datasets/*.py).
MMSEG_SCALES = {"cityscapes": (2048, 1024), "coco-stuff164k": (2048, 512), "ade20k": (2048, 512)}
# CoinCheung's configs/bisenetv{1,2}_{city,coco,ade20k}.py: (eval_crop side, eval_start_shortside).
COINCHEUNG_EVAL = {("bisenetv1", "cityscapes"): (1024, None), ("bisenetv2", "cityscapes"): (1024, None),
                   ("bisenetv1", "coco-stuff164k"): (512, None), ("bisenetv2", "coco-stuff164k"): (640, None),
                   ("bisenetv1", "ade20k"): (512, 512), ("bisenetv2", "ade20k"): (640, 640)}
COINCHEUNG_MODES = ("ss", "ssc", "msf", "mscf")

Predict = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 RGB -> HxW labels


@dataclass(frozen=True)
class MmsegSettings:
    scale: tuple[int, int]  # img_scale as (long, short) edge limits
    mode: str = "whole"  # or "slide"
    crop_size: tuple[int, int] | None = None  # slide: (h, w)
    stride: tuple[int, int] | None = None  # slide: (h, w)
    ratios: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mmseg inference mode must be whole or slide, got {self.mode!r}")
        if self.mode == "slide" and not (self.crop_size and self.stride):
            raise ValueError("mmseg slide inference needs a crop size and a stride (e.g. 1024x1024 and 768x768)")


@dataclass(frozen=True)
class CoinCheungSettings:
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop: tuple[int, int] | None = None  # ssc / mscf: (h, w)
    short_side: int | None = None  # eval_start_shortside
    stride_rate: float = 2.0 / 3.0

    @classmethod
    def for_mode(cls, mode: str, crop: tuple[int, int], short_side: int | None) -> "CoinCheungSettings":
        """The four columns of CoinCheung's tables: ss, ssc (crop), msf (scales + flip), mscf (all)."""
        if mode not in COINCHEUNG_MODES:
            raise ValueError(f"CoinCheung evaluation must be one of {COINCHEUNG_MODES}, got {mode!r}")
        multi = mode in ("msf", "mscf")
        return cls(scales=MS_RATIOS if multi else (1.0,), flip=multi,
                   crop=tuple(crop) if mode in ("ssc", "mscf") else None, short_side=short_side)


def _normalised(image: np.ndarray, normalization: Normalization, device: torch.device | str) -> torch.Tensor:
    """HxWx3 uint8 (in the checkpoint's channel order) -> 1x3xHxW float32, (x / 255 - mean) / std."""
    scale, shift = (torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                    for v in normalization_scale_shift(normalization.mean, normalization.std))
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    return x * scale + shift


def _in_model_order(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    return image if normalization.channel_order == "rgb" else image[..., ::-1]


# --------------------------------------------------------------------------------------------
# mmsegmentation


def mmseg_rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio size: the largest that fits both edge limits; (new_h, new_w)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _mmseg_slide(model: torch.nn.Module, x: torch.Tensor, settings: MmsegSettings) -> torch.Tensor:
    (h_crop, w_crop), (h_stride, w_stride) = settings.crop_size, settings.stride
    _, _, h_img, w_img = x.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    total, count = None, x.new_zeros(1, 1, h_img, w_img)
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * h_stride + h_crop, h_img), min(j * w_stride + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            logits = model(x[:, :, y1:y2, x1:x2])
            padded = F.pad(logits, (x1, w_img - x2, y1, h_img - y2))
            total = padded if total is None else total + padded
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


@torch.inference_mode()
def mmseg_probabilities(model: torch.nn.Module, image: np.ndarray, normalization: Normalization,
                        settings: MmsegSettings, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 x C x H x W scores at the image size: logits for one view, else the mean softmax."""
    height, width = image.shape[:2]
    image = _in_model_order(image, normalization)
    views = [(r, f) for r in settings.ratios for f in ((False, True) if settings.flip else (False,))]
    total = None
    for ratio, mirrored in views:
        limits = (int(max(settings.scale) * ratio), int(min(settings.scale) * ratio))
        new_h, new_w = mmseg_rescale_size(height, width, limits)
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)  # uint8 in, uint8 out
        if mirrored:
            resized = resized[:, ::-1]
        x = _normalised(resized, normalization, device)
        logits = model(x) if settings.mode == "whole" else _mmseg_slide(model, x, settings)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        if len(views) == 1:
            return logits
        probabilities = logits.softmax(1)
        total = (probabilities.flip(3) if mirrored else probabilities) + (0 if total is None else total)
    return total / len(views)


# --------------------------------------------------------------------------------------------
# CoinCheung/BiSeNet


def _round_up_32(side: int) -> int:
    return math.ceil(side / 32) * 32


def _coincheung_crops(model: torch.nn.Module, x: torch.Tensor, settings: CoinCheungSettings,
                      num_classes: int) -> torch.Tensor:
    crop_h, crop_w = settings.crop
    _, _, h, w = x.shape
    if crop_h < h and crop_w < w:
        top, left, padded = 0, 0, x
    else:  # zero-pad (in normalised space), centred, to at least the crop
        pad_h, pad_w = max(crop_h, h), max(crop_w, w)
        top, left = (pad_h - h) // 2, (pad_w - w) // 2
        padded = x.new_zeros(1, x.shape[1], pad_h, pad_w)
        padded[:, :, top:top + h, left:left + w] = x
    _, _, H, W = padded.shape
    stride_h, stride_w = math.ceil(crop_h * settings.stride_rate), math.ceil(crop_w * settings.stride_rate)
    rows, cols = math.ceil((H - crop_h) / stride_h) + 1, math.ceil((W - crop_w) / stride_w) + 1
    scores = x.new_zeros(1, num_classes, H, W)
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(H, stride_h * i + crop_h), min(W, stride_w * j + crop_w)
            y1, x1 = y2 - crop_h, x2 - crop_w
            chip = padded[:, :, y1:y2, x1:x2]
            probabilities = model(chip).softmax(1)
            if settings.flip:
                probabilities = (probabilities + model(chip.flip(3)).flip(3).softmax(1)).exp()
            scores[:, :, y1:y2, x1:x2] += probabilities
    return scores[:, :, top:top + h, left:left + w]


@torch.inference_mode()
def coincheung_probabilities(model: torch.nn.Module, image: np.ndarray, normalization: Normalization,
                             settings: CoinCheungSettings, num_classes: int,
                             device: torch.device | str = "cpu") -> torch.Tensor:
    """1 x C x H x W summed scores at the image (label) size."""
    label_size = image.shape[:2]
    x = _normalised(_in_model_order(image, normalization), normalization, device)
    if settings.short_side:
        h, w = x.shape[2:]
        side = settings.short_side
        size = (side, int(side / h * w)) if h < w else (int(side / w * h), side)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h, w = x.shape[2:]
    total = x.new_zeros(1, num_classes, *label_size)
    for scale in settings.scales:
        if settings.crop is None:
            size = (_round_up_32(int(scale * h)), _round_up_32(int(scale * w)))
            scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            for mirrored in ((False, True) if settings.flip else (False,)):
                logits = model(scaled.flip(3)).flip(3) if mirrored else model(scaled)
                logits = F.interpolate(logits, size=label_size, mode="bilinear", align_corners=True)
                total += logits.softmax(1)
        else:
            scaled = F.interpolate(x, size=(int(h * scale), int(w * scale)), mode="bilinear", align_corners=True)
            scores = _coincheung_crops(model, scaled, settings, num_classes)
            total += F.interpolate(scores, size=label_size, mode="bilinear", align_corners=True)
    return total


def publisher_miou(matrix: np.ndarray) -> float:
    """CoinCheung's mIoU: mean over all classes of tp / (tp + fp + fn + 1) (a class absent from both
    ground truth and prediction counts as 0, not as missing)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    return float(np.mean(tp / (matrix.sum(0) + matrix.sum(1) - tp + 1)))


# --------------------------------------------------------------------------------------------
# Choosing a protocol


@dataclass(frozen=True)
class ProtocolChoice:
    """What ``--protocol`` resolved to: the name, its settings, and the dataset/network they were read for."""

    name: str
    settings: MmsegSettings | CoinCheungSettings | None = None
    input_size: tuple[int, int] | None = None  # project, paper: the network resolution


def choose_protocol(name: str, dataset: str, architecture: str, *, mmseg_mode: str = "whole",
                    crop_size: tuple[int, int] | None = None, stride: tuple[int, int] | None = None,
                    ms_flip: bool = False, coincheung_mode: str = "ss",
                    input_size: tuple[int, int] | None = None) -> ProtocolChoice:
    """The publisher's settings for a dataset (and, for CoinCheung, the network); ValueError names what is missing."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    if name == "project":
        return ProtocolChoice(name, input_size=input_size)
    if name == "paper":
        size = input_size or PAPER_INPUT_SIZES.get(dataset)
        if size is None:
            raise ValueError(f"the paper states no evaluation resolution for {dataset}; pass --input-size HxW")
        return ProtocolChoice(name, input_size=tuple(size))
    if name == "mmseg":
        if dataset not in MMSEG_SCALES:
            raise ValueError(f"mmsegmentation has no BiSeNet test pipeline for {dataset}; "
                             f"it has {', '.join(MMSEG_SCALES)}")
        settings = MmsegSettings(MMSEG_SCALES[dataset], mmseg_mode, crop_size, stride,
                                 MS_RATIOS if ms_flip else (1.0,), ms_flip)
        return ProtocolChoice(name, settings)
    if (architecture, dataset) not in COINCHEUNG_EVAL:
        raise ValueError(f"CoinCheung/BiSeNet has no {architecture} evaluation config for {dataset}; "
                         f"it has {sorted(COINCHEUNG_EVAL)}")
    crop, short_side = COINCHEUNG_EVAL[(architecture, dataset)]
    return ProtocolChoice(name, CoinCheungSettings.for_mode(coincheung_mode, crop_size or (crop, crop), short_side))


def publisher_predictor(choice: ProtocolChoice, model: torch.nn.Module, normalization: Normalization,
                        device: torch.device | str = "cpu") -> Predict:
    """``predict(image) -> labels`` of the mmseg or coincheung pipeline (``model`` in eval mode)."""
    if isinstance(choice.settings, MmsegSettings):
        def scores(image):
            return mmseg_probabilities(model, image, normalization, choice.settings, device)
    elif isinstance(choice.settings, CoinCheungSettings):
        num_classes = model.config.num_classes

        def scores(image):
            return coincheung_probabilities(model, image, normalization, choice.settings, num_classes, device)
    else:
        raise ValueError(f"protocol {choice.name!r} runs through the Segmenter, not a publisher's pipeline")
    return lambda image: scores(image).argmax(1)[0].to(torch.uint8).cpu().numpy()
