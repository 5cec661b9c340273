"""Importers of public BiSeNetV1 (ResNet-18) checkpoints: mmsegmentation's and CoinCheung/BiSeNet's key maps.

Two layouts, read off the publishers' model code:

* ``mmsegmentation-bisenetv1``: open-mmlab/mmsegmentation ``mmseg/models/backbones/bisenetv1.py`` with
  ``configs/_base_/models/bisenetv1_r18-d32.py``: backbone ``type='ResNet', depth=18`` (the plain 7x7
  stem, keys ``conv1``/``bn1``; the ``in1k-pre`` configs only *initialise* it from ``resnet18_v1c``,
  whose deep-stem keys do not fit and so are not in the saved model), ``SpatialPath`` ``layer1..4``,
  ``ContextPath`` ``arm16/arm32`` (``conv_layer``, ``atten_conv_layer.1``), ``gap_conv.1``,
  ``conv_head32/16``, ``ffm.conv1`` and ``ffm.conv_atten.0`` (one 1x1 ConvModule with BN and ReLU),
  an ``FCNHead`` decode head (``convs.0``, ``conv_seg``) and two ``FCNHead`` auxiliary heads.
  The ResNet names (stem ``conv1`` 7x7/2 + ``norm1`` with postfix 1, max pool; blocks
  ``layerN.M.conv1/bn1/conv2/bn2``, ``downsample.0/.1``) are read off mmseg's ``resnet.py``. That a
  (Sync)BN norm is named with the prefix ``bn`` (so ``bn1``, ``.bn``) is mmcv's ``build_norm_layer``
  convention, recalled rather than re-read here: a file that differs fails the strict import by name.
* ``coincheung-bisenetv1``: CoinCheung/BiSeNet ``lib/models/bisenetv1.py`` and ``lib/models/resnet.py``:
  ``cp.resnet.*`` (torchvision-style ResNet-18), ``cp.arm16/arm32`` (``conv``, ``conv_atten``,
  ``bn_atten``), ``cp.conv_avg``, ``cp.conv_head32/16``, ``sp.conv1..3/conv_out``, ``ffm.convblk``, the
  FFM attention, output head ``conv_out`` (3x3 ``conv`` + 1x1 ``conv_out``), auxiliary heads
  ``conv_out16/conv_out32``. The file's git history has four layouts of the FFM attention and the
  output head, all recognised from the tensors:

  ===========================  ===============================  =============================  ===========
  in the repository            FFM attention                    output head ``conv_out``       weights
  ===========================  ===============================  =============================  ===========
  2019-11 .. 2020-09-29        ``ffm.conv1``/``conv2`` (1x1,    classes, no bias; bilinear     Google Drive
                               ReLU, 1x1: the paper's)          ``align_corners=True``         (74.85)
  2020-09-29 .. 2021-07-07     same                             classes x 8 x 8, bias;         Google Drive
                                                                ``PixelShuffle(8)``            (75.55)
  2021-07-07 .. 2021-07-13     same                             classes, bias; bilinear x8     ``model_final_v1_city.pth``,
                                                                ``align_corners=False``        ``_coco.pth``
  2021-07-13 .. today          ``ffm.conv`` + ``ffm.bn`` (1x1,  same                           ``..._city_new.pth``,
                               BN; "for TensorRT fp16")                                        ``_coco_new``, ``_ade20k``
  ===========================  ===============================  =============================  ===========

  (The first row's file was ``fp16/model.py`` until it moved to ``lib/models`` in 2020-08.) Its
  predecessor, the root ``model.py`` of 2018-11 .. 2019 (weights on Baidu Pan), has the same key names
  but InPlaceABNSync batch norms, each followed by a leaky ReLU (slope 0.01) that model_v1 does not
  build; such a file has no ``num_batches_tracked`` tensors (InPlaceABN keeps none) and is refused by
  name.

  Decided by: ``ffm.conv`` -> today's; else no head bias -> the first; else the PixelShuffle head when
  the auxiliary heads say so (``conv_out32`` has 4x the outputs of ``conv_out16``: factor 16 against
  8) or, without them, when the output count is a multiple of 64; else the 2021-07-07 one. The
  Context Path upsamples by a fixed factor 2 since 2020-09 (nearest to the next size before); ours
  goes to the next feature's size: identical for inputs that are multiples of 32, and ours also runs
  at other sizes.

Auxiliary heads are dropped by name; every other foreign tensor must be used exactly once.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..classes import CITYSCAPES
from ..models.bisenetv1 import OUTPUT_STRIDE, BiSeNetV1Config
from .checkpoint import CITYSCAPES_NORMALIZATION, IMAGENET_NORMALIZATION, CheckpointError, CheckpointInfo
from .key_maps import Family, UnitMap, conv_bn

MMSEG_V1 = "mmsegmentation-bisenetv1"
COINCHEUNG_V1 = "coincheung-bisenetv1"


def _resnet_units(ours: str, theirs: str) -> UnitMap:
    """Our ResNet-18 (ConvBNReLU units) against a torchvision-named one (conv1/bn1, layerN.M.*)."""
    units: UnitMap = [(f"{ours}.stem", f"{theirs}.conv1", f"{theirs}.bn1")]
    for stage in range(1, 5):
        for block in range(2):
            o, t = f"{ours}.layer{stage}.{block}", f"{theirs}.layer{stage}.{block}"
            units += [(f"{o}.conv1", f"{t}.conv1", f"{t}.bn1"), (f"{o}.conv2", f"{t}.conv2", f"{t}.bn2")]
            if stage > 1 and block == 0:
                units.append((f"{o}.downsample", f"{t}.downsample.0", f"{t}.downsample.1"))
    return units


def _mmseg_units(config: BiSeNetV1Config) -> UnitMap:
    cp = "backbone.context_path"
    units = [(f"spatial.{ours}", *conv_bn(f"backbone.spatial_path.layer{i}"))
             for i, ours in enumerate(("conv1", "conv2", "conv3", "conv_out"), start=1)]
    units += _resnet_units("context.backbone", f"{cp}.backbone")
    for arm in ("arm16", "arm32"):
        units += [(f"context.{arm}.conv", *conv_bn(f"{cp}.{arm}.conv_layer")),
                  (f"context.{arm}.attention", *conv_bn(f"{cp}.{arm}.atten_conv_layer.1"))]
    units += [("context.global_context", *conv_bn(f"{cp}.gap_conv.1")),
              ("context.refine32", *conv_bn(f"{cp}.conv_head32")),
              ("context.refine16", *conv_bn(f"{cp}.conv_head16")),
              ("ffm.fuse", *conv_bn("backbone.ffm.conv1")),
              ("ffm.attention", *conv_bn("backbone.ffm.conv_atten.0")),
              ("head.conv", *conv_bn("decode_head.convs.0")),
              ("head.classifier", "decode_head.conv_seg", None)]
    return units


def _coincheung_units(config: BiSeNetV1Config) -> UnitMap:
    units = [(f"spatial.{name}", *conv_bn(f"sp.{name}")) for name in ("conv1", "conv2", "conv3", "conv_out")]
    units += _resnet_units("context.backbone", "cp.resnet")
    for arm in ("arm16", "arm32"):
        units += [(f"context.{arm}.conv", *conv_bn(f"cp.{arm}.conv")),
                  (f"context.{arm}.attention", f"cp.{arm}.conv_atten", f"cp.{arm}.bn_atten")]
    units += [("context.global_context", *conv_bn("cp.conv_avg")),
              ("context.refine32", *conv_bn("cp.conv_head32")),
              ("context.refine16", *conv_bn("cp.conv_head16")),
              ("ffm.fuse", *conv_bn("ffm.convblk"))]
    if config.ffm_attention == "conv_bn":
        units.append(("ffm.attention", "ffm.conv", "ffm.bn"))
    else:
        units += [("ffm.attention.0", "ffm.conv1", None), ("ffm.attention.2", "ffm.conv2", None)]
    units += [("head.conv", *conv_bn("conv_out.conv")),
              ("head.classifier", "conv_out.conv_out", None)]
    return units


def _mmseg_config(state: Mapping[str, torch.Tensor]) -> BiSeNetV1Config:
    return BiSeNetV1Config(
        num_classes=int(state["decode_head.conv_seg.weight"].shape[0]),
        context_channels=int(state["backbone.context_path.arm16.conv_layer.conv.weight"].shape[0]),
        fused_channels=int(state["backbone.ffm.conv1.conv.weight"].shape[0]),
        head_channels=int(state["decode_head.convs.0.conv.weight"].shape[0]),
        aux_heads=False, ffm_attention="conv_bn_relu", head_upsample="bilinear", align_corners=False)


def _coincheung_head_upsample(state: Mapping[str, torch.Tensor]) -> str:
    """"pixel_shuffle" or "bilinear" for a head with a bias and the paper's FFM (see the module doc)."""
    outputs = int(state["conv_out.conv_out.weight"].shape[0])
    factor = OUTPUT_STRIDE * OUTPUT_STRIDE
    if "conv_out16.conv_out.weight" in state and "conv_out32.conv_out.weight" in state:
        out16, out32 = (int(state[f"{k}.conv_out.weight"].shape[0]) for k in ("conv_out16", "conv_out32"))
        if out32 == out16 * 4:  # PixelShuffle(16) against PixelShuffle(8)
            if outputs % factor:
                raise CheckpointError(f"not a {COINCHEUNG_V1} state dict: its PixelShuffle head has {outputs} "
                                      f"outputs, not a multiple of {factor}")
            return "pixel_shuffle"
        if out32 == out16 == outputs:
            return "bilinear"
        raise CheckpointError(f"not a {COINCHEUNG_V1} state dict: head outputs {outputs}, conv_out16 {out16}, "
                              f"conv_out32 {out32} fit no published layout")
    return "pixel_shuffle" if outputs % factor == 0 else "bilinear"


