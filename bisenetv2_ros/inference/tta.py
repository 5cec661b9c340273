"""Offline test-time augmentation (TTA): horizontal flip and several input scales, averaged before
the argmax, for labelling recordings where latency does not matter (issue 23, item 4).

Each view runs the network on the frame resized to ``input_size x scale`` (and mirrored, for the
flipped view); its logits are upsampled straight to the frame size, as in the plain pipeline. One
view returns its logits unchanged, so TTA with scale 1 and no flip gives exactly the plain labels;
several views average their softmax probabilities (each view's scores on one scale, so no single
view's logit magnitude dominates). The paper's multi-scale and flip evaluation (Sec. 5) is the same
idea. Only backends that can return logits run it (the torch backend); the exported graphs end in
the argmax.

    seg = Segmenter("camvid", backend="torch", tta=TTASettings(scales=(0.75, 1.0, 1.25), flip=True))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # torch is imported where the scores are computed: the settings stay cheap to import
    import torch

    from .fused import FusedSegmentation

DEFAULT_TTA_SCALES = (0.75, 1.0, 1.25)
MAX_TTA_SCALE = 8.0  # a view 8x the input size a side already costs 64x the network's time


@dataclass(frozen=True)
class TTASettings:
    """scales: factors of the network's input size, one view each; flip: also each mirrored view."""

    scales: tuple[float, ...] = DEFAULT_TTA_SCALES
    flip: bool = True

    def __post_init__(self) -> None:
        scales = tuple(self.scales) if isinstance(self.scales, (list, tuple)) else None
        if not scales or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                                 and 0 < s <= MAX_TTA_SCALE for s in scales):
            raise ValueError(f"TTA scales must be a non-empty list of positive numbers at most {MAX_TTA_SCALE:g} "
                             f"(e.g. 0.75,1,1.25), "
                             f"got {self.scales!r}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"TTA scales must not repeat a scale, got {self.scales!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"TTA flip must be True or False, got {self.flip!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.75,1,1.25' -> (0.75, 1.0, 1.25); a ValueError naming the text otherwise."""
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"TTA scales {text!r} must be comma-separated numbers, e.g. 0.75,1,1.25") from None
    return TTASettings(scales).scales


def scaled_size(input_size: Sequence[int], scale: float) -> tuple[int, int]:
    return max(1, int(round(input_size[0] * scale))), max(1, int(round(input_size[1] * scale)))


def tta_scores(fused: FusedSegmentation, frames: torch.Tensor, settings: TTASettings) -> torch.Tensor:
    """uint8 (N, H, W, 3) frames on the pipeline's device -> float32 (N, classes, H, W) scores whose
    argmax is the TTA labels: the logits of a single view, else the mean softmax over the views.

    Uses the pipeline's own pre-processing constants, channel swap and network (and its reduced
    network precision, if any), so a single view at scale 1 repeats the plain path operation by operation.
    """
    import torch.nn.functional as F

    out_size = tuple(frames.shape[1:3])
    x = frames.permute(0, 3, 1, 2).to(fused.scale.dtype)
    if fused.swap_channels:
        x = x.flip(1)
    total = None
    for scale in settings.scales:
        size = scaled_size(fused.input_size, scale)
        resized = x if tuple(x.shape[2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        normalised = resized * fused.scale + fused.shift
        for mirrored in ((False, True) if settings.flip else (False,)):
            logits = _logits(fused, normalised.flip(3) if mirrored else normalised, out_size)
            if mirrored:
                logits = logits.flip(3)
            scores = logits.float() if settings.views == 1 else logits.float().softmax(1)
            total = scores if total is None else total + scores
    return total if settings.views == 1 else total / settings.views


def _logits(fused: FusedSegmentation, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """As FusedSegmentation.forward, up to (not including) the argmax."""
    if fused.network_dtype is not None:
        logits = fused.model.forward_logits(x.to(fused.network_dtype))[0].float()
        return fused.model.upsample_logits(logits, out_size)
    return fused.model(x, output_size=out_size)
