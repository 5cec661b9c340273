"""A checkpoint's parts validated as data: one registry of checks that every entry point runs.

A checkpoint is a file anyone can edit, so nothing in it is trusted: each *part* (the weights, the
int8 calibration table, ...) has checks of its types, finiteness, counts and shapes, registered here
once with ``register_part_check``. Loading (``checkpoint.checkpoint_from_data``: ``info``, ``import``,
``export``, ``segment``, the node, training) refuses a checkpoint whose *required* parts fail; a
failing optional part (a calibration table) is reported and not used. ``part_reports`` says for
each part whether it is usable and why not (``bisenetv2 info``).

A new part (e.g. an out-of-distribution calibration) registers its checks in its own module:

    register_part_check("ood threshold", lambda ck: ck.info.provenance.get(...) is not None, check)

Checks may come from a higher layer (``inference/calibration_table.py`` adds the check that the table
was measured on these weights); each check returns why the part is unusable, or None.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

PartCheck = Callable[[Any], "str | None"]  # Checkpoint -> why the part is unusable, or None


@dataclass
class _Part:
    present: Callable[[Any], bool]
    required: bool
    checks: list[PartCheck]


PARTS: dict[str, _Part] = {}


def register_part_check(name: str, present: Callable[[Any], bool], check: PartCheck, required: bool = False) -> None:
    """Adds ``check`` to part ``name`` (created on first use; ``present(checkpoint)`` says whether a
    file has the part; a required part that fails makes the whole checkpoint unusable)."""
    part = PARTS.setdefault(name, _Part(present, required, []))
    if check not in part.checks:
        part.checks.append(check)


@dataclass(frozen=True)
class PartReport:
    name: str
    present: bool
    problem: str | None  # None: usable (or absent)

    def line(self) -> str:
        if not self.present:
            return f"{self.name}: none"
        return f"{self.name}: " + ("usable" if self.problem is None else f"NOT usable: {self.problem}")


def part_problem(checkpoint: Any, name: str) -> str | None:
    """The first problem of part ``name`` of ``checkpoint`` (None: usable or absent)."""
    part = PARTS[name]
    if not part.present(checkpoint):
        return None
    for check in part.checks:
        problem = check(checkpoint)
        if problem:
            return problem
    return None


def part_reports(checkpoint: Any) -> list[PartReport]:
    return [PartReport(name, part.present(checkpoint), part_problem(checkpoint, name)) for name, part in PARTS.items()]


def required_part_problem(checkpoint: Any) -> str | None:
    """One line naming the first required part that fails and why (None: all usable); the loader
    (``checkpoint.checkpoint_from_data``) raises it with the file's name."""
    for name, part in PARTS.items():
        problem = part_problem(checkpoint, name) if part.required else None
        if problem:
            return f"the {name} are unusable: {problem}"
    return None


def finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def preview(items: list[str], limit: int = 8) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def weight_problems(state: Mapping[str, Any]) -> list[str]:
    """Why weights cannot segment (a diverged or damaged model labels every pixel alike): NaN or
    infinite values, negative batch-norm variances. Empty when they are fine."""
    import torch

    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    not_finite = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    negative = [k for k, v in tensors.items() if k.endswith("running_var") and bool((v < 0).any())]
    problems = []
    if not_finite:
        problems.append(f"{len(not_finite)} tensors hold NaN or infinite values ({preview(not_finite, 3)})")
    if negative:
        problems.append(f"{len(negative)} batch-norm running_var tensors hold negative variances ({preview(negative, 3)})")
    return problems


# --------------------------------------------------------------------------------------------
# The info entries every checkpoint has (checked as the file is read: ``CheckpointInfo.from_dict``)


