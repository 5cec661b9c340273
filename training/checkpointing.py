"""A training run's checkpoints: what latest.pt and best.pt hold (kind='train': weights plus the full
training state), and the rules for continuing from them: ``--resume`` keeps the run's model and
schedule and restores every RNG; ``run.init_weights`` (warm restart) copies weights only and records
the parent's lineage. Which file is written when (best.pt on a better validation mIoU) is the loop's
rule, in train.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bisenetv2_ros.classes import ClassSet
from bisenetv2_ros.weights.checkpoint_parts import TRAINING_STATE_PART, part_problem
from bisenetv2_ros.weights.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    load_state_dict_strict,
)
from bisenetv2_ros.weights.known_weights import open_weights
from training.config import TrainConfig
from training.lineage import PARENT_KEY, weights_lineage
from training.run_setup import dataset_normalization, seed_everything

# --------------------------------------------------------------------------------------------
# RNG and schedule state


def rng_state() -> dict[str, Any]:
    """Every RNG state as plain containers (checkpoints load with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Settings that define the learning-rate schedule and the data stream: a resumed run must keep them.
SCHEDULE_KEYS = (("run", "iterations"), ("run", "batch_size"), ("run", "seed"), ("optim", "lr"),
                 ("optim", "poly_power"), ("optim", "warmup_iters"), ("optim", "warmup_ratio"))


def schedule_of(config: TrainConfig) -> dict[str, Any]:
    """{'section.key': value} of the schedule settings (what the lr lambda and the sampler were built from)."""
    values = config.to_dict()
    return {f"{section}.{key}": values[section][key] for section, key in SCHEDULE_KEYS}


def schedule_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'section.key: saved -> current' for every schedule setting a resume would change."""
    return [f"{key}: {saved[key]} -> {value}" for key, value in current.items() if key in saved and saved[key] != value]


# --------------------------------------------------------------------------------------------
# Writing


@dataclass
class LoopState:
    """The loop's own state a train checkpoint carries besides weights, optimizer, scheduler and scaler."""

    iteration: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one {'iteration', 'val_miou'} per validation
    parent_lineage: str | None = None  # JSON; set by a warm start or a resume


def checkpoint_info(config: TrainConfig, classes: ClassSet, command: str, loop: LoopState,
                    metrics: dict[str, float]) -> CheckpointInfo:
    data = config.data
    return CheckpointInfo(
        classes=classes, normalization=dataset_normalization(config),
        train_resolution=tuple(data.eval_size), dataset=f"{data.dataset}:{data.train_split}",
        metrics=metrics,
        provenance={"source": "training/train.py", "command": command,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "iterations": str(loop.iteration), "config": json.dumps(config.to_dict()),
                    **({PARENT_KEY: loop.parent_lineage} if loop.parent_lineage else {})})


def training_state(config: TrainConfig, schedule: dict[str, Any], loop: LoopState,
                   optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """Everything ``--resume`` needs to continue exactly (``schedule``: ``schedule_of`` the run as built)."""
    return {"iteration": loop.iteration, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "sampler": {"seed": config.run.seed, "next_iteration": loop.iteration},
            "best_miou": loop.best_miou, "history": loop.history, "config": config.to_dict(),
            "schedule": schedule}


# --------------------------------------------------------------------------------------------
# Continuing


def resume_latest(out_dir: Path, config: TrainConfig, schedule: dict[str, Any], model: nn.Module,
                  optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                  rank: int) -> tuple[LoopState, dict[str, Any] | None]:
    """Load out_dir/latest.pt into model, optimizer, scheduler and scaler; refuses one whose model or
    schedule differs from this run's. Without latest.pt: a fresh start that still has to beat best.pt.
    Returns the run's loop state and, on rank 0, the saved RNG state to apply once the loader is built."""
    resumed = LoopState()
    path = out_dir / "latest.pt"
    if not path.is_file():
        best = out_dir / "best.pt"
        if best.is_file():  # a later best.pt must beat the one there
            resumed.best_miou = float(load_checkpoint(best).info.metrics.get("val_miou", -1.0))
        print(f"--resume: no {path} yet, starting from scratch", flush=True)
        return resumed, None
    checkpoint = load_checkpoint(path)
    state = checkpoint.training_state
    if not state:
        raise ValueError(f"{path} holds no training state; cannot resume from it")
    problem = part_problem(checkpoint, TRAINING_STATE_PART) or (
        f"its iteration {state['iteration']} is beyond run.iterations {schedule['run.iterations']}"
        if state["iteration"] > schedule["run.iterations"] else None)
    if problem:
        raise ValueError(f"--resume: the training state in {path} is unusable: {problem}; resume from an earlier "
                         "checkpoint of the run, or start a new run in another --out-dir")
    saved, now = checkpoint.config.to_dict(), model.config.to_dict()
    changed = [f"model.{k}: {saved.get(k)} -> {now.get(k)}" for k in sorted(set(saved) | set(now))
               if saved.get(k) != now.get(k)]
    if type(checkpoint.config) is not type(model.config):
        changed.insert(0, f"model.architecture: {checkpoint.architecture} -> {config.model.architecture}")
    if changed:
        raise ValueError(f"--resume would change the model of the run in {path} ({'; '.join(changed)}); keep "
                         "its model settings, or start a new run in another --out-dir")
    load_state_dict_strict(model, checkpoint.state_dict, source=f"--resume checkpoint {path}")
    try:  # the states' inner layout is torch's own; its errors name no file
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        current = rng_state()  # applied later, once the loader is built: tried here, then put back
        try:
            set_rng_state(state["rng"])
        finally:
            set_rng_state(current)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        raise ValueError(f"--resume: the optimizer, scheduler, scaler or RNG state in {path} does not fit this run "
                         f"({type(error).__name__}: {error}); start a new run in another --out-dir") from None
    saved = state.get("schedule")
    if saved is None and "config" in state:  # checkpoints written before the schedule was stored
        saved = {f"{section}.{key}": state["config"][section][key] for section, key in SCHEDULE_KEYS
                 if key in state["config"].get(section, {})}
    changes = schedule_changes(saved or {}, schedule)
    if changes:
        raise ValueError(f"--resume would change the schedule of the run in {path} ({'; '.join(changes)}); "
                         f"a continuation keeps the original schedule: drop the changed settings, or start "
                         f"a new run in another run.out_dir")
    resumed.iteration = int(state["iteration"])
    resumed.best_miou = float(state["best_miou"])
    resumed.parent_lineage = checkpoint.info.provenance.get(PARENT_KEY)
    resumed.history = list(state.get("history", []))
    print(f"resumed from {path} at iteration {resumed.iteration}", flush=True)
    # Per-rank RNG: rank 0's state is stored; other ranks reseed deterministically from it.
    if rank != 0:
        seed_everything(config.run.seed + rank + 7919 * resumed.iteration)
        return resumed, None
    return resumed, state["rng"]


def warm_start(model: nn.Module, weights: str, classes: ClassSet, announce: bool) -> str:
    """Warm restart: copy the network's weights from a named or saved checkpoint (same architecture,
    classes and sizes); booster heads a deploy file lacks keep their fresh initialisation. Returns the
    parent's lineage (JSON) for the provenance of this run's checkpoints."""
    opened = open_weights(weights)
    checkpoint = opened.checkpoint
    if list(checkpoint.info.classes.names) != list(classes.names):
        raise ValueError(f"run.init_weights {weights}: its classes {list(checkpoint.info.classes.names)} are not "
                         f"this dataset's {list(classes.names)}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    own = model.state_dict()
    # Checked before loading: load_state_dict(strict=False) still raises on a shape mismatch, with
    # hundreds of lines; one line naming the first differing tensors says more.
    bad = ([k for k in own if k not in state and not k.startswith("aux_heads.")]
           + [k for k, v in state.items() if k not in own or own[k].shape != v.shape])
    if bad:
        raise ValueError(f"run.init_weights {weights} does not fit this model: "
                         f"{len(bad)} keys differ, e.g. {bad[:5]}")
    missing, _ = model.load_state_dict(state, strict=False)
    # The parent's chain, recorded now: by promotion time the named file may have been replaced.
    lineage = json.dumps(weights_lineage(checkpoint, opened.name, opened.path))
    if announce:
        print(f"initialised from {weights} ({checkpoint.kind}, {len(state)} tensors"
              f"{', booster heads from scratch' if missing else ''})", flush=True)
    return lineage
