"""Lineage of a model: the chain of training runs (config, iterations, seed) that produced its weights.

A campaign adds up across runs: each warm restart (``run.init_weights``) starts from the weights the
last one shipped. The shipped file's provenance carries the whole chain as JSON under ``lineage``,
oldest run first, so any default can be traced back to the runs (and their configs) it came from.

- ``Trainer`` records its parent's lineage (``parent_lineage`` in the run's checkpoints) when it
  warm-starts, so the chain stays right even after the parent file is replaced by a promotion;
- ``promote.py`` appends the promoted run (``lineage_of``) and stores the chain in the shipped file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bisenetv2_ros.fileio import file_sha256
from bisenetv2_ros.weights.checkpoint import Checkpoint

LINEAGE_KEY = "lineage"
PARENT_KEY = "parent_lineage"


def weights_lineage(checkpoint: Checkpoint, name: str, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The lineage stored in a weights file; for a training checkpoint, the chain ending with its run;
    for a file from before lineage was recorded, one entry describing it with what its provenance holds
    (command, iterations, date; no config or seed)."""
    provenance = checkpoint.info.provenance
    if LINEAGE_KEY in provenance:
        return json.loads(provenance[LINEAGE_KEY])
    if (checkpoint.training_state or {}).get("config") is not None:
        # A training checkpoint (a run's best.pt warm-started from directly): its run and its parents.
        return lineage_of(checkpoint, Path(path).as_posix() if path is not None else str(name))
    entry: dict[str, Any] = {"weights": str(name), "dataset": checkpoint.info.dataset,
                             "train_resolution": list(checkpoint.info.train_resolution or ())}
    for key in ("command", "iterations", "date", "source_checkpoint"):
        if key in provenance:
            entry[key] = provenance[key]
    if path is not None:
        entry["sha256"] = file_sha256(path)
    entry["note"] = "recorded before lineage existed: config and seed as in its command's config file"
    return [entry]


def run_record(checkpoint: Checkpoint, source: str) -> dict[str, Any]:
    """One training run: its config (``run.seed``, ``run.init_weights`` inside), iterations and date."""
    state = checkpoint.training_state or {}
    provenance = checkpoint.info.provenance
    config = state.get("config")
    if config is None and "config" in provenance:
        config = json.loads(provenance["config"])
    iterations = state.get("iteration", provenance.get("iterations"))
    run = (config or {}).get("run", {})
    record = {"checkpoint": source, "iterations": int(iterations) if iterations is not None else None,
              "seed": run.get("seed"), "init_weights": run.get("init_weights"), "dataset": checkpoint.info.dataset,
              "train_resolution": list(checkpoint.info.train_resolution or ()),
              "date": provenance.get("date"), "command": provenance.get("command"), "config": config}
    if config is None:  # an exported file or a foreign checkpoint: say what is missing rather than guess
        record["note"] = "no training config recorded in this checkpoint (an exported file?)"
    return record


def lineage_of(checkpoint: Checkpoint, source: str) -> list[dict[str, Any]]:
    """The chain that ends with this training checkpoint's run, oldest first.

    The parent's chain comes from the run's own record (``parent_lineage``, written at its warm start),
    else from opening ``run.init_weights`` now (runs from before that record existed); a parent that
    cannot be opened any more is named with the reason instead of failing the promotion.
    """
    record = run_record(checkpoint, source)
    parents: list[dict[str, Any]] = []
    if record["init_weights"]:
        stored = checkpoint.info.provenance.get(PARENT_KEY)
        if stored:
            parents = json.loads(stored)
        else:
            from bisenetv2_ros.weights.known_weights import open_weights

            try:
                opened = open_weights(record["init_weights"])
                parents = weights_lineage(opened.checkpoint, opened.name, opened.path)
                parents[-1].setdefault("resolved_at", "promotion (the run did not record its parent)")
            except Exception as error:  # noqa: BLE001 -- any unreadable parent: say so, keep promoting
                parents = [{"weights": record["init_weights"], "note": f"could not be opened at promotion: {error}"}]
    return parents + [record]


def describe(lineage: list[dict[str, Any]]) -> str:
    """'camvid (2000 it.) -> runs/x/best.pt (1600 it., seed 1)' for printing."""
    parts = []
    for entry in lineage:
        name = entry.get("checkpoint") or entry.get("weights") or "?"
        details = [f"{entry['iterations']} it." if entry.get("iterations") is not None else None,
                   f"seed {entry['seed']}" if entry.get("seed") is not None else None]
        parts.append(f"{name} ({', '.join(d for d in details if d) or 'no record'})")
    return " -> ".join(parts)
