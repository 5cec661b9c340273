"""Importing public checkpoints (mmsegmentation, CoinCheung; BiSeNetV2 and BiSeNetV1) into our format.

    checkpoint = import_checkpoint("model_final_v2_city.pth")   # the family detected from the key names

The key maps live in ``importers_v2`` and ``importers_v1``; the conversion they share in ``key_maps``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import (
    FORMAT_NAME,
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    check_tensors,
    checkpoint_from_data,
    detect_family,
    preview,
    read_checkpoint_file,
    require_usable_weights,
)
from .importers_v1 import V1_FAMILIES
from .importers_v2 import V2_FAMILIES
from .key_maps import Family, convert_family

FAMILIES: dict[str, Family] = {**V2_FAMILIES, **V1_FAMILIES}


def import_state_dict(state: Mapping[str, torch.Tensor], family: str,
                      info: CheckpointInfo | None = None) -> Checkpoint:
    """Converts a foreign state dict to a deploy checkpoint, exactly: every foreign main-path tensor
    is used once, booster heads are dropped by name, anything else is an error."""
    if family not in FAMILIES:
        raise CheckpointError(f"unknown checkpoint family {family!r}; known: {sorted(FAMILIES)}")
    return convert_family(state, FAMILIES[family], info)


def checkpoint_from_any(data: Any, source: str | os.PathLike, family: str | None = None,
                        info: CheckpointInfo | None = None) -> Checkpoint:
    """What ``read_checkpoint_file`` returned -> a Checkpoint: ours as it is, a public one converted.

    ``family`` None detects it from the key names; ``info`` replaces the family's default metadata.
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{source} holds a {type(data).__name__}, not a state dict")
    detected = detect_family(data)
    if detected == FORMAT_NAME:
        return checkpoint_from_data(data, source)
    family = family or detected
    if family is None:
        raise CheckpointError(
            f"{source}: unknown checkpoint layout, neither a {FORMAT_NAME} checkpoint nor a known public one "
            f"(first keys: {preview(list(data)[:5])}); known families: {sorted(FAMILIES)}"
        )
    state = data.get("state_dict", data)  # mmsegmentation nests it; CoinCheung saves it bare
    check_tensors(state, source)
    checkpoint = import_state_dict(state, family, info)
    require_usable_weights(checkpoint.state_dict, source)
    checkpoint.info = dataclasses.replace(
        checkpoint.info, provenance={**checkpoint.info.provenance, "source_file": Path(source).name}
    )
    return checkpoint


def import_checkpoint(path: str | os.PathLike, family: str | None = None,
                      info: CheckpointInfo | None = None) -> Checkpoint:
    """Reads a public checkpoint file (mmsegmentation ``{meta, state_dict}`` or a bare CoinCheung
    state dict) and converts it; ``family`` None detects it from the key names. One of our own
    checkpoints is returned as it is."""
    return checkpoint_from_any(read_checkpoint_file(path), path, family, info)
