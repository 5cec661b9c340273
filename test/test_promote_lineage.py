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
                    provenance: dict | None = None, resolution=(32, 32), train_split: str = "drive_train") -> Path:
    """A tiny CamVid training checkpoint as Trainer writes it: config (seed, init_weights) in its state."""
    torch.manual_seed(seed)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=11, width_multiplier=0.25, head_channels=8, aux_head_channels=8))
    config = TrainConfig.from_dict({"run": {"seed": seed, "iterations": iterations, "init_weights": init_weights},
                                    "data": {"dataset": "camvid", "train_split": train_split}}).to_dict()
    info = CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, resolution, f"camvid:{train_split}",
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
        # The fake CamVid has 2 frames per split; val is drive 0016E5, which drive_train holds.
        assert cells[0] == f"`{split}` (2{', trained on it' if split == 'val' else ''})" and len(cells) == 14
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
    run = _run_checkpoint(tmp_path / "run.pt", seed=1, iterations=2000,
                          provenance={"iterations": "2000", "source_checkpoint": "runs/camvid_drive/best.pt"})
    from training.export import to_deploy

    legacy = save_checkpoint(to_deploy(load_checkpoint(run), provenance={  # shipped, no lineage
        "source_checkpoint": "runs/camvid_drive/best.pt"}), tmp_path / "legacy.pt")
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


def test_a_model_trained_on_every_frame_ships_on_its_drive_disjoint_siblings_figure(camvid_root, tmp_path, capsys):
    sibling = _run_checkpoint(tmp_path / "drive" / "best.pt", seed=3, iterations=5)
    all_data = _run_checkpoint(tmp_path / "all" / "best.pt", seed=4, iterations=6, init_weights=str(sibling),
                               train_split="all")
    shipped = tmp_path / "shipped.pt"
    # Without the drive-disjoint model, its own drive_val figure would be called unseen: refused, nothing written.
    with pytest.raises(ValueError, match=r"trained on drive_val's drive .* give --drive-disjoint"):
        _promote(all_data, camvid_root, shipped)
    assert not shipped.exists()
    # A "drive-disjoint" model that saw drive_val is refused too.
    with pytest.raises(ValueError, match=r"--drive-disjoint .* trained on drive_val's drive"):
        _promote(all_data, camvid_root, shipped, "--drive-disjoint", str(all_data))
    # A drive-disjoint candidate needs no sibling: its own figure is unseen.
    with pytest.raises(ValueError, match=r"never did, so its own drive_val figure decides"):
        _promote(sibling, camvid_root, shipped, "--drive-disjoint", str(sibling))
    capsys.readouterr()
    assert _promote(all_data, camvid_root, shipped, "--drive-disjoint", str(sibling)) == 0
    out = capsys.readouterr().out
    assert "drive_val mIoU: candidate" in out and "(trained on it: not an unseen-drive figure)" in out
    assert "mIoU of the drive-disjoint model" in out and "(unseen drive)" in out
    info = load_checkpoint(shipped).info
    # The unseen figure is the sibling's, measured now; the candidate's own drive_val figure is kept beside it.
    sibling_alone = tmp_path / "sibling_shipped.pt"
    assert _promote(sibling, camvid_root, sibling_alone) == 0
    sibling_metrics = load_checkpoint(sibling_alone).info.metrics
    assert info.metrics["unseen_drive_val_miou"] == pytest.approx(sibling_metrics["drive_val_miou"])
    assert sibling_metrics["unseen_drive_val_miou"] == sibling_metrics["drive_val_miou"]
    assert "drive_val_miou" in info.metrics and info.dataset == "camvid:all"
    assert info.provenance["trained_on_drives"] == "0001TP, 0006R0, 0016E5"
    assert info.provenance["splits_trained_on"] == "drive_val, val"
    assert "this model trained on it" in info.provenance["selected_by"]
    assert json.loads(info.provenance["drive_disjoint_lineage"])[-1]["checkpoint"] == sibling.as_posix()
    assert [e["seed"] for e in _lineage(shipped)] == [3, 4]
    table = out.split("per-class table for docs/training.md (IoU in %):\n")[1].splitlines()
    assert table[2].startswith("| `drive_val` (2, trained on it) |")
    assert table[4].startswith("| `drive_val` (2, drive-disjoint model, never trained on it) |")


def test_the_gate_uses_a_baselines_stored_unseen_figure(camvid_root, tmp_path, capsys):
    """Once the default is an all-data model, its drive_val figure is not unseen: the gate reads the
    unseen_drive_val_miou it stores, and refuses a baseline that saw the drive and stores none."""
    sibling = _run_checkpoint(tmp_path / "drive" / "best.pt", seed=3, iterations=5)
    all_data = _run_checkpoint(tmp_path / "all" / "best.pt", seed=4, iterations=6, init_weights=str(sibling),
                               train_split="all")
    baseline = tmp_path / "baseline.pt"
    assert _promote(all_data, camvid_root, baseline, "--drive-disjoint", str(sibling)) == 0
    stored = load_checkpoint(baseline).info.metrics["unseen_drive_val_miou"]
    capsys.readouterr()
    # The sibling's own figure equals the stored one (the same file, evaluated alike): not better, not written.
    assert promote([str(sibling), "--root", str(camvid_root), "--output", str(tmp_path / "next.pt"),
                    "--baseline", str(baseline)]) == 1
    assert f"vs {baseline} {100 * stored:.2f}%" in capsys.readouterr().out and not (tmp_path / "next.pt").exists()
    # The same file without its stored unseen figure: no figure to beat.
    checkpoint = load_checkpoint(baseline)
    del checkpoint.info.metrics["unseen_drive_val_miou"]
    bare = save_checkpoint(checkpoint, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"--baseline .*bare.pt trained on drive_val's drive and stores no"):
        promote([str(sibling), "--root", str(camvid_root), "--output", str(tmp_path / "x.pt"), "--baseline", str(bare)])


def test_the_all_split_holds_every_labelled_frame(camvid_root):
    from training.datasets import camvid, camvid_split_drives

    everything = camvid(camvid_root, "all")
    assert len(everything) == 6 and everything.name == "camvid/all"
    assert camvid_split_drives(camvid_root, "all") == {"0001TP", "0006R0", "0016E5"}
    assert camvid_split_drives(camvid_root, "val") == {"0016E5"}


def test_an_all_data_model_is_ood_calibrated_on_disjoint_frames_of_every_drive(camvid_root, tmp_path):
    """With no unseen drive left, the OOD threshold comes from every drive (drive_val alone is dusk), from
    frames disjoint from the references."""
    from training.promote import interleaved_frames

    (tmp_path / "links").mkdir()
    references, held_out = interleaved_frames(str(camvid_root), "all", tmp_path / "links")
    ordered = sorted(p.name for folder in ("train", "val") for p in (camvid_root / folder).iterdir())
    assert [p.name for p in references.iterdir()] == [ordered[0]]
    assert [p.name for p in held_out.iterdir()] == [ordered[3]]
    assert (held_out / ordered[3]).resolve().parent.name in ("train", "val")
