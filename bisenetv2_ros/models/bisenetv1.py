"""BiSeNet (V1): Bilateral Segmentation Network for Real-time Semantic Segmentation (Yu et al., ECCV 2018).

One file, one class per block of the paper (Fig. 2). Section and figure numbers refer to the ECCV paper.
The output contract is BiSeNetV2's (``model.BiSeNetV2``): ``forward(x, output_size)`` returns logits
computed at 1/8 and upsampled once to the output size; in training mode with auxiliary heads it returns
``(main, [aux_1/8, aux_1/16])``. So the fused pipeline, every backend, export, evaluation and training
take either network unchanged.

Shapes: every stride-2 layer pads so that an input of size n gives ceil(n / 2); the Spatial Path and
the ResNet both reach exactly the same 1/8 size for any input, and every upsampling goes to an
explicit target size, so inputs need not be multiples of 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .bisenetv2 import OUTPUT_STRIDE, ConvBNReLU, SegmentationNetwork, SegmentHead
from .config_fields import MAX_CHANNELS, MAX_NUM_CLASSES, ConfigFields, check_choice, check_flag, check_integer

FFM_ATTENTIONS = ("paper", "conv_bn_relu", "conv_bn")
HEAD_UPSAMPLES = ("bilinear", "pixel_shuffle")


@dataclass(frozen=True)
class BiSeNetV1Config(ConfigFields):
    """Everything needed to rebuild the network; stored in every checkpoint (architecture "bisenetv1")."""

    num_classes: int = 19
    context_channels: int = 128  # width of the ARMs, the global context and the 1/8 context features
    fused_channels: int = 256  # FFM output
    head_channels: int = 256  # 3x3 conv of the output head
    aux_heads: bool = True  # the two auxiliary heads on the Context Path (Sec. 3.3); training only
    aux_head_channels: int = 64
    # FFM attention vector (Fig. 2c): "paper" = 1x1 conv, ReLU, 1x1 conv (channel reduction
    # ffm_reduction), sigmoid, as in the figure and in CoinCheung/BiSeNet until July 2021;
    # "conv_bn_relu" = one 1x1 conv + BN + ReLU, then sigmoid, as mmsegmentation builds it (its code
    # notes the difference); "conv_bn" = one 1x1 conv + BN, then sigmoid (CoinCheung/BiSeNet since
    # 2021-07-13, for TensorRT fp16, and its published "_new" weights).
    ffm_attention: str = "paper"
    ffm_reduction: int = 4
    # How the 1/8 logits reach the output size: "bilinear" interpolation, or "pixel_shuffle" (the
    # head predicts num_classes x 8 x 8 channels that are rearranged to full resolution, then resized
    # to the output size if it differs; CoinCheung/BiSeNet's BiSeNetOutput from 2020-09 to 2021-07).
    head_upsample: str = "bilinear"
    align_corners: bool = False  # of the final bilinear upsampling (CoinCheung's older code used True)

    def __post_init__(self) -> None:
        check_integer(self, "num_classes", 1, MAX_NUM_CLASSES)
        for name in ("context_channels", "fused_channels", "head_channels", "aux_head_channels"):
            check_integer(self, name, 1, MAX_CHANNELS)
        check_integer(self, "ffm_reduction", 1, MAX_CHANNELS)
        for name in ("aux_heads", "align_corners"):
            check_flag(self, name)
        check_choice(self, "ffm_attention", FFM_ATTENTIONS)
        check_choice(self, "head_upsample", HEAD_UPSAMPLES)

    @property
    def spatial_channels(self) -> int:
        # The FFM concatenates the Spatial Path and the 1/8 context features: both public
        # implementations give them the same width (128 + 128 -> 256).
        return self.context_channels

    @property
    def head_outputs(self) -> int:
        factor = OUTPUT_STRIDE * OUTPUT_STRIDE if self.head_upsample == "pixel_shuffle" else 1
        return self.num_classes * factor


class SpatialPath(nn.Module):
    """Sec. 3.1: three stride-2 conv-BN-ReLU layers keep rich spatial detail at 1/8.

    As in both public implementations, the first conv is 7x7 and a 1x1 conv-BN-ReLU sets the output width.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv3 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv_out = ConvBNReLU(64, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs plus the identity or a 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels, 3, stride=stride)
        self.conv2 = ConvBNReLU(out_channels, out_channels, 3, relu=False)
        self.downsample = (ConvBNReLU(in_channels, out_channels, 1, stride=stride, relu=False)
                           if stride != 1 or in_channels != out_channels else None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class ResNet18(nn.Module):
    """The Context Path's backbone (Sec. 3.2, Sec. 4.3: "Xception39 / Res18"): 7x7 stem, max pool,
    four stages of two basic blocks (64, 128, 256, 512); output stride 32 (D32, no dilation)."""

    widths = (64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 64, 7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, previous = [], 64
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(previous, width, stride), BasicBlock(width, width)))
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the 1/8, 1/16 and 1/32 features."""
        c3 = self.layer2(self.layer1(self.pool(self.stem(x))))
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)


class AttentionRefinementModule(nn.Module):
    """Fig. 2b: global average pooling, 1x1 conv, BN, sigmoid, multiplied onto the features.

    Both public implementations first reduce the stage to the context width with a 3x3
    conv-BN-ReLU (not in the figure); the published weights need it, so it is here.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.attention = ConvBNReLU(out_channels, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return features * torch.sigmoid(self.attention(features.mean(dim=(2, 3), keepdim=True)))


class ContextPath(nn.Module):
    """Sec. 3.2: ResNet-18, ARMs on the 1/16 and 1/32 features, the global average of the 1/32
    features as the largest receptive field ("global context"), merged top-down.

    1/32: ARM + global context, upsampled (nearest) to 1/16 and refined by a 3x3 conv;
    1/16: ARM + that, upsampled to 1/8 and refined. Returns the 1/8 and 1/16 context features.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.backbone = ResNet18()
        _, _, c4, c5 = ResNet18.widths
        self.arm16 = AttentionRefinementModule(c4, channels)
        self.arm32 = AttentionRefinementModule(c5, channels)
        self.global_context = ConvBNReLU(c5, channels, 1)
        self.refine32 = ConvBNReLU(channels, channels, 3)
        self.refine16 = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.backbone(x)
        context = self.global_context(c5.mean(dim=(2, 3), keepdim=True))  # broadcast over the 1/32 map
        up32 = self.refine32(F.interpolate(self.arm32(c5) + context, size=c4.shape[2:], mode="nearest"))
        up16 = self.refine16(F.interpolate(self.arm16(c4) + up32, size=c3.shape[2:], mode="nearest"))
        return up16, up32


class FeatureFusionModule(nn.Module):
    """Fig. 2c: concatenate both paths, conv-BN-ReLU, then a squeeze-and-excitation style channel
    re-weighting added back: out = f + f * sigmoid(attention(mean(f)))."""

    def __init__(self, in_channels: int, out_channels: int, attention: str = "paper", reduction: int = 4) -> None:
        super().__init__()
        self.fuse = ConvBNReLU(in_channels, out_channels, 1)
        if attention == "paper":
            hidden = max(1, out_channels // reduction)
            self.attention = nn.Sequential(nn.Conv2d(out_channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                           nn.Conv2d(hidden, out_channels, 1, bias=False))
        else:  # one 1x1 conv + BN, with a ReLU for "conv_bn_relu"
            self.attention = ConvBNReLU(out_channels, out_channels, 1, relu=attention == "conv_bn_relu")

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        features = self.fuse(torch.cat([spatial, context], dim=1))
        weights = torch.sigmoid(self.attention(features.mean(dim=(2, 3), keepdim=True)))
        return features + features * weights


class BiSeNetV1(SegmentationNetwork):
    """The whole network.

    ``forward(x)`` returns logits of shape (N, num_classes, H, W) at the input size (or at
    ``output_size``). In training mode with auxiliary heads it returns ``(main, [aux_8, aux_16])``:
    the heads on the Context Path's 1/8 and 1/16 features (Sec. 3.3, Eq. 2-3), all at the output
    size. ``without_aux_heads()`` removes them for inference, deployment and export.
    """

    def __init__(self, config: BiSeNetV1Config | None = None) -> None:
        super().__init__()
        self.config = config or BiSeNetV1Config()
        cfg = self.config
        self.spatial = SpatialPath(cfg.spatial_channels)
        self.context = ContextPath(cfg.context_channels)
        self.ffm = FeatureFusionModule(cfg.spatial_channels + cfg.context_channels, cfg.fused_channels,
                                       cfg.ffm_attention, cfg.ffm_reduction)
        self.head = SegmentHead(cfg.fused_channels, cfg.head_channels, cfg.head_outputs)
        if cfg.aux_heads:
            self.aux_heads = nn.ModuleList(
                SegmentHead(cfg.context_channels, cfg.aux_head_channels, cfg.num_classes) for _ in range(2))
        else:
            self.aux_heads = None
        self.reset_parameters()  # from scratch, as mmsegmentation's 74.44 mIoU R-18 run

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main head output at 1/8 and the two context features for the auxiliary heads."""
        context8, context16 = self.context(x)
        return self.head(self.ffm(self.spatial(x), context8)), [context8, context16]

    def forward(self, x: torch.Tensor, output_size: tuple[int, int] | None = None, upsample: bool = True):
        """upsample=False: the head's output as it is (see BiSeNetV2.forward)."""
        size = tuple(output_size) if output_size is not None else tuple(x.shape[2:])
        logits, aux_features = self.forward_logits(x)
        if not upsample:
            return logits
        return self._outputs(self.upsample_logits(logits, size), aux_features, size)

