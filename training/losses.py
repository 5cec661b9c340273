"""OHEM cross-entropy and the booster loss (Sec. 4.4, Table 4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bisenetv2_ros.classes import IGNORE_INDEX


def ohem_keep_mask(pixel_losses: torch.Tensor, valid: torch.Tensor, threshold: float = 0.7,
                   min_kept_fraction: float = 1 / 16) -> torch.Tensor:
    """Which valid pixels OHEM keeps.

    A pixel is hard when the predicted probability of its true class is below ``threshold``,
    i.e. its loss is above -log(threshold). All hard pixels are kept, but never fewer than
    ``min_kept_fraction`` of the valid pixels: if too few are hard, the largest losses are kept.
    """
    losses = pixel_losses.flatten()
    valid = valid.flatten()
    num_valid = int(valid.sum())
    keep = torch.zeros_like(valid)
    if num_valid == 0:
        return keep.view_as(pixel_losses)
    min_kept = max(1, int(num_valid * min_kept_fraction))
    hard = valid & (losses > -math.log(threshold))
    if int(hard.sum()) >= min_kept:
        keep = hard
    else:
        candidates = torch.where(valid, losses, torch.full_like(losses, -1.0))
        keep[torch.topk(candidates, min_kept, sorted=False).indices] = True
    return keep.view_as(pixel_losses)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the OHEM-kept pixels (all valid pixels when disabled).

    ``class_weights`` (optional, one per class) make it a class-balanced loss: hard pixels are still
    chosen by their unweighted loss (the probability threshold keeps its meaning), and the kept pixels
    are averaged with their class weights, so a rare class such as pole counts as much as its weight says.
    """

    def __init__(self, threshold: float = 0.7, min_kept_fraction: float = 1 / 16, ignore_index: int = IGNORE_INDEX,
                 enabled: bool = True, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.threshold, self.min_kept_fraction = threshold, min_kept_fraction
        self.ignore_index, self.enabled = ignore_index, enabled
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_losses = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if not self.enabled:
            keep = valid
        else:
            with torch.no_grad():
                keep = ohem_keep_mask(pixel_losses.detach(), valid, self.threshold, self.min_kept_fraction)
        if not bool(keep.any()):
            return pixel_losses.sum() * 0.0  # an all-ignore batch: zero loss, graph kept for DDP
        if self.class_weights is None:
            return pixel_losses[keep].mean()
        weights = self.class_weights.to(pixel_losses.device)[target[keep]]
        return (pixel_losses[keep] * weights).sum() / weights.sum()


class BoosterLoss(nn.Module):
    """Main loss + aux_weight * each booster head's loss; returns (total, {name: value})."""

    def __init__(self, criterion: nn.Module, aux_weight: float = 1.0) -> None:
        super().__init__()
        self.criterion, self.aux_weight = criterion, aux_weight

    def forward(self, outputs, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(outputs, torch.Tensor):
            main, aux = outputs, []
        else:
            main, aux = outputs
        main_loss = self.criterion(main, target)
        parts = {"loss_main": float(main_loss.detach())}
        total = main_loss
        for i, logits in enumerate(aux):
            aux_loss = self.criterion(logits, target)
            parts[f"loss_aux{i}"] = float(aux_loss.detach())
            total = total + self.aux_weight * aux_loss
        parts["loss"] = float(total.detach())
        return total, parts