def _coincheung_config(state: Mapping[str, torch.Tensor]) -> BiSeNetV1Config:
    """Which of the four published layouts (module doc), from the FFM keys and the head's bias."""
    has_bias = "conv_out.conv_out.bias" in state
    if "ffm.conv.weight" in state:  # 2021-07-13 .. today
        if not has_bias:
            raise CheckpointError(f"not a {COINCHEUNG_V1} state dict: its FFM has ffm.conv/ffm.bn (2021-07 "
                                  f"and later) but the head conv_out.conv_out has no bias, which those always have")
        ffm_attention, head_upsample, align_corners = "conv_bn", "bilinear", False
    elif "ffm.conv1.weight" in state:
        if not has_bias and not any(key.endswith("num_batches_tracked") for key in state):
            raise CheckpointError(
                f"not a {COINCHEUNG_V1} state dict this package builds: no batch norm has num_batches_tracked "
                f"and the head has no bias, the signature of CoinCheung's 2018-2019 model.py (InPlaceABNSync, "
                f"a leaky ReLU after every batch norm); use a file from 2019-11 or later")
        ffm_attention = "paper"
        head_upsample = _coincheung_head_upsample(state) if has_bias else "bilinear"
        align_corners = not has_bias  # only the 2020 head resized with align_corners=True
    else:
        raise CheckpointError(f"not a {COINCHEUNG_V1} state dict: the FFM attention has neither ffm.conv "
                              f"(2021-07 and later) nor ffm.conv1/ffm.conv2 (before)")
    outputs = int(state["conv_out.conv_out.weight"].shape[0])
    fused = int(state["ffm.convblk.conv.weight"].shape[0])
    reduction = max(1, fused // int(state["ffm.conv1.weight"].shape[0])) if ffm_attention == "paper" else 4
    return BiSeNetV1Config(
        num_classes=outputs // (OUTPUT_STRIDE * OUTPUT_STRIDE) if head_upsample == "pixel_shuffle" else outputs,
        context_channels=int(state["cp.arm16.conv.conv.weight"].shape[0]),
        fused_channels=fused,
        head_channels=int(state["conv_out.conv.conv.weight"].shape[0]),
        aux_heads=False, ffm_attention=ffm_attention, ffm_reduction=reduction,
        head_upsample=head_upsample, align_corners=align_corners)


V1_FAMILIES: dict[str, Family] = {
    MMSEG_V1: Family(
        name=MMSEG_V1,
        network="BiSeNetV1",
        required=("decode_head.conv_seg.weight", "decode_head.convs.0.conv.weight",
                  "backbone.context_path.arm16.conv_layer.conv.weight", "backbone.ffm.conv1.conv.weight"),
        config=_mmseg_config,
        units=_mmseg_units,
        is_aux_key=lambda k: k.startswith("auxiliary_head."),
        optional=lambda k: k.endswith("num_batches_tracked"),
        default_info=CheckpointInfo(CITYSCAPES, IMAGENET_NORMALIZATION, (1024, 2048), "cityscapes"),
    ),
    COINCHEUNG_V1: Family(
        name=COINCHEUNG_V1,
        network="BiSeNetV1",
        required=("conv_out.conv_out.weight", "conv_out.conv.conv.weight", "cp.arm16.conv.conv.weight",
                  "ffm.convblk.conv.weight"),
        config=_coincheung_config,
        units=_coincheung_units,
        is_aux_key=lambda k: k.startswith(("conv_out16.", "conv_out32.")),
        # The 2020 head had no bias: ours is then zero, which is the same function.
        optional=lambda k: k.endswith("num_batches_tracked") or k == "conv_out.conv_out.bias",
        # Their training code normalises with its own Cityscapes statistics, as for their BiSeNetV2.
        default_info=CheckpointInfo(CITYSCAPES, CITYSCAPES_NORMALIZATION, (1024, 2048), "cityscapes"),
    ),
}
