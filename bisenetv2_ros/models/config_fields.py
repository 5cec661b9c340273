"""What the model configs share: copy / dict / strict from-dict, and each field checked against its range.

A config comes from a file anyone can edit (a checkpoint, a training YAML, ``--set``), so every field
is checked where the config is made: its type (``True`` is not a number), finiteness and an upper
bound, so a typo such as ``width_multiplier: 1000`` is one line naming the field, not an attempt to
allocate 147 GB.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, TypeVar

ConfigT = TypeVar("ConfigT", bound="ConfigFields")

MAX_NUM_CLASSES = 255  # labels are uint8; 255 means unlabelled
MAX_CHANNELS = 4096  # of any head or fusion layer (the widest public BiSeNet head has 1024)


class ConfigFields:
    """Copy, dict and strict from-dict for the frozen config dataclasses that checkpoints store."""

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
        if not isinstance(values, Mapping):
            raise ValueError(f"a {cls.__name__} must be a mapping of field names to values, got a "
                             f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields are {sorted(known)}")
        return cls(**dict(values))


def check_integer(config: Any, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def check_number(config: Any, name: str, low: float, high: float) -> None:
    value = getattr(config, name)
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
            and low <= value <= high):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def check_flag(config: Any, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(config, name)!r}")
