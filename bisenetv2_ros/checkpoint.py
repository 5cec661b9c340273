"""The checkpoint format, importers of public BiSeNetV2 checkpoints, and the named weights.

A checkpoint is a ``torch.save``'d dict of plain containers (loadable with ``weights_only=True``)::

    {"format": "bisenetv2_ros", "version": 1, "kind": "deploy" | "train",
     "architecture": "bisenetv2" | "bisenetv1",  # absent in files written before BiSeNetV1: bisenetv2
     "model_config": {...BiSeNetV2Config or BiSeNetV1Config...}, "info": {...CheckpointInfo...},
     "state_dict": {...}, "training_state": {...}  # train checkpoints only, optional}

"deploy" checkpoints hold no booster-head weights; "train" checkpoints may, and may carry the
optimizer / scheduler / RNG state used by ``training/train.py --resume``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from .fileio import atomic_open
from .classes import CAMVID, CITYSCAPES, ClassSet, default_palette
from .architectures import (ARCHITECTURES, DEFAULT_ARCHITECTURE, ModelConfig, SegmentationModel, architecture_of,
                            build_model, config_from_dict)
from .model import BiSeNetV2, BiSeNetV2Config

FORMAT_NAME = "bisenetv2_ros"
FORMAT_VERSION = 1
KINDS = ("deploy", "train")
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


# --------------------------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class Normalization:
    """How a uint8 frame becomes network input: ``(x / 255 - mean) / std`` in ``channel_order``."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"normalization needs 3 means and 3 positive stds, got {self.mean}, {self.std}")


