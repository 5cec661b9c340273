"""Importers of public BiSeNetV2 checkpoints: mmsegmentation's and CoinCheung/BiSeNet's key maps.

* ``mmsegmentation``: ``{meta, state_dict}`` files; mmcv ConvModules (``.conv``/``.bn``), an FCN decode
  head, bilinear upsampling in the BGA layer, ImageNet mean/std on RGB.
* ``coincheung``: bare state dicts; their ConvBNReLU and bare ``nn.Sequential`` units, their own
  Cityscapes mean/std. CoinCheung/BiSeNet ``lib/models/bisenetv2.py`` changed its BGA upsampling and
  its ``SegmentHead`` output twice; the classifier's key says which layout a file has:

  ========================  =====================  ====================================  ==================
  in the repository         classifier key         BGA upsampling / head output          weights
  ========================  =====================  ====================================  ==================
  2020-05-21 .. 2020-09-29  ``head.conv_out``      bilinear ``align_corners=True`` to    Google Drive
                                                   the size / the same to the input      (74.39)
  2020-09-29 .. 2021-07-07  ``head.conv_out.0``    nearest x4 / classes x 8 x 8 outputs  Google Drive
                            (classes x 64)         and ``PixelShuffle(8)``               (74.12)
  2021-07-07 .. today       ``head.conv_out.1``    nearest x4 / ``nn.Upsample`` x8,      ``model_final_v2_*``
                            (``.0`` = Identity)    bilinear ``align_corners=False``      (city, coco, ade20k)
  ========================  =====================  ====================================  ==================

Both use a depthwise conv + BN + ReLU in the GE layers' expansion (``ge_depthwise_relu``).
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import torch

from ..classes import CITYSCAPES
from ..models.bisenetv2 import OUTPUT_STRIDE, BiSeNetV2Config
from .checkpoint import CITYSCAPES_NORMALIZATION, IMAGENET_NORMALIZATION, CheckpointError, CheckpointInfo
from .key_maps import Family, UnitMap, conv_bn


def _ge_units(config: BiSeNetV2Config) -> Iterator[tuple[str, int, int]]:
    """(our stage, layer index, stride) of every GE layer."""
    for stage, extra in (("s3", 1), ("s4", 1), ("s5", 3)):
        yield stage, 0, 2
        for j in range(1, config.repeats(extra) + 1):
            yield stage, j, 1


def _detail_units(config: BiSeNetV2Config) -> Iterator[tuple[int, int]]:
    for i, extra in ((1, 1), (2, 2), (3, 2)):
        for j in range(config.repeats(extra) + 1):
            yield i, j


def mmseg_units(config: BiSeNetV2Config) -> UnitMap:
    units: UnitMap = []
    for i, j in _detail_units(config):
        units.append((f"detail.s{i}.{j}", *conv_bn(f"backbone.detail.detail_branch.{i - 1}.{j}")))
    stem = "backbone.semantic.stage1"
    units += [("semantic.stem.conv", *conv_bn(f"{stem}.conv_first")),
              ("semantic.stem.conv_path.0", *conv_bn(f"{stem}.convs.0")),
              ("semantic.stem.conv_path.1", *conv_bn(f"{stem}.convs.1")),
              ("semantic.stem.fuse", *conv_bn(f"{stem}.fuse_last"))]
    stage_names = {"s3": "stage2", "s4": "stage3", "s5": "stage4"}
    for stage, j, stride in _ge_units(config):
        ours, theirs = f"semantic.{stage}.{j}", f"backbone.semantic.{stage_names[stage]}.{j}"
        units.append((f"{ours}.gather", *conv_bn(f"{theirs}.conv1")))
        if stride == 2:
            units += [(f"{ours}.expand.0", *conv_bn(f"{theirs}.dwconv.0")),
                      (f"{ours}.expand.1", *conv_bn(f"{theirs}.dwconv.1")),
                      (f"{ours}.shortcut.0", *conv_bn(f"{theirs}.shortcut.0.depthwise_conv")),
                      (f"{ours}.shortcut.1", *conv_bn(f"{theirs}.shortcut.0.pointwise_conv"))]
        else:
            units.append((f"{ours}.expand", *conv_bn(f"{theirs}.dwconv.0")))
        units.append((f"{ours}.project", *conv_bn(f"{theirs}.conv2.0")))
    ce = "backbone.semantic.stage4_CEBlock"
    units += [("semantic.context.pool_bn", "", f"{ce}.gap.1"),
              ("semantic.context.pool_conv", *conv_bn(f"{ce}.conv_gap")),
              ("semantic.context.out_conv", *conv_bn(f"{ce}.conv_last")),
              ("bga.detail_high.0", *conv_bn("backbone.bga.detail_dwconv.0.depthwise_conv")),
              ("bga.detail_high.1", "backbone.bga.detail_dwconv.0.pointwise_conv.conv", None),
              ("bga.detail_low.0", *conv_bn("backbone.bga.detail_down.0")),
              ("bga.semantic_high_gate", *conv_bn("backbone.bga.semantic_conv.0")),
              ("bga.semantic_low_gate.0", *conv_bn("backbone.bga.semantic_dwconv.0.depthwise_conv")),
              ("bga.semantic_low_gate.1", "backbone.bga.semantic_dwconv.0.pointwise_conv.conv", None),
              ("bga.fuse", *conv_bn("backbone.bga.conv")),
              ("head.conv", *conv_bn("decode_head.convs.0")),
              ("head.classifier", "decode_head.conv_seg", None)]
    return units


def coincheung_units(config: BiSeNetV2Config) -> UnitMap:
    seq = lambda p, i: (f"{p}.{i}", f"{p}.{i + 1}")  # a bare nn.Sequential(conv, bn, ...)  # noqa: E731
    units: UnitMap = []
    for i, j in _detail_units(config):
        units.append((f"detail.s{i}.{j}", *conv_bn(f"detail.S{i}.{j}")))
    units += [("semantic.stem.conv", *conv_bn("segment.S1S2.conv")),
              ("semantic.stem.conv_path.0", *conv_bn("segment.S1S2.left.0")),
              ("semantic.stem.conv_path.1", *conv_bn("segment.S1S2.left.1")),
              ("semantic.stem.fuse", *conv_bn("segment.S1S2.fuse"))]
    stage_names = {"s3": "S3", "s4": "S4", "s5": "S5_4"}
    for stage, j, stride in _ge_units(config):
        ours, theirs = f"semantic.{stage}.{j}", f"segment.{stage_names[stage]}.{j}"
        units.append((f"{ours}.gather", *conv_bn(f"{theirs}.conv1")))
        if stride == 2:
            units += [(f"{ours}.expand.0", *seq(f"{theirs}.dwconv1", 0)),
                      (f"{ours}.expand.1", *seq(f"{theirs}.dwconv2", 0)),
                      (f"{ours}.shortcut.0", *seq(f"{theirs}.shortcut", 0)),
                      (f"{ours}.shortcut.1", *seq(f"{theirs}.shortcut", 2))]
        else:
            units.append((f"{ours}.expand", *seq(f"{theirs}.dwconv", 0)))
        units.append((f"{ours}.project", *seq(f"{theirs}.conv2", 0)))
    units += [("semantic.context.pool_bn", "", "segment.S5_5.bn"),
              ("semantic.context.pool_conv", *conv_bn("segment.S5_5.conv_gap")),
              ("semantic.context.out_conv", *conv_bn("segment.S5_5.conv_last")),
              ("bga.detail_high.0", *seq("bga.left1", 0)),
              ("bga.detail_high.1", "bga.left1.2", None),
              ("bga.detail_low.0", *seq("bga.left2", 0)),
              ("bga.semantic_high_gate", *seq("bga.right1", 0)),
              ("bga.semantic_low_gate.0", *seq("bga.right2", 0)),
              ("bga.semantic_low_gate.1", "bga.right2.2", None),
              ("bga.fuse", *seq("bga.conv", 0)),
              ("head.conv", *conv_bn("head.conv")),
              ("head.classifier", _coincheung_classifier(config), None)]
    return units


# CoinCheung's classifier key per layout (module doc), newest first: (key, BGA upsampling, head upsample)
_COINCHEUNG_HEADS = (("head.conv_out.1", "nearest", "bilinear"), ("head.conv_out.0", "nearest", "pixel_shuffle"),
                     ("head.conv_out", "bilinear", "bilinear"))


def _coincheung_classifier(config: BiSeNetV2Config) -> str:
    if config.align_corners:
        return "head.conv_out"
    return "head.conv_out.0" if config.head_upsample == "pixel_shuffle" else "head.conv_out.1"


def _coincheung_config(state: Mapping[str, torch.Tensor]) -> BiSeNetV2Config:
    for key, upsample_mode, head_upsample in _COINCHEUNG_HEADS:
        if f"{key}.weight" in state:
            outputs = int(state[f"{key}.weight"].shape[0])
            factor = OUTPUT_STRIDE * OUTPUT_STRIDE if head_upsample == "pixel_shuffle" else 1
            if outputs % factor:
                raise CheckpointError(f"not a coincheung BiSeNetV2 state dict: its PixelShuffle head {key} has "
                                      f"{outputs} outputs, not a multiple of {factor}")
            return BiSeNetV2Config(
                num_classes=outputs // factor, head_channels=int(state["head.conv.conv.weight"].shape[0]),
                aux_heads=False, upsample_mode=upsample_mode, ge_depthwise_relu=True,
                head_upsample=head_upsample, align_corners=key == "head.conv_out")
    raise CheckpointError("not a coincheung BiSeNetV2 state dict: no classifier head.conv_out.1 (2021-07 and "
                          "later), head.conv_out.0 (PixelShuffle, 2020-09) or head.conv_out (2020-05)")


def _family(name: str, classifier_key: str, head_conv_key: str, upsample_mode: str, units, is_aux_key,
            optional, normalization) -> Family:
    """A BiSeNetV2 family: our model sized from its classifier and head conv, Cityscapes-trained."""
    def config(state: Mapping[str, torch.Tensor]) -> BiSeNetV2Config:
        return BiSeNetV2Config(num_classes=int(state[classifier_key].shape[0]),
                               head_channels=int(state[head_conv_key].shape[0]), aux_heads=False,
                               upsample_mode=upsample_mode, ge_depthwise_relu=True)
    return Family(name, "BiSeNetV2", (classifier_key, head_conv_key), config, units, is_aux_key, optional,
                  CheckpointInfo(CITYSCAPES, normalization, (1024, 2048), "cityscapes"))


def _bn_counter_or_bias(key: str) -> bool:
    # A BN counter older PyTorch versions did not save, or a conv bias CoinCheung's BGA does not have.
    return key.endswith("num_batches_tracked") or key.endswith(("left1.2.bias", "right2.2.bias"))


V2_FAMILIES: dict[str, Family] = {family.name: family for family in (
    _family("mmsegmentation", "decode_head.conv_seg.weight", "decode_head.convs.0.conv.weight", "bilinear",
            mmseg_units, is_aux_key=lambda k: k.startswith("auxiliary_head."),
            optional=lambda k: k.endswith("num_batches_tracked"), normalization=IMAGENET_NORMALIZATION),
    # CoinCheung's training code normalises with its own Cityscapes statistics.
    Family("coincheung", "BiSeNetV2", ("head.conv.conv.weight",), _coincheung_config, coincheung_units,
           is_aux_key=lambda k: re.match(r"aux(2|3|4|5_4)\.", k) is not None, optional=_bn_counter_or_bias,
           default_info=CheckpointInfo(CITYSCAPES, CITYSCAPES_NORMALIZATION, (1024, 2048), "cityscapes")),
)}
