"""training/promote.py records lineage (training/lineage.py) and handles a change of resolution."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_drive_split import _fake_camvid

from bisenetv2_ros.classes import CAMVID
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights.checkpoint import (
    IMAGENET_NORMALIZATION,
    Checkpoint,
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from training.config import TrainConfig
from training.lineage import LINEAGE_KEY, PARENT_KEY, describe, lineage_of, weights_lineage
from training.promote import KNOWN_WEIGHTS_FILE, apply_entry_update
from training.promote import main as promote

REPO = Path(__file__).resolve().parents[1]


def _run_checkpoint(path: Path, seed: int, iterations: int, init_weights: str | None = None,
                    provenance: dict | None = None, resolution=(32, 32)) -> Path:
    """A tiny CamVid training checkpoint as Trainer writes it: config (seed, init_weights) in its state."""
    torch.manual_seed(seed)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=11, width_multiplier=0.25, head_channels=8, aux_head_channels=8))
    config = TrainConfig.from_dict({"run": {"seed": seed, "iterations": iterations, "init_weights": init_weights},
                                    "data": {"dataset": "camvid"}}).to_dict()
    info = CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, resolution, "camvid:drive_train",
                          provenance={"source": "training/train.py", "date": "2026-12-03T06:00:00+00:00",
                                      "command": f"python training/train.py # seed {seed}", **(provenance or {})})
    checkpoint = Checkpoint.from_model(model, info, kind="train",
                                       training_state={"iteration": iterations, "config": config})
    return save_checkpoint(checkpoint, path)


@pytest.fixture()
def camvid_root(tmp_path) -> Path:
    return _fake_camvid(tmp_path / "camvid")


def _promote(candidate: Path, root: Path, output: Path, *extra: str) -> int:
    return promote([str(candidate), "--root", str(root), "--output", str(output), "--baseline", "camvid",
                    "--force", *extra])


def _lineage(path: Path) -> list[dict]:
    return json.loads(load_checkpoint(path).info.provenance[LINEAGE_KEY])


def test_a_promoted_run_records_its_config_iterations_and_seed(camvid_root, tmp_path, capsys):
    candidate = _run_checkpoint(tmp_path / "first" / "best.pt", seed=3, iterations=5)
    shipped = tmp_path / "shipped" / "first.pt"
    assert _promote(candidate, camvid_root, shipped) == 0
    (entry,) = _lineage(shipped)
    assert (entry["checkpoint"], entry["iterations"], entry["seed"], entry["init_weights"]) == (
        candidate.as_posix(), 5, 3, None)
    assert entry["config"]["run"]["seed"] == 3 and entry["config"]["data"]["dataset"] == "camvid"
    assert entry["train_resolution"] == [32, 32] and entry["command"] == "python training/train.py # seed 3"
    out = capsys.readouterr().out
    assert f"lineage: {candidate.as_posix()} (5 it., seed 3)" in out
    table = out.split("per-class table for docs/training.md (IoU in %):\n")[1].splitlines()
    assert table[0] == "| split | mIoU | pixel acc. | " + " | ".join(CAMVID.names) + " |"
    assert table[1] == "|---" * 14 + "|"
    metrics = load_checkpoint(shipped).info.metrics
    for line, split in zip(table[2:4], ("drive_val", "val")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"`{split}` (2)" and len(cells) == 14  # the fake CamVid has 2 frames per split
        assert cells[1] == f"{100 * metrics[f'{split}_miou']:.1f}"
        assert cells[3 + 2] == (f"{100 * metrics[f'{split}_iou/pole']:.1f}" if f"{split}_iou/pole" in metrics else "n/a")
    # A later export of the shipped file keeps the lineage (KEPT_PROVENANCE).
    from training.export import to_deploy
    assert to_deploy(load_checkpoint(shipped)).info.provenance[LINEAGE_KEY] == \
        load_checkpoint(shipped).info.provenance[LINEAGE_KEY]


def test_a_warm_restart_carries_its_parents_lineage(camvid_root, tmp_path, capsys):
    first = _run_checkpoint(tmp_path / "first" / "best.pt", seed=3, iterations=5)
    parent = tmp_path / "shipped" / "parent.pt"
    assert _promote(first, camvid_root, parent) == 0
    # The run did not record its parent (as runs before parent_lineage): resolved at promotion.
    second = _run_checkpoint(tmp_path / "second" / "best.pt", seed=4, iterations=7, init_weights=str(parent))
    child = tmp_path / "shipped" / "child.pt"
    assert _promote(second, camvid_root, child) == 0
    chain = _lineage(child)
    assert [(e.get("checkpoint"), e["seed"], e["iterations"]) for e in chain] == [
        (first.as_posix(), 3, 5), (second.as_posix(), 4, 7)]
    assert chain[1]["init_weights"] == str(parent) and chain[0]["resolved_at"].startswith("promotion")
    assert describe(chain) in capsys.readouterr().out
    # Third generation, with the parent's chain recorded at its warm start: the named file may since
    # have been replaced (here: deleted), the recorded chain is used.
    recorded = json.dumps(_lineage(child))
    third = _run_checkpoint(tmp_path / "third" / "best.pt", seed=5, iterations=9, init_weights=str(child),
                            provenance={PARENT_KEY: recorded})
    child.unlink()
    grandchild = tmp_path / "shipped" / "grandchild.pt"
    assert _promote(third, camvid_root, grandchild) == 0
    assert [e["seed"] for e in _lineage(grandchild)] == [3, 4, 5]


def test_a_parent_without_lineage_or_missing_is_described_not_fatal(tmp_path):
    legacy = _run_checkpoint(tmp_path / "legacy.pt", seed=1, iterations=2000,
                             provenance={"iterations": "2000", "source_checkpoint": "runs/camvid_drive/best.pt"})
    described = weights_lineage(load_checkpoint(legacy), "camvid", legacy)
    assert len(described) == 1 and described[0]["weights"] == "camvid" and described[0]["iterations"] == "2000"
    assert described[0]["source_checkpoint"] == "runs/camvid_drive/best.pt" and len(described[0]["sha256"]) == 64
    assert "before lineage existed" in described[0]["note"]
    orphan = _run_checkpoint(tmp_path / "orphan.pt", seed=2, iterations=3, init_weights=str(tmp_path / "gone.pt"))
    chain = lineage_of(load_checkpoint(orphan), "orphan.pt")
    assert chain[0]["weights"] == str(tmp_path / "gone.pt") and "could not be opened at promotion" in chain[0]["note"]
    assert chain[1]["seed"] == 2


def test_a_new_resolution_is_printed_and_applied_to_the_known_weights_entry(camvid_root, tmp_path, capsys):
    candidate = _run_checkpoint(tmp_path / "best.pt", seed=0, iterations=1, resolution=(48, 64))
    entries = tmp_path / "known_weights.py"
    shutil.copyfile(KNOWN_WEIGHTS_FILE, entries)
    before = entries.read_text()
    assert _promote(candidate, camvid_root, tmp_path / "a.pt", "--known-weights", str(entries)) == 0
    out = capsys.readouterr().out
    assert "weights/known_weights.py: change bisenetv2_ros/weights/known_weights.py, KNOWN_WEIGHTS['camvid']: info=CheckpointInfo(" \
           "CAMVID, IMAGENET_NORMALIZATION, (48, 64)" in out and "--update-known-weights" in out
    assert entries.read_text() == before  # only printed without the flag
    assert _promote(candidate, camvid_root, tmp_path / "b.pt", "--known-weights", str(entries),
                    "--update-known-weights") == 0
    assert f"weights/known_weights.py: updated {entries}" in capsys.readouterr().out
    after = entries.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1 and 'info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (48, 64), "camvid")' in changed[0][1]
    assert load_checkpoint(tmp_path / "b.pt").info.train_resolution == (48, 64)
    broken = tmp_path / "broken.py"
    broken.write_text("KNOWN_WEIGHTS = {}\n")
    with pytest.raises(ValueError, match=r"broken.py: found 0 entries like .* change the resolution by hand"):
        apply_entry_update((48, 64), broken)