IMAGENET_NORMALIZATION = Normalization()
CITYSCAPES_NORMALIZATION = Normalization((0.3257, 0.3690, 0.3223), (0.2112, 0.2148, 0.2115), "rgb")


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything a user of the weights must not have to guess."""

    classes: ClassSet
    normalization: Normalization = IMAGENET_NORMALIZATION
    train_resolution: tuple[int, int] | None = None  # (height, width) the model expects
    dataset: str = "unknown"
    metrics: Mapping[str, float] = field(default_factory=dict)  # e.g. {"val_miou": 0.72}
    provenance: Mapping[str, str] = field(default_factory=dict)  # source, commit, command, date

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes.names),
            "palette": [list(c) for c in self.classes.palette],
            "normalization": {
                "mean": list(self.normalization.mean),
                "std": list(self.normalization.std),
                "channel_order": self.normalization.channel_order,
            },
            "train_resolution": list(self.train_resolution) if self.train_resolution else None,
            "dataset": self.dataset,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "provenance": {k: str(v) for k, v in self.provenance.items()},
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CheckpointInfo":
        try:
            norm = values["normalization"]
            resolution = values.get("train_resolution")
            return cls(
                classes=ClassSet(tuple(values["classes"]), tuple(tuple(int(v) for v in c) for c in values["palette"])),
                normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"]), norm["channel_order"]),
                train_resolution=(int(resolution[0]), int(resolution[1])) if resolution else None,
                dataset=str(values.get("dataset", "unknown")),
                metrics=dict(values.get("metrics", {})),
                provenance=dict(values.get("provenance", {})),
            )
        except (KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"checkpoint info is incomplete or malformed: {error!r}") from error


@dataclass
class Checkpoint:
    config: ModelConfig  # its type says the architecture
    info: CheckpointInfo
    state_dict: dict[str, torch.Tensor]
    kind: str = "deploy"
    training_state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CheckpointError(f"checkpoint kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.info.classes) != self.config.num_classes:
            raise CheckpointError(
                f"the checkpoint lists {len(self.info.classes)} class names but its model has "
                f"{self.config.num_classes} classes"
            )

    @property
    def architecture(self) -> str:
        return architecture_of(self.config)

    @classmethod
    def from_model(cls, model: SegmentationModel, info: CheckpointInfo, kind: str = "deploy",
                   training_state: dict[str, Any] | None = None) -> "Checkpoint":
        """Snapshot a model. A deploy checkpoint never stores booster heads."""
        config = model.config
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if kind == "deploy":
            state = {k: v for k, v in state.items() if not k.startswith("aux_heads.")}
            config = config.replace(aux_heads=False)
        return cls(config, info, state, kind, training_state)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "architecture": self.architecture,
            "model_config": self.config.to_dict(),
            "info": self.info.to_dict(),
            "state_dict": self.state_dict,
        }
        if self.training_state is not None:
            data["training_state"] = self.training_state
        return data

    def build_model(self, for_inference: bool = True) -> SegmentationModel:
        """Rebuilds the network and loads the weights strictly.

        ``for_inference`` drops the booster heads explicitly: their keys are removed by name before
        a strict load, so any other missing or unexpected key is still an error.
        """
        config = self.config.replace(aux_heads=False) if for_inference else self.config
        state = self.state_dict
        if for_inference:
            state = {k: v for k, v in state.items() if not k.startswith("aux_heads.")}
        model = build_model(config)
        load_state_dict_strict(model, state, source=f"{self.kind} {self.architecture} checkpoint")
        return model.eval() if for_inference else model


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that lists every problem by name."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"the {source} does not fit the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --------------------------------------------------------------------------------------------
# Reading and writing


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, half: bool = False) -> Path:
    """Writes atomically: a temporary file in the same folder, fsync, then rename.

    ``half`` stores floating-point weights as fp16 (deployment checkpoints; they are loaded back
    as fp32). Batch-norm statistics stay fp32 to keep their precision.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = checkpoint.to_dict()
    if half:
        data["state_dict"] = {
            k: (v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v)
            for k, v in data["state_dict"].items()
        }
    with atomic_open(path) as stream:
        torch.save(data, stream)
    return path


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        if "Weights only load failed" in str(error):  # intact, but pickles arbitrary Python objects
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            raise CheckpointError(
                f"{path} stores Python objects beyond tensors and plain containers"
                f"{f' ({found.group(1)})' if found else ''}; checkpoints are read with "
                f"torch.load(weights_only=True), which never runs code from the file. If you trust the file, "
                f"load it with weights_only=False yourself and torch.save() only its state dict"
            ) from error
        raise CheckpointError(
            f"cannot read {path}: the file is truncated, damaged or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads one of our checkpoints; a foreign one gets an error that names its family."""
    path = Path(path)
    data = _torch_load(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        family = detect_family(data) if isinstance(data, dict) else None
        hint = (
            f" It looks like a {family} checkpoint: convert it with `bisenetv2 import {path} OUT.pt` "
            f"or load it with bisenetv2_ros.checkpoint.import_checkpoint()."
            if family
            else ""
        )
        raise CheckpointError(f"{path} is not a bisenetv2_ros checkpoint (no '{FORMAT_NAME}' format tag).{hint}")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {data['version']}; this package reads up to {FORMAT_VERSION}")
    architecture = data.get("architecture", DEFAULT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{path} holds architecture {architecture!r}; this package knows {', '.join(ARCHITECTURES)}")
    try:
        config = config_from_dict(architecture, data["model_config"])
        info = CheckpointInfo.from_dict(data["info"])
        state = data["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: malformed checkpoint: {error}") from error
    state = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in state.items()}
    return Checkpoint(config, info, state, data.get("kind", "deploy"), data.get("training_state"))


def load_model(weights: str | os.PathLike, for_inference: bool = True) -> tuple[SegmentationModel, CheckpointInfo]:
    """A known weights name or a checkpoint path -> (model, info). Public checkpoints are imported."""
    path = resolve_weights(weights)
    entry = KNOWN_WEIGHTS.get(str(weights))
    if entry is not None and entry.family != "bisenetv2_ros":
        checkpoint = import_checkpoint(path, family=entry.family, info=entry.info)
    else:
        checkpoint = load_checkpoint(path)
    return checkpoint.build_model(for_inference=for_inference), checkpoint.info


# --------------------------------------------------------------------------------------------
# Importers of the two public checkpoint families


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


# Each pair maps one of our conv(+BN) units to the foreign conv and BN prefixes (BN may be None).
UnitMap = list[tuple[str, str, str | None]]


def _mmseg_units(config: BiSeNetV2Config) -> UnitMap:
    cm = lambda p: (p + ".conv", p + ".bn")  # mmcv ConvModule: .conv and .bn
    units: UnitMap = []
    for i, j in _detail_units(config):
        units.append((f"detail.s{i}.{j}", *cm(f"backbone.detail.detail_branch.{i - 1}.{j}")))
    stem = "backbone.semantic.stage1"
    units += [("semantic.stem.conv", *cm(f"{stem}.conv_first")),
              ("semantic.stem.conv_path.0", *cm(f"{stem}.convs.0")),
              ("semantic.stem.conv_path.1", *cm(f"{stem}.convs.1")),
              ("semantic.stem.fuse", *cm(f"{stem}.fuse_last"))]
    stage_names = {"s3": "stage2", "s4": "stage3", "s5": "stage4"}
    for stage, j, stride in _ge_units(config):
        ours, theirs = f"semantic.{stage}.{j}", f"backbone.semantic.{stage_names[stage]}.{j}"
        units.append((f"{ours}.gather", *cm(f"{theirs}.conv1")))
        if stride == 2:
            units += [(f"{ours}.expand.0", *cm(f"{theirs}.dwconv.0")),
                      (f"{ours}.expand.1", *cm(f"{theirs}.dwconv.1")),
                      (f"{ours}.shortcut.0", *cm(f"{theirs}.shortcut.0.depthwise_conv")),
                      (f"{ours}.shortcut.1", *cm(f"{theirs}.shortcut.0.pointwise_conv"))]
        else:
            units.append((f"{ours}.expand", *cm(f"{theirs}.dwconv.0")))
        units.append((f"{ours}.project", *cm(f"{theirs}.conv2.0")))
    ce = "backbone.semantic.stage4_CEBlock"
    units += [("semantic.context.pool_bn", "", f"{ce}.gap.1"),
              ("semantic.context.pool_conv", *cm(f"{ce}.conv_gap")),
              ("semantic.context.out_conv", *cm(f"{ce}.conv_last")),
              ("bga.detail_high.0", *cm("backbone.bga.detail_dwconv.0.depthwise_conv")),
              ("bga.detail_high.1", "backbone.bga.detail_dwconv.0.pointwise_conv.conv", None),
              ("bga.detail_low.0", *cm("backbone.bga.detail_down.0")),
              ("bga.semantic_high_gate", *cm("backbone.bga.semantic_conv.0")),
              ("bga.semantic_low_gate.0", *cm("backbone.bga.semantic_dwconv.0.depthwise_conv")),
              ("bga.semantic_low_gate.1", "backbone.bga.semantic_dwconv.0.pointwise_conv.conv", None),
              ("bga.fuse", *cm("backbone.bga.conv")),
              ("head.conv", *cm("decode_head.convs.0")),
              ("head.classifier", "decode_head.conv_seg", None)]
    return units


def _coincheung_units(config: BiSeNetV2Config) -> UnitMap:
    cbr = lambda p: (p + ".conv", p + ".bn")  # their ConvBNReLU
    seq = lambda p, i: (f"{p}.{i}", f"{p}.{i + 1}")  # a bare nn.Sequential(conv, bn, ...)
    units: UnitMap = []
    for i, j in _detail_units(config):
        units.append((f"detail.s{i}.{j}", *cbr(f"detail.S{i}.{j}")))
    units += [("semantic.stem.conv", *cbr("segment.S1S2.conv")),
              ("semantic.stem.conv_path.0", *cbr("segment.S1S2.left.0")),
              ("semantic.stem.conv_path.1", *cbr("segment.S1S2.left.1")),
              ("semantic.stem.fuse", *cbr("segment.S1S2.fuse"))]
    stage_names = {"s3": "S3", "s4": "S4", "s5": "S5_4"}
    for stage, j, stride in _ge_units(config):
        ours, theirs = f"semantic.{stage}.{j}", f"segment.{stage_names[stage]}.{j}"
        units.append((f"{ours}.gather", *cbr(f"{theirs}.conv1")))
        if stride == 2:
            units += [(f"{ours}.expand.0", *seq(f"{theirs}.dwconv1", 0)),
                      (f"{ours}.expand.1", *seq(f"{theirs}.dwconv2", 0)),
                      (f"{ours}.shortcut.0", *seq(f"{theirs}.shortcut", 0)),
                      (f"{ours}.shortcut.1", *seq(f"{theirs}.shortcut", 2))]
        else:
            units.append((f"{ours}.expand", *seq(f"{theirs}.dwconv", 0)))
        units.append((f"{ours}.project", *seq(f"{theirs}.conv2", 0)))
    units += [("semantic.context.pool_bn", "", "segment.S5_5.bn"),
              ("semantic.context.pool_conv", *cbr("segment.S5_5.conv_gap")),
              ("semantic.context.out_conv", *cbr("segment.S5_5.conv_last")),
              ("bga.detail_high.0", *seq("bga.left1", 0)),
              ("bga.detail_high.1", "bga.left1.2", None),
              ("bga.detail_low.0", *seq("bga.left2", 0)),
              ("bga.semantic_high_gate", *seq("bga.right1", 0)),
              ("bga.semantic_low_gate.0", *seq("bga.right2", 0)),
              ("bga.semantic_low_gate.1", "bga.right2.2", None),
              ("bga.fuse", *seq("bga.conv", 0)),
              ("head.conv", *cbr("head.conv")),
              ("head.classifier", "head.conv_out.1", None)]
    return units


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _key_pairs(units: UnitMap, model_keys: set[str]) -> list[tuple[str, str | None]]:
    """(our key, foreign key or None = fill with zeros) for every tensor of the model."""
    pairs: list[tuple[str, str | None]] = []
    for ours, conv, bn in units:
        if conv == "":  # a lone batch norm
            pairs += [(f"{ours}.{p}", f"{bn}.{p}") for p in _BN_PARAMS]
        elif bn is None:  # a lone conv: our "<unit>.weight"/".bias"
            pairs.append((f"{ours}.weight", f"{conv}.weight"))
            if f"{ours}.bias" in model_keys:
                pairs.append((f"{ours}.bias", f"{conv}.bias"))
        else:  # our ConvBNReLU: ".0" conv, ".1" BN
            pairs.append((f"{ours}.0.weight", f"{conv}.weight"))
            pairs += [(f"{ours}.1.{p}", f"{bn}.{p}") for p in _BN_PARAMS]
    return pairs


@dataclass(frozen=True)
class _Family:
    name: str
    is_aux_key: Callable[[str], bool]
    units: Callable[[BiSeNetV2Config], UnitMap]
    classifier_key: str
    head_conv_key: str
    upsample_mode: str
    # Foreign tensors that may be absent and are then zero (a conv bias the family does not have,
    # a BN counter older PyTorch versions did not save).
    optional: Callable[[str], bool]
    default_info: "CheckpointInfo"


def _bn_counter_or_bias(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.endswith(("left1.2.bias", "right2.2.bias"))


FAMILIES = {
    "mmsegmentation": _Family(
        name="mmsegmentation",
        is_aux_key=lambda k: k.startswith("auxiliary_head."),
        units=_mmseg_units,
        classifier_key="decode_head.conv_seg.weight",
        head_conv_key="decode_head.convs.0.conv.weight",
        upsample_mode="bilinear",
        optional=lambda k: k.endswith("num_batches_tracked"),
        default_info=CheckpointInfo(CITYSCAPES, IMAGENET_NORMALIZATION, (1024, 2048), "cityscapes"),
    ),
    "coincheung": _Family(
        name="coincheung",
        is_aux_key=lambda k: re.match(r"aux(2|3|4|5_4)\.", k) is not None,
        units=_coincheung_units,
        classifier_key="head.conv_out.1.weight",
        head_conv_key="head.conv.conv.weight",
        upsample_mode="nearest",
        optional=_bn_counter_or_bias,
        default_info=CheckpointInfo(CITYSCAPES, CITYSCAPES_NORMALIZATION, (1024, 2048), "cityscapes"),
    ),
}


def detect_family(data: Mapping[str, Any]) -> str | None:
    """'mmsegmentation', 'coincheung', their '-bisenetv1' variants, 'bisenetv2_ros' or None, from the key names."""
    if data.get("format") == FORMAT_NAME:
        return FORMAT_NAME
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping):
        return None
    keys = [_strip_module(k) for k in state]
    from .checkpoint_v1 import detect_v1_family  # imports this module

    v1 = detect_v1_family(keys)
    if v1 is not None:
        return v1
    if any(k.startswith("backbone.detail.detail_branch.") for k in keys):
        return "mmsegmentation"
    if any(k.startswith("detail.S1.") for k in keys) and any(k.startswith("segment.S1S2.") for k in keys):
        return "coincheung"
    return None


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key  # saved from DistributedDataParallel


def import_state_dict(state: Mapping[str, torch.Tensor], family: str,
                      info: CheckpointInfo | None = None) -> Checkpoint:
    """Converts a foreign state dict to a deploy checkpoint, exactly: every foreign main-path tensor
    is used once, booster heads are dropped by name, anything else is an error."""
    from .checkpoint_v1 import V1_FAMILIES, import_v1_state_dict  # imports this module

    if family in V1_FAMILIES:
        return import_v1_state_dict(state, family, info)
    if family not in FAMILIES:
        raise CheckpointError(f"unknown checkpoint family {family!r}; known: {sorted([*FAMILIES, *V1_FAMILIES])}")
    fam = FAMILIES[family]
    state = {_strip_module(k): v for k, v in state.items()}
    for key in (fam.classifier_key, fam.head_conv_key):
        if key not in state:
            raise CheckpointError(f"not a {family} BiSeNetV2 state dict: key {key!r} is missing")
    num_classes = int(state[fam.classifier_key].shape[0])
    config = BiSeNetV2Config(
        num_classes=num_classes,
        head_channels=int(state[fam.head_conv_key].shape[0]),
        aux_heads=False,
        upsample_mode=fam.upsample_mode,
        ge_depthwise_relu=True,
    )
    template = BiSeNetV2(config).state_dict()
    converted = convert_state_dict(state, _key_pairs(fam.units(config), set(template)), template, family,
                                   fam.optional, fam.is_aux_key)
    return Checkpoint(config, imported_info(info or fam.default_info, num_classes, family), converted, "deploy")


def imported_info(info: CheckpointInfo, num_classes: int, family: str) -> CheckpointInfo:
    """The info of an imported checkpoint: its source family noted, classes numbered if they do not fit."""
    if len(info.classes) != num_classes:  # e.g. a model fine-tuned on other data: name classes by id
        names = tuple(f"class_{i}" for i in range(num_classes))
        info = dataclasses.replace(info, classes=ClassSet(names, default_palette(num_classes)))
    return dataclasses.replace(info, provenance={**info.provenance, "imported_from": family})


def convert_state_dict(state: Mapping[str, torch.Tensor], pairs: list[tuple[str, str]],
                       template: Mapping[str, torch.Tensor], family: str, optional: Callable[[str], bool],
                       is_aux_key: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """Our state dict from a foreign one by (our key, foreign key) pairs; every foreign tensor outside
    the auxiliary heads must be used exactly once, and every problem is listed by name."""
    ours_covered = {ours for ours, _ in pairs}
    if ours_covered != set(template):  # a bug in the unit maps, never the user's fault
        raise AssertionError(f"importer map incomplete: {sorted(set(template) ^ ours_covered)[:5]}")
    converted: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    used = set()
    for ours, theirs in pairs:
        if theirs in state:
            tensor = state[theirs]
            used.add(theirs)
            if tuple(tensor.shape) != tuple(template[ours].shape):
                mismatched.append(f"{theirs}: {tuple(tensor.shape)} vs expected {tuple(template[ours].shape)}")
                continue
            converted[ours] = tensor.detach().clone().to(template[ours].dtype)
        elif optional(theirs):
            converted[ours] = torch.zeros_like(template[ours])
        else:
            missing.append(theirs)
    unexpected = [k for k in state if k not in used and not is_aux_key(k)]
    if missing or unexpected or mismatched:
        lines = [f"cannot import this {family} state dict:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        raise CheckpointError("\n".join(lines))
    return converted


def import_checkpoint(path: str | os.PathLike, family: str | None = None,
                      info: CheckpointInfo | None = None) -> Checkpoint:
    """Reads a public checkpoint file (mmsegmentation ``{meta, state_dict}`` or a bare CoinCheung
    state dict) and converts it; ``family`` None detects it from the key names."""
    path = Path(path)
    data = _torch_load(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict")
    detected = detect_family(data)
    if detected == FORMAT_NAME:
        return load_checkpoint(path)
    family = family or detected
    if family is None:
        from .checkpoint_v1 import V1_FAMILIES

        raise CheckpointError(
            f"{path}: unknown checkpoint layout (first keys: {_preview(list(data)[:5])}); "
            f"known families: {sorted([*FAMILIES, *V1_FAMILIES])}"
        )
    state = data.get("state_dict", data)  # mmsegmentation nests it; CoinCheung saves it bare
    checkpoint = import_state_dict(state, family, info)
    checkpoint.info = dataclasses.replace(
        checkpoint.info, provenance={**checkpoint.info.provenance, "source_file": path.name}
    )
    return checkpoint


# --------------------------------------------------------------------------------------------
# Named weights (like torchvision's WeightsEnum: one place holds all that is known of each file)


@dataclass(frozen=True)
class KnownWeights:
    name: str
    description: str
    family: str  # "bisenetv2_ros" (our format) or an importer family
    file_name: str
    info: CheckpointInfo
    url: str | None = None  # None: shipped inside the package
    sha256_prefix: str | None = None  # what the publisher states of the file's SHA-256

    @property
    def embedded(self) -> bool:
        return self.url is None


_MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5"


def _mmseg(name: str, run: str, stamp: str, sha: str, miou: float, miou_ms_flip: float, note: str,
           architecture: str = "bisenetv2") -> KnownWeights:
    """An mmsegmentation model-zoo file; names, numbers and hashes as its configs/<arch>/README.md lists them."""
    file_name = f"{run}_{stamp}-{sha}.pth"
    network = {"bisenetv2": "BiSeNetV2", "bisenetv1": "BiSeNetV1 (ResNet-18)"}[architecture]
    return KnownWeights(
        name=name,
        description=f"mmsegmentation {network} on Cityscapes, {note}",
        family="mmsegmentation" if architecture == "bisenetv2" else f"mmsegmentation-{architecture}",
        file_name=file_name,
        url=f"{_MMSEG_BASE}/{architecture}/{run}/{file_name}",
        sha256_prefix=sha,
        info=CheckpointInfo(
            CITYSCAPES, IMAGENET_NORMALIZATION, (1024, 2048), "cityscapes",
            metrics={"val_miou": miou, "val_miou_ms_flip": miou_ms_flip},
            provenance={"source": f"mmsegmentation configs/{architecture} README", "license": "Apache-2.0"},
        ),
    )


DEFAULT_WEIGHTS = "camvid"

KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights(
            name="camvid",
            description="bisenetv2_ros's own model, trained from scratch on CamVid (11 classes); "
                        "ships with the package",
            family="bisenetv2_ros",
            file_name="bisenetv2_camvid.pt",
            info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (240, 320), "camvid"),
        ),
        _mmseg("mmseg-cityscapes", "bisenetv2_fcn_4x4_1024x1024_160k_cityscapes", "20210902_015551",
               "bcf10f09", 73.21, 75.74, "4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-ohem", "bisenetv2_fcn_ohem_4x4_1024x1024_160k_cityscapes", "20210902_112947",
               "5f8103b4", 73.57, 75.80, "with OHEM, 4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-4x8", "bisenetv2_fcn_4x8_1024x1024_160k_cityscapes", "20210903_000032",
               "e1a2eed6", 75.76, 77.79, "4 GPUs x 8 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-fp16", "bisenetv2_fcn_fp16_4x4_1024x1024_160k_cityscapes", "20210902_045942",
               "b979777b", 73.07, 75.13, "trained in mixed precision, 4 GPUs x 4 images, 160k iterations"),
        # Read from mmsegmentation's configs/bisenetv1/README.md (ImageNet-initialised R-18-D32 row); the
        # download itself is not exercised here (no network): `bisenetv2 download` checks the hash.
        _mmseg("mmseg-v1-cityscapes", "bisenetv1_r18-d32_in1k-pre_4x4_1024x1024_160k_cityscapes", "20210905_220251",
               "8ba80eff", 74.37, 76.91, "ImageNet-initialised backbone, 4 GPUs x 4 images, 160k iterations",
               architecture="bisenetv1"),
    )
}


def cache_dir() -> Path:
    """Where downloaded weights live: $BISENETV2_CACHE, else $XDG_CACHE_HOME/bisenetv2_ros, else ~/.cache."""
    if os.environ.get("BISENETV2_CACHE"):
        return Path(os.environ["BISENETV2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bisenetv2_ros"


def resolve_weights(weights: str | os.PathLike) -> Path:
    """A path, or a known name (embedded in the package or downloaded into the cache) -> a file."""
    text = str(weights)
    entry = KNOWN_WEIGHTS.get(text)
    if entry is None:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise CheckpointError(
            f"weights {text!r} is neither an existing file nor a known name ({', '.join(KNOWN_WEIGHTS)})"
        )
    path = PACKAGE_WEIGHTS_DIR / entry.file_name if entry.embedded else cache_dir() / entry.file_name
    if not path.is_file():
        if entry.embedded:
            raise CheckpointError(f"the package's embedded weights {path} are missing; reinstall bisenetv2_ros")
        raise CheckpointError(f"weights {text!r} are not downloaded yet: run `bisenetv2 download {text}`")
    return path
