"""BiSeNetV2: Bilateral Network with Guided Aggregation (Yu et al., IJCV 2021).

One file, one class per block of the paper. Table and figure numbers refer to the IJCV paper.

Shapes: every stride-2 layer pads so that an input of size n gives ceil(n / 2); both branches
therefore reach exactly the same 1/8 and 1/32 sizes for any input, and every upsampling goes to an
explicit target size, so inputs need not be multiples of 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config_fields import (
    MAX_CHANNELS,
    MAX_NUM_CLASSES,
    ConfigFields,
    check_choice,
    check_flag,
    check_integer,
    check_number,
)

UPSAMPLE_MODES = ("bilinear", "nearest")
HEAD_UPSAMPLES = ("bilinear", "pixel_shuffle")
OUTPUT_STRIDE = 8  # of the main head's logits, in both networks


@dataclass(frozen=True)
class BiSeNetV2Config(ConfigFields):
    """Everything needed to rebuild the network; stored in every checkpoint."""

    num_classes: int = 19
    width_multiplier: float = 1.0  # alpha (Table 5): scales the channels of both branches
    depth_multiplier: float = 1.0  # d (Table 5): scales the stride-1 repeats of every stage
    semantic_ratio: float = 0.25  # lambda (Sec. 3.2, Table 2): Semantic / Detail channel ratio
    expansion_ratio: int = 6  # e of the Gather-and-Expansion layer (Fig. 5)
    head_channels: int = 1024  # C_t of the segmentation head (Fig. 7)
    aux_heads: bool = True  # booster heads (Sec. 4.4, Table 4); training only
    aux_head_channels: int = 128  # C_t of each booster head
    upsample_mode: str = "bilinear"  # BGA upsampling of the semantic features (Fig. 6)
    # ReLU after the last depth-wise conv of each GE layer: not in Fig. 5, but both public
    # implementations (and their Cityscapes weights) have it, so the importers switch it on.
    ge_depthwise_relu: bool = False
    # How the head's 1/8 output reaches the output size: "bilinear", or "pixel_shuffle" (the head
    # predicts num_classes x 8 x 8 channels rearranged to full resolution; CoinCheung/BiSeNet's
    # SegmentHead from 2020-09 to 2021-07). align_corners applies to every bilinear resize of the
    # network (BGA and output); CoinCheung's code before 2020-09 used True.
    head_upsample: str = "bilinear"
    align_corners: bool = False

    def __post_init__(self) -> None:
        check_integer(self, "num_classes", 1, MAX_NUM_CLASSES)
        # Upper bounds at twice BiSeNetV2-L's alpha 2.0 / d 3.0 (Table 5); lambda <= 1 keeps the Semantic
        # Branch the narrow one (Sec. 3.2); e is 6 in the paper, 16 leaves room for studies.
        check_number(self, "width_multiplier", 1 / 16, 4.0)
        check_number(self, "depth_multiplier", 1 / 16, 6.0)
        check_number(self, "semantic_ratio", 1 / 64, 1.0)
        check_integer(self, "expansion_ratio", 1, 16)
        check_integer(self, "head_channels", 1, MAX_CHANNELS)
        check_integer(self, "aux_head_channels", 1, MAX_CHANNELS)
        for name in ("aux_heads", "ge_depthwise_relu", "align_corners"):
            check_flag(self, name)
        check_choice(self, "upsample_mode", UPSAMPLE_MODES)
        check_choice(self, "head_upsample", HEAD_UPSAMPLES)

    @property
    def head_outputs(self) -> int:
        return self.num_classes * (OUTPUT_STRIDE * OUTPUT_STRIDE if self.head_upsample == "pixel_shuffle" else 1)

    @classmethod
    def large(cls, **overrides: Any) -> "BiSeNetV2Config":
        """BiSeNetV2-L of Table 5 / Table 7: alpha = 2.0, d = 3.0."""
        return cls(**{"width_multiplier": 2.0, "depth_multiplier": 3.0, **overrides})

    # Derived widths. Detail Branch (Table 1): 64, 64, 128. Semantic Branch: the stem has lambda
    # times the Detail S1 width (16), S3 lambda times Detail S3 (32), S4 and S5 double each stage
    # (64, 128). With lambda = 1/4 the S5 width equals the Detail output, as in the paper.
    @property
    def detail_channels(self) -> tuple[int, int, int]:
        return tuple(_scaled(c, self.width_multiplier) for c in (64, 64, 128))  # type: ignore[return-value]

    @property
    def semantic_channels(self) -> tuple[int, int, int, int]:
        c1, _, c3 = self.detail_channels
        s3 = max(1, round(c3 * self.semantic_ratio))
        return (max(1, round(c1 * self.semantic_ratio)), s3, 2 * s3, 4 * s3)

    @property
    def fused_channels(self) -> int:
        return self.detail_channels[-1]

    def repeats(self, stride1_layers: int) -> int:
        """Stride-1 layers of a stage after the depth multiplier.

        The paper (Table 5) only says that d multiplies depth. We multiply the stride-1 repeats
        of every stage of both branches (Detail S1..S3: 1, 2, 2; Semantic S3..S5: 1, 1, 3) and keep
        the one stride-2 layer per stage, so the output stride never changes with d.
        """
        return max(1, math.ceil(stride1_layers * self.depth_multiplier - 1e-9))


def _scaled(channels: int, multiplier: float) -> int:
    return max(1, int(round(channels * multiplier)))


class ConvBNReLU(nn.Sequential):
    """k x k convolution (no bias), batch norm, optional ReLU: the building block of every branch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DetailBranch(nn.Module):
    """Wide, shallow, VGG-like branch that keeps spatial detail at 1/8 (Table 1, no residuals)."""

    def __init__(self, config: BiSeNetV2Config) -> None:
        super().__init__()
        c1, c2, c3 = config.detail_channels
        self.s1 = self._stage(3, c1, config.repeats(1))
        self.s2 = self._stage(c1, c2, config.repeats(2))
        self.s3 = self._stage(c2, c3, config.repeats(2))

    @staticmethod
    def _stage(in_channels: int, out_channels: int, stride1_layers: int) -> nn.Sequential:
        layers = [ConvBNReLU(in_channels, out_channels, 3, stride=2)]
        layers += [ConvBNReLU(out_channels, out_channels, 3) for _ in range(stride1_layers)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """Fig. 4a: fast 4x downsampling with a conv path and a max-pool path, concatenated and fused."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, out_channels, 3, stride=2)
        self.conv_path = nn.Sequential(
            ConvBNReLU(out_channels, out_channels // 2 or 1, 1),
            ConvBNReLU(out_channels // 2 or 1, out_channels, 3, stride=2),
        )
        self.pool_path = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.conv_path(x), self.pool_path(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-Expansion layer (Fig. 5b stride 1, Fig. 5c stride 2).

    3x3 conv gathers local features, depth-wise 3x3 conv(s) expand them e times, a 1x1 conv projects
    back; the residual shortcut is the identity (stride 1) or a 3x3 depth-wise separable conv (stride 2).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion_ratio: int,
                 depthwise_relu: bool = False) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"GatherExpansion stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 GatherExpansion layer keeps its width")
        mid = in_channels * expansion_ratio
        self.gather = ConvBNReLU(in_channels, in_channels, 3)
        if stride == 1:
            self.expand = ConvBNReLU(in_channels, mid, 3, groups=in_channels, relu=depthwise_relu)
            self.shortcut = None
        else:
            self.expand = nn.Sequential(
                ConvBNReLU(in_channels, mid, 3, stride=2, groups=in_channels, relu=False),
                ConvBNReLU(mid, mid, 3, groups=mid, relu=depthwise_relu),
            )
            self.shortcut = nn.Sequential(
                ConvBNReLU(in_channels, in_channels, 3, stride=2, groups=in_channels, relu=False),
                ConvBNReLU(in_channels, out_channels, 1, relu=False),
            )
        self.project = ConvBNReLU(mid, out_channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.project(self.expand(self.gather(x))) + identity)


class ContextEmbedding(nn.Module):
    """Fig. 4b: global average pooling, BN, 1x1 conv, broadcast residual, then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool_bn = nn.BatchNorm2d(in_channels)
        self.pool_conv = ConvBNReLU(in_channels, in_channels, 1)
        self.out_conv = ConvBNReLU(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.pool_conv(self.pool_bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out_conv(x + context)


class SemanticBranch(nn.Module):
    """Narrow, deep branch for context: stem (1/4), GE stages S3 (1/8), S4 (1/16), S5 (1/32), CE."""

    def __init__(self, config: BiSeNetV2Config) -> None:
        super().__init__()
        stem, c3, c4, c5 = config.semantic_channels
        e, relu = config.expansion_ratio, config.ge_depthwise_relu
        self.stem = StemBlock(stem)

        def stage(cin: int, cout: int, stride1_layers: int) -> nn.Sequential:
            layers = [GatherExpansion(cin, cout, 2, e, relu)]
            layers += [GatherExpansion(cout, cout, 1, e, relu) for _ in range(config.repeats(stride1_layers))]
            return nn.Sequential(*layers)

        self.s3 = stage(stem, c3, 1)
        self.s4 = stage(c3, c4, 1)
        self.s5 = stage(c4, c5, 3)
        self.context = ContextEmbedding(c5, config.fused_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns [stem, S3, S4, S5 before CE, CE output]: the first four feed the booster heads."""
        stem = self.stem(x)
        s3 = self.s3(stem)
        s4 = self.s4(s3)
        s5 = self.s5(s4)
        return [stem, s3, s4, s5, self.context(s5)]


class DepthwiseSeparable(nn.Sequential):
    """3x3 depth-wise conv + BN, then a plain 1x1 conv (the BGA's guidance paths, Fig. 6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            ConvBNReLU(channels, channels, 3, groups=channels, relu=False),
            nn.Conv2d(channels, channels, 1, bias=True),
        )


class BilateralGuidedAggregation(nn.Module):
    """Fig. 6: the Semantic Branch gates the Detail Branch through a sigmoid at both resolutions.

    High path (1/8): detail features x sigmoid(upsampled semantic conv). Low path (1/32): downsampled
    detail features x sigmoid(semantic depth-wise separable conv), then upsampled. Summed and fused.
    """

    def __init__(self, channels: int, upsample_mode: str = "bilinear", align_corners: bool = False) -> None:
        super().__init__()
        self.upsample_mode = upsample_mode
        self.align_corners = align_corners
        self.detail_high = DepthwiseSeparable(channels)
        self.detail_low = nn.Sequential(
            ConvBNReLU(channels, channels, 3, stride=2, relu=False),
            nn.AvgPool2d(3, stride=2, padding=1),
        )
        self.semantic_high_gate = ConvBNReLU(channels, channels, 3, relu=False)
        self.semantic_low_gate = DepthwiseSeparable(channels)
        # Fig. 6 ends in a 3x3 conv + BN; both public implementations add a ReLU, and so do we.
        self.fuse = ConvBNReLU(channels, channels, 3)

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample_mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[2:]
        high = self.detail_high(detail) * torch.sigmoid(self._up(self.semantic_high_gate(semantic), size))
        low = self.detail_low(detail) * torch.sigmoid(self.semantic_low_gate(semantic))
        return self.fuse(high + self._up(low, size))


class SegmentHead(nn.Module):
    """Fig. 7: 3x3 conv to C_t channels, dropout, 1x1 conv to classes; logits at the feature size."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class SegmentationNetwork(nn.Module):
    """What BiSeNetV2 and BiSeNetV1 (models/bisenetv1.py) share around their own layers: from-scratch
    initialisation (BiSeNetV2 needs no pretrained backbone, Sec. 5), removing the training-only heads,
    and the training-mode output ``(main, [auxiliary logits])``."""

    config: Any  # the network's config dataclass
    aux_heads: nn.ModuleList | None

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (fan-out, zero bias) and unit batch norms, for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def without_aux_heads(self):
        """Drops the training-only heads in place (and from the config); returns self."""
        self.aux_heads = None
        self.config = self.config.replace(aux_heads=False)
        return self

    def upsample_logits(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The head's 1/8 output -> class logits at ``size``: pixel shuffle if the head has one, then
        (logits, not labels) one bilinear resize straight to the output size."""
        return F.interpolate(self.head_class_logits(logits), size=size, mode="bilinear",
                             align_corners=self.config.align_corners)

    def head_class_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's 1/8 output -> class logits at the head's resolution (a pixel-shuffle head: 1/1)."""
        if self.config.head_upsample == "pixel_shuffle":
            logits = F.pixel_shuffle(logits, OUTPUT_STRIDE)
        return logits

    def _outputs(self, main: torch.Tensor, aux_features: list[torch.Tensor], size: tuple[int, int]):
        """``main`` alone, or in training mode with heads ``(main, [each head's logits at size])``."""
        if not (self.training and self.aux_heads is not None):
            return main
        return main, [F.interpolate(head(feature), size=size, mode="bilinear", align_corners=False)
                      for head, feature in zip(self.aux_heads, aux_features)]


class BiSeNetV2(SegmentationNetwork):
    """The whole network.

    ``forward(x)`` returns logits of shape (N, num_classes, H, W) at the input size (or at
    ``output_size``). In training mode with booster heads it returns ``(main, [aux_stem, aux_s3,
    aux_s4, aux_s5])``, all at the output size. The booster heads exist only for training:
    ``without_aux_heads()`` removes them for inference, deployment and export.
    """

    def __init__(self, config: BiSeNetV2Config | None = None) -> None:
        super().__init__()
        self.config = config or BiSeNetV2Config()
        cfg = self.config
        self.detail = DetailBranch(cfg)
        self.semantic = SemanticBranch(cfg)
        self.bga = BilateralGuidedAggregation(cfg.fused_channels, cfg.upsample_mode, cfg.align_corners)
        self.head = SegmentHead(cfg.fused_channels, cfg.head_channels, cfg.head_outputs)
        if cfg.aux_heads:
            stem, c3, c4, c5 = cfg.semantic_channels
            self.aux_heads = nn.ModuleList(SegmentHead(c, cfg.aux_head_channels, cfg.num_classes)
                                           for c in (stem, c3, c4, c5))
        else:
            self.aux_heads = None
        self.reset_parameters()

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits at 1/8 and the four backbone features for the booster heads."""
        detail = self.detail(x)
        *aux_features, semantic = self.semantic(x)
        return self.head(self.bga(detail, semantic)), aux_features

    def forward(self, x: torch.Tensor, output_size: tuple[int, int] | None = None, upsample: bool = True):
        """upsample=False: the head's 1/8 output as it is (``upsample_logits`` takes it on), for callers
        that also use the small logits (the fused pipeline's confidence); a module call keeps the
        network's export scope (/model/...), which int8 quantisation selects by."""
        size = tuple(output_size) if output_size is not None else tuple(x.shape[2:])
        logits, aux_features = self.forward_logits(x)
        if not upsample:
            return logits
        return self._outputs(self.upsample_logits(logits, size), aux_features, size)

