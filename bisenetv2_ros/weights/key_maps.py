"""What every importer of public checkpoints shares: unit maps, key pairs and the exact conversion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ..classes import ClassSet, default_palette
from ..models.architectures import ModelConfig, build_model
from .checkpoint import Checkpoint, CheckpointError, CheckpointInfo, raise_if_misfit, strip_module_prefix

# Each triple maps one of our conv(+BN) units to the foreign conv and BN prefixes: (ours, conv, bn).
# conv "" means a lone batch norm; bn None a lone conv (our "<unit>.weight" / ".bias").
UnitMap = list[tuple[str, str, str | None]]

def conv_bn(prefix: str) -> tuple[str, str]:
    """The conv and BN prefixes of a unit named the common way: mmcv's ConvModule, CoinCheung's ConvBNReLU."""
    return prefix + ".conv", prefix + ".bn"


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Family:
    """One publisher's layout of one network: how to size our model from its keys and map them."""

    name: str
    network: str  # for messages: "BiSeNetV2", "BiSeNetV1"
    required: tuple[str, ...]  # keys read to size the model; their absence means another network
    config: Callable[[Mapping[str, torch.Tensor]], ModelConfig]
    units: Callable[[Any], UnitMap]
    is_aux_key: Callable[[str], bool]  # the auxiliary heads, dropped by name
    optional: Callable[[str], bool]  # foreign tensors that may be absent and are then zero
    default_info: CheckpointInfo


def key_pairs(units: UnitMap, model_keys: set[str]) -> list[tuple[str, str]]:
    """(our key, foreign key) for every tensor of the model."""
    pairs: list[tuple[str, str]] = []
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


def convert_family(state: Mapping[str, torch.Tensor], family: Family, info: CheckpointInfo | None = None) -> Checkpoint:
    """A foreign state dict of ``family`` -> our deploy checkpoint, exactly: every foreign main-path
    tensor is used once, auxiliary heads are dropped by name, anything else is an error."""
    state = {strip_module_prefix(k): v for k, v in state.items()}
    for key in family.required:
        if key not in state:
            raise CheckpointError(f"not a {family.name} {family.network} state dict: key {key!r} is missing")
    config = family.config(state)
    template = build_model(config).state_dict()
    pairs = key_pairs(family.units(config), set(template))
    converted = convert_state_dict(state, pairs, template, family.name, family.optional, family.is_aux_key)
    return Checkpoint(config, imported_info(info or family.default_info, config.num_classes, family.name),
                      converted, "deploy")


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
    raise_if_misfit(f"cannot import this {family} state dict:", missing, unexpected, mismatched)
    return converted
