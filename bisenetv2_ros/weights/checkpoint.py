"""The checkpoint format: what a bisenetv2_ros checkpoint holds, and writing and reading it.

A checkpoint is a ``torch.save``'d dict of plain containers (loadable with ``weights_only=True``)::

    {"format": "bisenetv2_ros", "version": 1, "kind": "deploy" | "train",
     "architecture": "bisenetv2" | "bisenetv1",  # absent in files written before BiSeNetV1: bisenetv2
     "model_config": {...BiSeNetV2Config or BiSeNetV1Config...}, "info": {...CheckpointInfo...},
     "state_dict": {...}, "training_state": {...}  # train checkpoints only, optional}

"deploy" checkpoints hold no booster-head weights; "train" checkpoints may, and may carry the
optimizer / scheduler / RNG state used by ``training/train.py --resume``. Public checkpoints are
converted by ``importers``; names such as ``camvid`` are opened by ``known_weights.open_weights``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..classes import ClassSet
from ..conventions import CHANNEL_ORDERS, IMAGENET_MEAN, IMAGENET_STD, strip_aux_heads
from ..fileio import atomic_open, special_file_problem
from ..models.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    ModelConfig,
    SegmentationModel,
    architecture_of,
    build_model,
    config_from_dict,
)
from .checkpoint_parts import finite_number, info_fields_problem, required_part_problem, weight_problems
from .checkpoint_parts import preview  # noqa: F401 - the importers take it from here

FORMAT_NAME = "bisenetv2_ros"
FORMAT_VERSION = 1
KINDS = ("deploy", "train")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


# --------------------------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class Normalization:
    """How a uint8 frame becomes network input: ``(x / 255 - mean) / std`` in ``channel_order``."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if (len(self.mean) != 3 or len(self.std) != 3 or not all(map(finite_number, (*self.mean, *self.std)))
                or any(s <= 0 for s in self.std)):
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
    # int8 activation ranges measured on the training frames (inference/calibration_table.py), or None.
    calibration: Mapping[str, Any] | None = None
    ood: Mapping[str, Any] | None = None  # the out-of-distribution score's calibration (inference/ood.py)

    def to_dict(self) -> dict[str, Any]:
        values = {
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
        for key in ("calibration", "ood"):  # absent, not None, in files without one (as before)
            part = getattr(self, key)  # kept as read when malformed: checkpoint_parts reports it
            if part is not None:
                values[key] = dict(part) if isinstance(part, Mapping) else part
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CheckpointInfo":
        problem = info_fields_problem(values)
        if problem:
            raise CheckpointError(f"info: {problem}")
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
                calibration=values.get("calibration"), ood=values.get("ood"),
            )
        except (KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"checkpoint info is incomplete or malformed: {error!r}") from error


@dataclass
class Checkpoint:
    """One network's config, weights and metadata (and, for a train checkpoint, the training state)."""

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
            state = strip_aux_heads(state)
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
        state = strip_aux_heads(self.state_dict) if for_inference else self.state_dict
        model = build_model(config)
        load_state_dict_strict(model, state, source=f"{self.kind} {self.architecture} checkpoint")
        return model.eval() if for_inference else model


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that lists every problem by name."""
    expected = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    raise_if_misfit(f"the {source} does not fit the model:", [k for k in expected if k not in state],
                    [k for k in state if k not in expected], mismatched)
    model.load_state_dict(state, strict=True)


def raise_if_misfit(title: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
    """One CheckpointError listing every missing, unexpected and wrongly shaped key by name, if any."""
    found = [f"{what} ({len(keys)}): {preview(keys)}" for what, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
    if found:  # one line, as every error of ours
        raise CheckpointError(f"{title} {'; '.join(found)}")


def check_tensors(state: Any, source: str | os.PathLike) -> None:
    """Raises CheckpointError unless ``state`` maps names to tensors (what every conversion assumes)."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: the state dict is a {type(state).__name__}, not a mapping of names to tensors")
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        value = state[bad[0]]
        raise CheckpointError(
            f"{source}: state dict entry {str(bad[0])!r} holds {type(value).__name__} {repr(value)[:40]}, not a tensor"
            f"{f' ({len(bad)} such entries: {preview([str(k) for k in bad], 3)})' if len(bad) > 1 else ''}; "
            "the file is damaged or holds more than weights: save only the model's state_dict()")


