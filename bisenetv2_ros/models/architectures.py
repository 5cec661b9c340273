"""The networks a checkpoint can hold, by name: one place maps an architecture to its config and module.

    build_model(config)                      # BiSeNetV2Config -> BiSeNetV2, BiSeNetV1Config -> BiSeNetV1
    config_from_dict("bisenetv1", {...})     # what checkpoints store
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import nn

from .bisenetv1 import BiSeNetV1, BiSeNetV1Config
from .bisenetv2 import BiSeNetV2, BiSeNetV2Config

ModelConfig = Union[BiSeNetV2Config, BiSeNetV1Config]
SegmentationModel = Union[BiSeNetV2, BiSeNetV1]

DEFAULT_ARCHITECTURE = "bisenetv2"  # checkpoints written before the field existed hold a BiSeNetV2
ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "bisenetv2": (BiSeNetV2Config, BiSeNetV2),
    "bisenetv1": (BiSeNetV1Config, BiSeNetV1),
}
# The parts a size report breaks the network into: {part: module-name prefixes}.
REPORT_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bisenetv2": {"detail": ("detail",), "semantic": ("semantic",), "bga": ("bga",), "head": ("head",)},
    "bisenetv1": {"spatial": ("spatial",), "context": ("context.backbone",),
                  "arms": ("context.arm16", "context.arm32", "context.global_context", "context.refine32",
                           "context.refine16"),
                  "ffm": ("ffm",), "head": ("head",)},
}


def check_architecture(name: str) -> str:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return name


def architecture_of(config_or_model: Any) -> str:
    """The architecture name of a config or a model."""
    config = getattr(config_or_model, "config", config_or_model)
    for name, (config_type, _) in ARCHITECTURES.items():
        if isinstance(config, config_type):
            return name
    raise TypeError(f"{type(config_or_model).__name__} is not a known segmentation network or config")


def default_config(architecture: str, **overrides: Any) -> ModelConfig:
    return ARCHITECTURES[check_architecture(architecture)][0](**overrides)


def config_from_dict(architecture: str, values: Mapping[str, Any]) -> ModelConfig:
    return ARCHITECTURES[check_architecture(architecture)][0].from_dict(values)


def build_model(config: ModelConfig) -> SegmentationModel:
    return ARCHITECTURES[architecture_of(config)][1](config)
