"""Promote a training checkpoint to the package's embedded default weights, if it beats them on unseen drives.

    python training/promote.py runs/camvid_round3/best.pt --root ../shared/data/camvid
    python training/promote.py runs/camvid_round3_all/best.pt --drive-disjoint runs/camvid_round3/best.pt

Steps: export the checkpoint as an fp16 deploy file (what ships), evaluate that exact file on drive_val
(the drive-disjoint CamVid split, drive 0001TP) and on val through the deployed pipeline, and replace
bisenetv2_ros/weights/bisenetv2_camvid.pt only when the *unseen-drive* figure beats the current default's
(``--force`` overrides). Which drives a model trained on is read from its lineage, so a figure is called
"unseen" only when no run in its chain trained on that split's drives. A candidate trained on every
labelled frame (the paper's protocol, split ``all``) has no unseen drive left: it ships on the figure of
the drive-disjoint model that chose its recipe (``--drive-disjoint``), and its own drive_val figure is
stored and printed as "trained on it". The shipped file stores the evaluations as metrics
(drive_val_miou, val_miou, per-class IoU; unseen_drive_val_* from the model that never saw the drive),
the int8 activation ranges measured on the training frames (``inference/calibration_table.py``; numbers
only, no frames ship) and the lineage of its weights (``training/lineage.py``: the chain of runs --
config, iterations, seed -- through every warm restart). The script then prints what
must change in ``bisenetv2_ros/weights/known_weights.py`` (the ``camvid`` entry's resolution, when the
candidate runs at another one; ``--update-known-weights`` applies it) and the rows of the per-class table in docs/training.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import re
import tempfile
from typing import Sequence

from bisenetv2_ros.cli.arguments import add_debug_flag, run_script, threads_int
from bisenetv2_ros.fileio import write_atomic
from bisenetv2_ros.inference.calibration_store import calibrate_checkpoint_file
from bisenetv2_ros.inference.calibration_table import summary
from bisenetv2_ros.inference.int8 import training_calibration
from bisenetv2_ros.inference.ood_calibration import OODCalibrationError, calibrate_ood_file
from bisenetv2_ros.weights.checkpoint import load_checkpoint, save_checkpoint
from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, KNOWN_WEIGHTS
from training import evaluate
from training.datasets import DatasetError, camvid, camvid_split_drives
from training.export import evaluation_metrics, to_deploy
from training.lineage import LINEAGE_KEY, describe, lineage_of, weights_lineage

REPO = Path(__file__).resolve().parents[1]
SELECTION_SPLIT = "drive_val"
REPORT_SPLITS = ("drive_val", "val")
UNSEEN_PREFIX = "unseen_"  # metrics of the drive-disjoint model: unseen_drive_val_miou, unseen_drive_val_iou/pole
KNOWN_WEIGHTS_FILE = REPO / "bisenetv2_ros" / "weights" / "known_weights.py"
# The default's entry in weights/known_weights.py; group 2 is its training resolution.
ENTRY_PATTERN = re.compile(r'(info=CheckpointInfo\(CAMVID, IMAGENET_NORMALIZATION, )(\(\d+, \d+\))(, "camvid"\))')


def evaluate_file(weights: str, root: str, split: str, folder: Path, threads: int | None) -> dict:
    output = folder / f"{Path(weights).stem}_{split}.json"
    argv = ["--weights", weights, "--dataset", "camvid", "--root", root, "--split", split, "--output", str(output)]
    evaluate.main(argv + (["--threads", str(threads)] if threads else []))
    return json.loads(output.read_text())


def trained_drives(lineage: Sequence[dict], root: str) -> set[str] | None:
    """The CamVid drives any run of ``lineage`` trained on, or None when one run's data is not known
    (another dataset, or a split this root cannot resolve): then no figure may be called unseen."""
    drives: set[str] = set()
    for entry in lineage:
        name, _, split = str(entry.get("dataset") or "").partition(":")
        # The file's dataset and the run's config name the same split in every run train.py writes;
        # both are read so that a disagreement can only widen what counts as seen.
        splits = {split, ((entry.get("config") or {}).get("data") or {}).get("train_split")} - {None, ""}
        if name != "camvid" or not splits:
            return None
        try:
            for one in splits:
                drives |= camvid_split_drives(root, one)
        except (DatasetError, OSError):
            return None
    return drives


def split_unseen(lineage: Sequence[dict], root: str, split: str) -> bool:
    """True when no run in ``lineage`` trained on any drive of ``split``."""
    seen = trained_drives(lineage, root)
    return seen is not None and not seen & camvid_split_drives(root, split)


def baseline_unseen_miou(baseline: str, root: str, folder: Path, threads: int | None) -> float:
    """The baseline's unseen-drive figure: stored (unseen_drive_val_miou) by an earlier promotion of an
    all-data model, else measured now when its own lineage never trained on the selection split."""
    from bisenetv2_ros.weights.known_weights import open_weights

    opened = open_weights(baseline)
    stored = opened.checkpoint.info.metrics.get(f"{UNSEEN_PREFIX}{SELECTION_SPLIT}_miou")
    if stored is not None:
        return float(stored)
    if not split_unseen(weights_lineage(opened.checkpoint, opened.name, opened.path), root, SELECTION_SPLIT):
        raise ValueError(f"--baseline {baseline} trained on {SELECTION_SPLIT}'s drive and stores no "
                         f"{UNSEEN_PREFIX}{SELECTION_SPLIT}_miou: it has no unseen-drive figure to beat")
    return float(evaluate_file(baseline, root, SELECTION_SPLIT, folder, threads)["miou"])


def drive_disjoint_reference(path: str, candidate_lineage: Sequence[dict], root: str) -> list[dict]:
    """The lineage of --drive-disjoint, checked: it never trained on the selection split's drives."""
    lineage = weights_lineage(load_checkpoint(path), path, path)  # a training run or a shipped/exported file
    if not split_unseen(lineage, root, SELECTION_SPLIT):
        raise ValueError(f"--drive-disjoint {path} trained on {SELECTION_SPLIT}'s drive (or on data this root "
                         f"cannot resolve): it cannot give an unseen-drive figure")
    ancestors = {entry.get("checkpoint") for entry in candidate_lineage}
    if lineage[-1].get("checkpoint") not in ancestors:
        print(f"note: the candidate was not warm-started from --drive-disjoint {path} (its lineage: "
              f"{describe(list(candidate_lineage))})", file=sys.stderr)
    return lineage