# --------------------------------------------------------------------------------------------
# Writing and reading


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, half: bool = False) -> Path:
    """Writes atomically: a temporary file in the same folder, fsync, then rename.

    ``half`` stores floating-point weights as fp16 (deployment checkpoints; they are loaded back
    as fp32). Batch-norm statistics stay fp32 to keep their precision.
    """
    path = Path(path)  # atomic_open makes the folder (a failure names the file and the reason)
    data = checkpoint.to_dict()
    if half:
        data["state_dict"] = {k: (v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
                                  else v) for k, v in data["state_dict"].items()}
    with atomic_open(path) as stream:
        torch.save(data, stream)
    return path


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` of any checkpoint file (ours or public), on the CPU.

    Everything that is not a readable PyTorch file -- an ONNX model, a TensorRT engine, a text file, a
    damaged download, a pickle of arbitrary objects -- is one CheckpointError saying what it is.
    """
    path = Path(path)
    special = special_file_problem(path, "checkpoint")
    if special:
        raise CheckpointError(special)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        not_torch = _not_a_torch_file(path)
        if not_torch:
            raise CheckpointError(not_torch) from error
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


# What --weights takes, for the messages about files it does not take.
_WEIGHTS_HINT = "pass a checkpoint (.pt/.pth) or a known weights name (`bisenetv2 download --list`)"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL = 0x80  # the first byte of the older torch.save format (a pickle, protocol 2+)


def _not_a_torch_file(path: Path) -> str | None:
    """A one-line description of a file that is no torch.save file at all, with what to pass instead."""
    with open(path, "rb") as stream:
        head = stream.read(4096)
    if head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTOCOL):
        return None  # a PyTorch file: its own error says more
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return (f"{path} is an ONNX model, not a checkpoint; pass the checkpoint (.pt/.pth) or known weights name "
                f"it was exported from and choose the onnxruntime backend, which builds its graph from it")
    if suffix in (".engine", ".plan", ".trt"):
        return (f"{path} is a TensorRT engine, not a checkpoint; pass the checkpoint (.pt/.pth) or known weights "
                f"name it was built from and choose the tensorrt backend, which builds and caches its engine")
    if not head:
        return f"{path} is empty, not a checkpoint; {_WEIGHTS_HINT}"
    if _is_text(head):
        return f"{path} is a text file ({suffix or 'no suffix'}), not a PyTorch checkpoint; {_WEIGHTS_HINT}"
    return f"{path} is not a PyTorch checkpoint (unrecognised binary data); {_WEIGHTS_HINT}"


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the end of the sample is still text
        return error.start >= len(head) - 3
    return True


def is_our_format(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def replace_info_entry(path: str | os.PathLike, key: str, value: Any) -> Path:
    """Sets ``info[key]`` of the checkpoint file at ``path`` to ``value`` (None removes it), atomically;
    every other entry, the weights included, is written back exactly as it was read (fp16 stays fp16)."""
    data = read_checkpoint_file(path)
    if not is_our_format(data):
        raise CheckpointError(f"{path} is not a bisenetv2_ros checkpoint; convert it first (`bisenetv2 import`)")
    if value is None:
        data["info"].pop(key, None)
    else:
        data["info"][key] = value
    with atomic_open(Path(path)) as stream:
        torch.save(data, stream)
    return Path(path)


def checkpoint_from_data(data: Any, source: str | os.PathLike) -> Checkpoint:
    """A Checkpoint from what ``read_checkpoint_file`` returned; ``source`` names the file in errors."""
    if not is_our_format(data):
        family = detect_family(data) if isinstance(data, dict) else None
        hint = (f" It looks like a {family} checkpoint: convert it with `bisenetv2 import {source} OUT.pt` or load it "
                "with bisenetv2_ros.weights.importers.import_checkpoint()." if family else "")
        raise CheckpointError(f"{source} is not a bisenetv2_ros checkpoint (no '{FORMAT_NAME}' format tag).{hint}")
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{source} has format version {version!r}; this package reads up to {FORMAT_VERSION}")
    architecture = data.get("architecture", DEFAULT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{source} holds architecture {architecture!r}; this package knows {', '.join(ARCHITECTURES)}")
    try:
        config = config_from_dict(architecture, data["model_config"])
        info = CheckpointInfo.from_dict(data["info"])
        state = data["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: malformed checkpoint: {error}") from error
    check_tensors(state, source)
    state = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in state.items()}
    try:
        checkpoint = Checkpoint(config, info, state, data.get("kind", "deploy"), data.get("training_state"))
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    problem = required_part_problem(checkpoint)  # every registered check of the weights (finite, shapes)
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    return checkpoint


def require_usable_weights(state: Mapping[str, Any], source: str | os.PathLike) -> None:
    problems = weight_problems(state)
    if problems:
        raise CheckpointError(f"{source}: the weights are unusable: {'; '.join(problems)}; take an earlier "
                              "checkpoint of the run, or lower optim.lr if training diverged")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads one of our checkpoints; a foreign one gets an error that names its family."""
    return checkpoint_from_data(read_checkpoint_file(path), path)


# --------------------------------------------------------------------------------------------
# Recognising the public layouts (the importers convert them)


def strip_module_prefix(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key  # saved from DistributedDataParallel


def detect_family(data: Mapping[str, Any]) -> str | None:
    """'mmsegmentation', 'coincheung', their '-bisenetv1' variants, 'bisenetv2_ros' or None, from the key names."""
    if is_our_format(data):
        return FORMAT_NAME
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping):
        return None
    keys = [strip_module_prefix(k) for k in state]
    starts = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    # BiSeNetV1 first: its mmsegmentation keys also begin with "backbone.".
    if starts("backbone.context_path."):
        return "mmsegmentation-bisenetv1"
    if starts("cp.resnet.") and starts("sp."):
        return "coincheung-bisenetv1"
    if starts("backbone.detail.detail_branch."):
        return "mmsegmentation"
    if starts("detail.S1.") and starts("segment.S1S2."):
        return "coincheung"
    return None
