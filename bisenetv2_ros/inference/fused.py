"""The whole frame-to-labels pipeline as one ``nn.Module``, so every exported form carries it.

uint8 NHWC frames -> float -> resize to the model resolution -> normalise (and swap channels if the
frames are not in the checkpoint's order) -> BiSeNetV2 or BiSeNetV1 -> upsample the 1/8 logits once, straight to
the frame size -> argmax -> uint8 NHW labels. Nothing per pixel happens outside this graph.

With ``confidence=True`` the graph has a second output: uint8 NHW confidence, round(255 x the top
class's softmax probability), computed from the same 1/8 logits and upsampled (``top_class_confidence``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..conventions import CHANNEL_ORDERS, normalization_scale_shift
from ..models.architectures import SegmentationModel
from ..weights.checkpoint import Normalization


class FusedSegmentation(nn.Module):
    """``forward(frames uint8 (N, H, W, 3)) -> labels uint8 (N, H, W)``, or ``(labels, confidence)``
    (both uint8 (N, H, W)) when built with ``confidence=True``.

    input_size: (height, width) the network runs at. channel_order: the order of the incoming frames;
    when it differs from ``normalization.channel_order`` the swap is folded into the normalisation
    constants (a gather of three channels), so it costs nothing extra.
    """

    def __init__(self, model: SegmentationModel, normalization: Normalization, input_size: tuple[int, int],
                 channel_order: str = "rgb", confidence: bool = False) -> None:
        super().__init__()
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (height, width) with positive sides, got {input_size!r}")
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channel_order = channel_order
        self.confidence = bool(confidence)
        # (x / 255 - mean) / std as x * scale + shift, in the network's channel order.
        scale, shift = (torch.tensor(v, dtype=torch.float32)
                        for v in normalization_scale_shift(normalization.mean, normalization.std))
        swap = channel_order != normalization.channel_order
        self.swap_channels = swap
        # Set for exports with a dynamic frame size: the resize must then always be in the graph.
        self.always_resize = False
        # Set (e.g. torch.bfloat16) when the network's weights are in a reduced precision while the
        # pre-processing and the labels tail stay float32 (see forward).
        self.network_dtype: torch.dtype | None = None
        # Set for graphs that stop at the 1/8 class scores (float32 (N, C, h, w)): the labels tail then runs
        # outside, without the frame-size score tensor (``labels_tail.upsample_argmax``).
        self.small_logits_out = False
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.eval()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW at the model resolution (channels_last in memory)."""
        x = frames.permute(0, 3, 1, 2).to(self.scale.dtype)
        if self.swap_channels:
            x = x.flip(1)
        if self.always_resize or tuple(x.shape[2:]) != self.input_size:
            # Resize is linear, so resizing before normalising is exact and touches only 3 channels.
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x * self.scale + self.shift

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(frames)
        size = tuple(frames.shape[1:3])
        if self.network_dtype is None and not self.confidence and not self.small_logits_out:
            return self.model(x, output_size=size).argmax(dim=1).to(torch.uint8)
        if self.network_dtype is not None:
            # The small logits go back to float32 before the upsampling and the argmax: bf16 keeps only
            # 8 bits of mantissa, so close class scores would tie and flip labels.
            small = self.model(x.to(self.network_dtype), upsample=False).float()
        else:
            small = self.model(x, upsample=False)
        if self.small_logits_out:
            return self.model.head_class_logits(small)
        logits = self.model.upsample_logits(small, size)
        labels = logits.argmax(dim=1).to(torch.uint8)
        if not self.confidence:
            return labels
        return labels, top_class_confidence(self.model.head_class_logits(small), size, self.model.config.align_corners)


def top_class_confidence(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Small float (N, C, h, w) logits -> uint8 (N, H, W) round(255 x top softmax probability) at ``size``.

    Computed at the logits' resolution (1/8 of the network input) and upsampled bilinearly, one
    channel: the softmax then touches h*w*C values instead of H*W*C. At the frame size it cost 43 %
    end to end at 640x480 on a 2-core CPU, this way 0-4 %; how much the two differ is in
    docs/node.md (mostly along class borders, where the frame-size value dips and the upsampled one does
    not). Float32 whatever the network's precision, so no level is lost before the rounding.
    """
    if logits.dtype != torch.float32:  # fp16 pipelines; a float32 cast would cost a copy in the graph
        logits = logits.float()
    top = torch.softmax(logits, dim=1).amax(dim=1, keepdim=True)
    top = F.interpolate(top, size=size, mode="bilinear", align_corners=align_corners)
    return (top[:, 0] * 255.0).round().to(torch.uint8)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Returns a copy of ``model`` with every BatchNorm2d that directly follows a Conv2d folded into it.

    conv(x) * g / sqrt(v + eps) + (b - m * g / sqrt(v + eps)) is again a convolution, so inference
    skips one full pass over each feature map. BatchNorms that do not follow a convolution (the
    context block's pooled BN) stay. Inference only: the folded model must not be trained.
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (_, first), (bn_name, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d) and isinstance(parent, nn.Sequential):
                _fold_into(first, second)
                setattr(parent, bn_name, nn.Identity())
    return model


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    gain = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    offset = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    factor = gain / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.copy_(conv.weight * factor.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * factor + offset)