def split_label(unseen: bool) -> str:
    return "unseen drive" if unseen else "trained on it: not an unseen-drive figure"


def entry_update(resolution: Sequence[int]) -> str | None:
    """The weights/known_weights.py change the new file needs, or None when the named entry already matches."""
    entry = KNOWN_WEIGHTS[DEFAULT_WEIGHTS]
    if tuple(entry.info.train_resolution or ()) == tuple(resolution):
        return None
    return (f"bisenetv2_ros/weights/known_weights.py, KNOWN_WEIGHTS['{DEFAULT_WEIGHTS}']: "
            f"info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, {tuple(resolution)}, \"camvid\") "
            f"(now {entry.info.train_resolution})")


def per_class_table(results: dict[str, dict], notes: dict[str, str] | None = None) -> list[str]:
    """Markdown rows as in the table of docs/training.md: split (frames[, note]) | mIoU | pixel acc. | IoU of
    each class, in %. ``results`` is keyed by row name; ``notes`` adds a word to a row's first cell."""
    names = list(next(iter(results.values()))["per_class_iou"])
    lines = ["| split | mIoU | pixel acc. | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for row, result in results.items():
        ious = ["n/a" if v is None else f"{100 * v:.1f}" for v in result["per_class_iou"].values()]
        note = (notes or {}).get(row)
        split = result.get("split", row)
        lines.append(f"| `{split}` ({result.get('frames', '?')}{', ' + note if note else ''}) | "
                     f"{100 * result['miou']:.1f} | {100 * result['pixel_accuracy']:.1f} | " + " | ".join(ious) + " |")
    return lines


def apply_entry_update(resolution: Sequence[int], path: Path = KNOWN_WEIGHTS_FILE) -> None:
    """Writes the new training resolution into the default's entry of weights/known_weights.py."""
    text = path.read_text()
    found = ENTRY_PATTERN.findall(text)
    if len(found) != 1:
        raise ValueError(f"{path}: found {len(found)} entries like 'info=CheckpointInfo(CAMVID, "
                         f"IMAGENET_NORMALIZATION, (H, W), \"camvid\")' instead of one; change the resolution by hand")
    height, width = (int(v) for v in resolution)
    write_atomic(path, ENTRY_PATTERN.sub(lambda m: f"{m.group(1)}({height}, {width}){m.group(3)}", text).encode())


def interleaved_frames(root: str, split: str, folder: Path) -> tuple[Path, Path]:
    """Two disjoint folders of links to a CamVid split's frames, spread over all its drives: every 6th
    frame from the first (references) and every 6th from the fourth (held-out)."""
    frames = [sample.image for sample in camvid(root, split).samples]
    # the folders' names are what the stored calibration records as its frames
    references, held_out = folder / f"camvid {split} frames 0, 6, 12, ...", folder / f"camvid {split} frames 3, 9, 15, ..."
    references.mkdir(), held_out.mkdir()
    for index, frame in enumerate(frames):
        if index % 6 in (0, 3):
            ((references if index % 6 == 0 else held_out) / frame.name).symlink_to(frame.resolve())
    return references, held_out


def promoted_ood_calibration(path: Path, dataset: str, root: str, held_out_unseen: bool, folder: Path) -> str:
    """Stores the out-of-distribution calibration in the promoted file. A model that never trained on
    drive_val's drive: references are its training frames, the threshold comes from drive_val (unseen).
    A model that trained on every drive: references and threshold from disjoint frames of all drives
    (recorded as seen in training), since one held-out drive alone (drive_val is dusk) made every
    daytime frame an alarm. Too few frames (a test's fake CamVid) is a line, not a failure."""
    try:
        if held_out_unseen:
            calibration = calibrate_ood_file(path, f"camvid:{SELECTION_SPLIT}", dataset, dataset_root=root)
        else:
            references, held_out = interleaved_frames(root, dataset.partition(":")[2], folder)
            calibration = calibrate_ood_file(path, held_out, references, seen_in_training=True)
        return calibration.summary()
    except (OODCalibrationError, DatasetError) as error:
        return f"not measured: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="training/promote.py", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="training checkpoint, e.g. runs/camvid_drive/best.pt")
    parser.add_argument("--root", default="../shared/data/camvid", help="CamVid SegNet folder")
    parser.add_argument("--output", default=str(REPO / "bisenetv2_ros" / "weights" / KNOWN_WEIGHTS[DEFAULT_WEIGHTS].file_name),
                        help="deploy file to write (default: the embedded default)")
    parser.add_argument("--baseline", default=DEFAULT_WEIGHTS, help="weights to beat (default: the current default)")
    parser.add_argument("--drive-disjoint", default=None, metavar="CHECKPOINT",
                        help="for a candidate trained on drive_val's drive (e.g. on every labelled frame): the "
                             "drive-disjoint model whose unseen-drive figure decides and is stored beside its own")
    parser.add_argument("--force", action="store_true", help="write even if the candidate does not beat the baseline")
    parser.add_argument("--threads", type=threads_int, default=None)
    parser.add_argument("--update-known-weights", action="store_true",
                        help="also write a changed resolution into the default's entry of weights/known_weights.py")
    parser.add_argument("--known-weights", type=Path, default=KNOWN_WEIGHTS_FILE, help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"--output {args.output} is the checkpoint to promote; the shipped file must be another one")

    checkpoint = load_checkpoint(args.checkpoint)
    lineage = lineage_of(checkpoint, Path(args.checkpoint).as_posix())  # before the default may be replaced
    unseen = {split: split_unseen(lineage, args.root, split) for split in REPORT_SPLITS}
    if unseen[SELECTION_SPLIT] and args.drive_disjoint:
        raise ValueError(f"--drive-disjoint is for a candidate that trained on {SELECTION_SPLIT}'s drive; "
                         f"{args.checkpoint} never did, so its own {SELECTION_SPLIT} figure decides")
    if not unseen[SELECTION_SPLIT] and not args.drive_disjoint:
        raise ValueError(f"{args.checkpoint} trained on {SELECTION_SPLIT}'s drive (lineage: {describe(lineage)}), "
                         f"so its {SELECTION_SPLIT} figure is not an unseen-drive result; give --drive-disjoint "
                         f"RUN/best.pt, the model that never saw that drive and chose the recipe")
    reference = drive_disjoint_reference(args.drive_disjoint, lineage, args.root) if args.drive_disjoint else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        candidate_path = save_checkpoint(to_deploy(checkpoint), folder / "candidate.pt", half=True)
        old = baseline_unseen_miou(args.baseline, args.root, folder, args.threads)
        results = {split: evaluate_file(str(candidate_path), args.root, split, folder, args.threads)
                   for split in REPORT_SPLITS}
        if reference is None:
            unseen_result = results[SELECTION_SPLIT]
        else:
            reference_path = save_checkpoint(to_deploy(load_checkpoint(args.drive_disjoint)),
                                             folder / "drive_disjoint.pt", half=True)
            unseen_result = evaluate_file(str(reference_path), args.root, SELECTION_SPLIT, folder, args.threads)
            print(f"{SELECTION_SPLIT} mIoU of the drive-disjoint model {args.drive_disjoint}: "
                  f"{100 * unseen_result['miou']:.2f}% ({split_label(True)})")
        new = unseen_result["miou"]
        for split, result in results.items():
            print(f"{split} mIoU: candidate {100 * result['miou']:.2f}% ({split_label(unseen[split])})")
        print(f"unseen-drive {SELECTION_SPLIT} mIoU: {100 * new:.2f}% vs {args.baseline} {100 * old:.2f}%")
        if new <= old and not args.force:
            print(f"not promoted: the unseen-drive figure does not beat {args.baseline} on {SELECTION_SPLIT} "
                  f"(--force writes it anyway); nothing was written", file=sys.stderr)
            return 1
        metrics = {}
        for result in results.values():
            metrics.update(evaluation_metrics(result))
        metrics.update({UNSEEN_PREFIX + key: value for key, value in evaluation_metrics(unseen_result).items()})
        seen = trained_drives(lineage, args.root)
        notes = {"selected_by": (f"{SELECTION_SPLIT} mIoU (CamVid drive 0001TP, never trained on)" if reference is None
                                 else f"{SELECTION_SPLIT} mIoU of the drive-disjoint model {args.drive_disjoint} "
                                      f"(never trained on drive 0001TP); this model trained on it"),
                 "trained_on_drives": ", ".join(sorted(seen)) if seen is not None else "unknown",
                 "splits_trained_on": ", ".join(split for split in REPORT_SPLITS if not unseen[split]) or "none",
                 "source_checkpoint": Path(args.checkpoint).as_posix(), LINEAGE_KEY: json.dumps(lineage)}
        if reference is not None:
            notes["drive_disjoint_lineage"] = json.dumps(reference)
        deploy = to_deploy(checkpoint, metrics, notes)
        written = save_checkpoint(deploy, folder / "final.pt", half=True)
        # int8 needs activation ranges; measured here on the training frames, so the shipped file
        # carries them and int8 works where no dataset is (the frames themselves never ship).
        table = calibrate_checkpoint_file(written, training_calibration(deploy.info.dataset, args.root),
                                          deploy.info.dataset)
        print(f"int8 calibration table: {summary(table)}")
        ood = promoted_ood_calibration(written, deploy.info.dataset, args.root, unseen[SELECTION_SPLIT],
                                       Path(tempfile.mkdtemp(dir=folder)))
        print(f"ood calibration: {ood}")
        write_atomic(args.output, written.read_bytes())  # a disk that fills leaves the old file, not half a new one
    print(f"wrote {args.output} (resolution {deploy.info.train_resolution})")
    print(f"lineage: {describe(lineage)}")
    change = entry_update(deploy.info.train_resolution)
    if change and args.update_known_weights:
        apply_entry_update(deploy.info.train_resolution, args.known_weights)
        print(f"weights/known_weights.py: updated {args.known_weights}: {change}")
    else:
        print("weights/known_weights.py: " + (f"change {change} (or rerun with --update-known-weights)" if change
                                      else "the named entry already matches"))
    print("per-class table for docs/training.md (IoU in %):")
    rows = dict(results)
    row_notes = {split: "trained on it" for split in REPORT_SPLITS if not unseen[split]}
    if args.drive_disjoint:
        rows["drive-disjoint model"] = unseen_result
        row_notes["drive-disjoint model"] = "drive-disjoint model, never trained on it"
    print("\n".join(per_class_table(rows, row_notes)))
    return 0


if __name__ == "__main__":
    sys.exit(run_script("training/promote.py", main))
