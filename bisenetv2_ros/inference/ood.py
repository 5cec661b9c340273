"""A per-frame out-of-distribution score: how unlike the frames the weights were trained on a frame is.

Computed from the two outputs every backend's fused graph already has (labels and the per-pixel
confidence, ``fused.top_class_confidence``) and from the frame itself, on sparse grids, so it exists on
every backend and precision and costs no extra graph output. Four parts, chosen by measurement
(``bisenetv2 benchmark-ood``; docs/node.md#out-of-distribution-frames):

- **layout**: the class fractions in three horizontal bands (top, middle, bottom) and their L1 distance
  to the nearest frames of the training drives. A black, white, covered, noisy, random-texture or
  upside-down frame gets a layout no training drive has, however confident the network is about it.
- **unsure**: the fraction of pixels whose top-class probability is below one half (noise, fog).
- **blur**: how much less detail (mean absolute Laplacian of the frame at 160 pixels wide) the frame
  has than the held-out frames; the network labels blurred frames confidently and plausibly.
- **clipped**: the fraction of saturated pixels (over-exposure, which the network also labels calmly).

Each part is divided by its held-out frames' value at the ``REFERENCE_QUANTILE`` (blur: the inverse
quantile), so 1 = as unusual as the 95th percentile of frames like the training ones; the score is the
largest part. Higher = less like the training frames; ``ood`` = score above the calibrated threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..weights.checkpoint_parts import register_part_check

OOD_FORMAT = 1
PARTS = ("layout", "unsure", "blur", "clipped")
DETAIL_WIDTH = 160  # the blur part looks at the frame resized to this width, whatever the camera
CLIPPED_AT = 250  # a pixel with a channel at or above this is saturated
MIN_CLIPPED_SCALE = 0.05  # held-out frames are rarely clipped at all: a share below this is normal
MIN_LAYOUT_SCALE = 0.1  # 10 % of the pixels in other classes (the embedded model's drive_val: 0.61)
MIN_UNSURE_SCALE = 0.05  # (the embedded model's drive_val: 0.16)
BANDS = 3
UNSURE_BELOW = 128  # uint8 confidence: top-class probability < 0.5
GRID = 96  # the score reads about GRID x GRID pixels of the frame-size outputs
NEAREST = 3  # layout distance: mean over the nearest reference frames
REFERENCE_QUANTILE = 0.95
MAX_REFERENCES = 256
UNCALIBRATED = "uncalibrated"


@dataclass(frozen=True)
class FrameEvidence:
    """What the score reads from one frame, its labels and its confidence."""

    layout: np.ndarray  # (BANDS * classes,) class fractions per band, each band summing to 1 (void excluded)
    class_fractions: np.ndarray  # (classes,) over the whole frame
    mean_confidence: float  # 0..1
    unsure_fraction: float  # 0..1
    detail: float  # mean absolute Laplacian at DETAIL_WIDTH (0..)
    clipped_fraction: float  # 0..1


def frame_evidence(labels: np.ndarray, confidence: np.ndarray, num_classes: int, frame: np.ndarray) -> FrameEvidence:
    """Reads a frame (H, W, 3 uint8, either channel order) and its (H, W) uint8 labels and confidence on a
    grid of about GRID x GRID pixels."""
    if labels.shape != confidence.shape or labels.ndim != 2 or frame.shape[:2] != labels.shape:
        raise ValueError(f"frame, labels and confidence must share one (H, W) size, got {frame.shape}, "
                         f"{labels.shape} and {confidence.shape}")
    step_y, step_x = max(1, labels.shape[0] // GRID), max(1, labels.shape[1] // GRID)
    grid, sure = labels[::step_y, ::step_x], confidence[::step_y, ::step_x]
    bands = np.array_split(np.arange(grid.shape[0]), BANDS)
    layout = np.concatenate([_fractions(grid[rows[0]:rows[-1] + 1], num_classes) for rows in bands])
    pixels = frame[::step_y, ::step_x]
    return FrameEvidence(layout=layout, class_fractions=_fractions(grid, num_classes),
                         mean_confidence=float(sure.mean()) / 255.0,
                         unsure_fraction=float(np.count_nonzero(sure < UNSURE_BELOW)) / sure.size,
                         detail=frame_detail(frame),
                         clipped_fraction=float(np.count_nonzero(pixels.max(axis=2) >= CLIPPED_AT)) / pixels[..., 0].size)


def frame_detail(frame: np.ndarray) -> float:
    """Mean absolute Laplacian of the frame's grey level at DETAIL_WIDTH pixels wide: low when blurred."""
    step = max(1, frame.shape[1] // (2 * DETAIL_WIDTH))  # area-averaging a large frame whole costs ms
    frame = frame[::step, ::step]
    height, width = frame.shape[:2]
    size = (DETAIL_WIDTH, max(1, round(DETAIL_WIDTH * height / width)))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    grey = small.astype(np.float32).mean(axis=2)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def _fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


@dataclass(frozen=True)
class OODCalibration:
    """What the score needs, stored in the checkpoint's info as ``ood`` (``to_dict``)."""

    references: np.ndarray  # (R, BANDS * classes) layouts of training frames
    scales: Mapping[str, float]  # per part (PARTS): the held-out frames' value it is divided by
    threshold: float  # score above which a frame is flagged
    references_from: Mapping[str, Any]  # {"split": ..., "frames": n}
    measured_on: Mapping[str, Any]  # {"split": ..., "frames": n, "seen_in_training": bool}

    def to_dict(self) -> dict[str, Any]:
        return {"format": OOD_FORMAT, "score": "max(" + ", ".join(PARTS) + ")", "bands": BANDS, "grid": GRID,
                "unsure_below": UNSURE_BELOW, "nearest": NEAREST, "quantile": REFERENCE_QUANTILE,
                "references": np.round(self.references, 4).astype(np.float32).tolist(),
                "scales": {part: float(self.scales[part]) for part in PARTS}, "threshold": float(self.threshold),
                "references_from": dict(self.references_from),
                "measured_on": dict(self.measured_on)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, num_classes: int | None = None) -> "OODCalibration | None":
        """None for a checkpoint without one, or with one that cannot be used (``calibration_problem`` says why:
        the score is then uncalibrated)."""
        if values is None or calibration_problem(values, num_classes):
            return None
        return cls(np.asarray(values["references"], dtype=np.float64), {p: float(values["scales"][p]) for p in PARTS},
                   float(values["threshold"]), dict(values.get("references_from", {})),
                   dict(values.get("measured_on", {})))

    def summary(self) -> str:
        seen = self.measured_on.get("seen_in_training")
        return (f"threshold {self.threshold:.3f}, measured on {self.measured_on.get('frames', '?')} frames of "
                f"{self.measured_on.get('split', '?')}" + (" (frames the model trained on)" if seen else "")
                + f", references {self.references_from.get('frames', '?')} frames of "
                f"{self.references_from.get('split', '?')}")


def calibration_problem(values: Any, num_classes: int | None = None) -> str | None:
    """Why a stored calibration (``info.ood``) cannot be used (format, types, finiteness, counts), or None."""
    from ..weights.checkpoint_parts import finite_number

    if not isinstance(values, Mapping):
        return f"it is a {type(values).__name__}, not a mapping"
    if values.get("format") != OOD_FORMAT:
        return f"it has format {values.get('format')!r}; this package reads {OOD_FORMAT}"
    references, scales = values.get("references"), values.get("scales")
    if not (isinstance(references, (list, tuple)) and 1 <= len(references) <= MAX_REFERENCES):
        return f"it needs 1 to {MAX_REFERENCES} reference layouts"
    first = references[0]
    width = BANDS * num_classes if num_classes else len(first) if isinstance(first, (list, tuple)) else -1
    if not all(isinstance(r, (list, tuple)) and len(r) == width for r in references):
        return f"its reference layouts are not lists of {width} numbers" + (
            f" ({BANDS} bands x {num_classes} classes): measured for another class list?" if num_classes else "")
    if not all(all(map(finite_number, r)) for r in references):
        return "its reference layouts hold values that are not finite numbers"
    if not (isinstance(scales, Mapping) and all(finite_number(scales.get(p)) and scales[p] > 0 for p in PARTS)):
        return f"its scales must give each of {', '.join(PARTS)} a finite number above 0"
    if not (finite_number(values.get("threshold")) and values["threshold"] > 0):
        return f"its threshold {values.get('threshold')!r} is not a finite number above 0"
    return None


def layout_distance(layout: np.ndarray, references: np.ndarray) -> float:
    """Mean L1 distance (0..2 per band, divided by BANDS) to the NEAREST closest reference layouts."""
    distances = np.abs(references - layout[None]).sum(axis=1) / BANDS
    nearest = min(NEAREST, len(distances))
    return float(np.partition(distances, nearest - 1)[:nearest].mean())


def raw_parts(evidence: FrameEvidence, references: np.ndarray) -> dict[str, float]:
    """Each part before scaling (blur: the frame's detail, which is *low* when unusual)."""
    return {"layout": layout_distance(evidence.layout, references), "unsure": evidence.unsure_fraction,
            "blur": evidence.detail, "clipped": evidence.clipped_fraction}


def scaled_parts(evidence: FrameEvidence, calibration: OODCalibration) -> dict[str, float]:
    """Each part divided by its scale: 1 = as unusual as the held-out frames' REFERENCE_QUANTILE."""
    raw, scales = raw_parts(evidence, calibration.references), calibration.scales
    parts = {part: raw[part] / scales[part] for part in PARTS if part != "blur"}
    parts["blur"] = scales["blur"] / max(raw["blur"], 1e-6)
    return parts


def ood_score(evidence: FrameEvidence, calibration: OODCalibration | None) -> float:
    """The frame's score; without a calibration the raw unsure fraction (documented as such)."""
    if calibration is None:
        return evidence.unsure_fraction
    return max(scaled_parts(evidence, calibration).values())


def calibrate(references: Sequence[FrameEvidence], held_out: Sequence[FrameEvidence],
              references_from: Mapping[str, Any], measured_on: Mapping[str, Any],
              margin: float = 1.1) -> OODCalibration:
    """The calibration from training frames (``references``) and frames of drives they do not come from
    (``held_out``): each part's scale from the held-out frames (REFERENCE_QUANTILE; blur: its complement);
    the threshold is ``margin`` x the largest held-out score, so every held-out frame passes (false alarms
    on other frames of those cameras: ``bisenetv2 benchmark-ood``, which calibrates on half of them)."""
    if len(references) < NEAREST or len(held_out) < 4:
        raise ValueError(f"ood calibration needs at least {NEAREST} reference and 4 held-out frames, got "
                         f"{len(references)} and {len(held_out)}")
    picks = np.linspace(0, len(references) - 1, min(len(references), MAX_REFERENCES)).round().astype(int)
    layouts = np.stack([references[i].layout for i in picks])
    raw = [raw_parts(evidence, layouts) for evidence in held_out]
    high = {part: float(np.quantile([r[part] for r in raw], REFERENCE_QUANTILE)) for part in PARTS}
    # Floors: held-out frames that hardly vary (one camera, one street) must not make a small change alarming.
    scales = {"layout": max(high["layout"], MIN_LAYOUT_SCALE), "unsure": max(high["unsure"], MIN_UNSURE_SCALE),
              "blur": max(float(np.quantile([r["blur"] for r in raw], 1.0 - REFERENCE_QUANTILE)), 1e-3),
              # twice the quantile: one clipped held-out frame must not make a small share alarming
              "clipped": max(2.0 * high["clipped"], MIN_CLIPPED_SCALE)}
    calibration = OODCalibration(layouts, scales, 0.0, dict(references_from), {**measured_on, "frames": len(held_out)})
    threshold = max(ood_score(evidence, calibration) for evidence in held_out) * margin
    return OODCalibration(layouts, scales, threshold, dict(references_from), {**measured_on, "frames": len(held_out)})


class OODScorer:
    """``score(labels, confidence) -> (score, ood)`` with a checkpoint's calibration (``info.ood``);
    ``ood`` is None when the weights carry none (the alarm then says "uncalibrated")."""

    def __init__(self, stored: Mapping[str, Any] | None, num_classes: int) -> None:
        problem = None if stored is None else calibration_problem(stored, num_classes)
        self.calibration = None if problem else OODCalibration.from_dict(stored, num_classes)
        if problem:
            import logging

            logging.getLogger("bisenetv2_ros").warning("ood: the weights' calibration is not used (frames are scored, "
                                                       "never flagged): %s", problem)
        self.num_classes = int(num_classes)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def score(self, frame: np.ndarray, labels: np.ndarray, confidence: np.ndarray) -> tuple[float, bool | None]:
        """(score, ood) of a frame; ood None when uncalibrated."""
        return self.judge(frame_evidence(labels, confidence, self.num_classes, frame))

    def judge(self, evidence: FrameEvidence) -> tuple[float, bool | None]:
        score = ood_score(evidence, self.calibration)
        return score, None if self.calibration is None else bool(score > self.calibration.threshold)


def _stored_calibration_problem(checkpoint) -> str | None:
    return calibration_problem(checkpoint.info.ood, len(checkpoint.info.classes))


register_part_check("ood calibration", lambda checkpoint: checkpoint.info.ood is not None, _stored_calibration_problem)