def info_fields_problem(values: Any) -> str | None:
    """Why a checkpoint's ``info`` cannot be used as it is (types, finiteness, sizes), or None. The
    class list, palette and channel order are checked where they are built (``ClassSet``, ``Normalization``)."""
    from ..conventions import DEFAULT_MAX_INPUT_PIXELS, MAX_IMAGE_SIDE

    if not isinstance(values, Mapping):
        return f"it is a {type(values).__name__}, not a mapping"
    missing = [key for key in ("classes", "palette", "normalization") if key not in values]
    if missing:
        return f"it lacks {', '.join(missing)}"
    norm = values["normalization"]
    if not (isinstance(norm, Mapping) and all(isinstance(norm.get(k), (list, tuple)) for k in ("mean", "std"))):
        return f"normalization must hold lists 'mean' and 'std', got {norm!r}"
    if not all(finite_number(v) for v in (*norm["mean"], *norm["std"])):
        return f"normalization mean and std must be finite numbers, got {list(norm['mean'])}, {list(norm['std'])}"
    size = values.get("train_resolution")
    if size is not None:
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and
                all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size)):
            return f"train_resolution must be [height, width] in whole pixels, got {size!r}"
        if max(size) > MAX_IMAGE_SIDE or size[0] * size[1] > DEFAULT_MAX_INPUT_PIXELS:
            return (f"train_resolution {size[0]}x{size[1]} is above {MAX_IMAGE_SIDE} a side or "
                    f"{DEFAULT_MAX_INPUT_PIXELS} pixels (4096x4096)")
    if not isinstance(values.get("dataset", ""), str):
        return f"dataset must be a name, got {values['dataset']!r}"
    for key in ("metrics", "provenance"):
        if not isinstance(values.get(key, {}), Mapping):
            return f"{key} must be a mapping of names to values, got a {type(values[key]).__name__}"
    not_numbers = [str(k) for k, v in values.get("metrics", {}).items()  # NaN: a class absent from the split
                   if not (isinstance(v, numbers.Real) and not isinstance(v, bool))]
    if not_numbers:
        return f"metrics must be numbers; {preview(not_numbers, 3)} {'is' if len(not_numbers) == 1 else 'are'} not"
    return None


# --------------------------------------------------------------------------------------------
# The weights (required)


def _weights_fit_the_network(checkpoint: Any) -> str | None:
    """Every tensor the architecture needs, with its shape, and no other (checked on a network built
    on the CPU and dropped: on the meta device its initialisation runs through PyTorch's Python
    references, which import torch._dynamo, 1.3 s in every fresh process, and build 2x slower)."""
    import torch

    from ..conventions import strip_aux_heads
    from ..models.architectures import build_model

    # as Checkpoint.build_model(for_inference=True) loads them: the booster heads are training-only
    config, state = checkpoint.config.replace(aux_heads=False), strip_aux_heads(checkpoint.state_dict)
    with torch.no_grad():
        expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} instead of {shape}" for k, shape in expected.items()
              if k in state and tuple(state[k].shape) != shape]
    found = [f"{what} ({len(keys)}): {preview(keys, 3)}" for what, keys in
             (("missing tensors", missing), ("unexpected tensors", unexpected), ("wrong shapes", shapes)) if keys]
    return f"they do not fit the {checkpoint.architecture} network: " + "; ".join(found) if found else None


def _weights_are_finite(checkpoint: Any) -> str | None:
    problems = weight_problems(checkpoint.state_dict)
    return ("; ".join(problems) + "; take an earlier checkpoint of the run, or lower optim.lr if training diverged"
            if problems else None)


register_part_check("weights", lambda checkpoint: True, _weights_are_finite, required=True)
register_part_check("weights", lambda checkpoint: True, _weights_fit_the_network, required=True)


# --------------------------------------------------------------------------------------------
# The int8 calibration table (optional): its data; inference/calibration_table.py adds its fit to the weights

CALIBRATION_PART = "int8 calibration table"
CALIBRATION_TABLE_VERSION = 1
TABLE_METHOD = "MinMax"  # the calibrator inference/int8.py uses; a table of another method is not ours
MAX_TABLE_TENSORS = 100_000  # a network's activations; BiSeNetV1/V2 have a few hundred




def calibration_data_problem(table: Any) -> str | None:
    """Why ``table`` is not a well-formed calibration table (types, version, finite ranges, counts)."""
    if not isinstance(table, Mapping):
        return f"it is a {type(table).__name__}, not a mapping"
    version = table.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CALIBRATION_TABLE_VERSION:
        return f"it has version {version!r}; this package reads 1 to {CALIBRATION_TABLE_VERSION}"
    if table.get("method") != TABLE_METHOD:
        return f"it was made with {table.get('method')!r}, not {TABLE_METHOD}"
    if not isinstance(table.get("network_sha256"), str):
        return "its network_sha256 is missing"
    size = table.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 1 for v in size)):
        return f"its input_size {size!r} is not [height, width]"
    tensors = table.get("tensors")
    if not isinstance(tensors, Mapping) or not tensors:
        return "it holds no tensor ranges"
    if len(tensors) > MAX_TABLE_TENSORS:
        return f"it holds {len(tensors)} tensor ranges (at most {MAX_TABLE_TENSORS})"
    malformed = [str(k) for k, v in tensors.items() if not (isinstance(k, str) and isinstance(v, (list, tuple))
                                                            and len(v) == 2 and all(finite_number(x) for x in v))]
    if malformed:
        return (f"{len(malformed)} of its {len(tensors)} ranges are not two finite numbers "
                f"({', '.join(malformed[:3])}{', ...' if len(malformed) > 3 else ''})")
    inverted = [k for k, (low, high) in tensors.items() if low > high]
    if inverted:
        return f"{len(inverted)} of its {len(tensors)} ranges have lowest > highest ({', '.join(inverted[:3])})"
    return None


register_part_check(CALIBRATION_PART, lambda checkpoint: checkpoint.info.calibration is not None,
                    lambda checkpoint: calibration_data_problem(checkpoint.info.calibration))


# --------------------------------------------------------------------------------------------
# The training state (optional: train checkpoints; what `training/train.py --resume` continues from)

TRAINING_STATE_PART = "training state"
MAX_ITERATION = 10**9


def training_state_problem(state: Any) -> str | None:
    """Why a train checkpoint's ``training_state`` cannot continue a run (types, counts, finiteness), or None."""
    import torch

    if not isinstance(state, Mapping):
        return f"it is a {type(state).__name__}, not a mapping"
    missing = [key for key in ("iteration", "optimizer", "scheduler", "scaler", "rng", "best_miou") if key not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    iteration = state["iteration"]
    if not (isinstance(iteration, int) and not isinstance(iteration, bool) and 0 <= iteration <= MAX_ITERATION):
        return f"its iteration {iteration!r} is not a whole number from 0 to {MAX_ITERATION}"
    if not (finite_number(state["best_miou"]) and -1.0 <= state["best_miou"] <= 1.0):
        return f"its best_miou {state['best_miou']!r} is not a number from -1 to 1"
    optimizer = state["optimizer"]
    if not (isinstance(optimizer, Mapping) and isinstance(optimizer.get("state"), Mapping)
            and isinstance(optimizer.get("param_groups"), list)
            and all(isinstance(group, Mapping) for group in optimizer["param_groups"])):
        return "its optimizer state is not an optimizer's state_dict (state, param_groups)"
    not_mappings = [key for key in ("scheduler", "scaler", "rng") if not isinstance(state[key], Mapping)]
    if not_mappings:
        return f"its {', '.join(not_mappings)} {'is' if len(not_mappings) == 1 else 'are'} not a mapping"
    generator = state["rng"].get("torch")
    if not (isinstance(generator, torch.Tensor) and generator.dtype == torch.uint8 and generator.dim() == 1):
        return "its rng has no torch generator state (a uint8 tensor)"
    if not isinstance(state.get("history", []), list):
        return f"its history is a {type(state['history']).__name__}, not a list"
    return None


register_part_check(TRAINING_STATE_PART, lambda checkpoint: checkpoint.training_state is not None,
                    lambda checkpoint: training_state_problem(checkpoint.training_state))
