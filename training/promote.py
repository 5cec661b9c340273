"""Promote a training checkpoint to the package's embedded default weights, if it beats them on unseen drives.

    python training/promote.py runs/camvid_drive/best.pt --root ../shared/data/camvid

Steps: export the checkpoint as an fp16 deploy file (what ships), evaluate that exact file and the
current default on drive_val (the drive-disjoint CamVid split) and on val through the deployed
pipeline, and replace bisenetv2_ros/weights/bisenetv2_camvid.pt only when the candidate's drive_val
mIoU is higher (``--force`` overrides). The shipped file stores both evaluations as metrics
(drive_val_miou, val_miou, per-class IoU), the int8 activation ranges measured on the training
frames (``inference/calibration_table.py``; numbers only, no frames ship) and the lineage of its
weights (``training/lineage.py``: the chain of runs -- config, iterations, seed -- through every warm
restart). The script then prints what
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
import shutil
import tempfile
from typing import Sequence

from bisenetv2_ros.cli.arguments import add_debug_flag, positive_int, run_script
from bisenetv2_ros.inference.calibration_store import calibrate_checkpoint_file
from bisenetv2_ros.inference.calibration_table import summary
from bisenetv2_ros.inference.int8 import training_calibration
from bisenetv2_ros.inference.ood_calibration import OODCalibrationError, calibrate_ood_file
from bisenetv2_ros.weights.checkpoint import load_checkpoint, save_checkpoint
from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, KNOWN_WEIGHTS
from training import evaluate
from training.export import evaluation_metrics, to_deploy
from training.lineage import LINEAGE_KEY, describe, lineage_of

REPO = Path(__file__).resolve().parents[1]
SELECTION_SPLIT = "drive_val"
REPORT_SPLITS = ("drive_val", "val")
KNOWN_WEIGHTS_FILE = REPO / "bisenetv2_ros" / "weights" / "known_weights.py"
# The default's entry in weights/known_weights.py; group 2 is its training resolution.
ENTRY_PATTERN = re.compile(r'(info=CheckpointInfo\(CAMVID, IMAGENET_NORMALIZATION, )(\(\d+, \d+\))(, "camvid"\))')


def evaluate_file(weights: str, root: str, split: str, folder: Path, threads: int | None) -> dict:
    output = folder / f"{Path(weights).stem}_{split}.json"
    argv = ["--weights", weights, "--dataset", "camvid", "--root", root, "--split", split, "--output", str(output)]
    evaluate.main(argv + (["--threads", str(threads)] if threads else []))
    return json.loads(output.read_text())


def entry_update(resolution: Sequence[int]) -> str | None:
    """The weights/known_weights.py change the new file needs, or None when the named entry already matches."""
    entry = KNOWN_WEIGHTS[DEFAULT_WEIGHTS]
    if tuple(entry.info.train_resolution or ()) == tuple(resolution):
        return None
    return (f"bisenetv2_ros/weights/known_weights.py, KNOWN_WEIGHTS['{DEFAULT_WEIGHTS}']: "
            f"info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, {tuple(resolution)}, \"camvid\") "
            f"(now {entry.info.train_resolution})")


def per_class_table(results: dict[str, dict]) -> list[str]:
    """Markdown rows as in the table of docs/training.md: split (frames) | mIoU | pixel acc. | IoU of each class, in %."""
    names = list(next(iter(results.values()))["per_class_iou"])
    lines = ["| split | mIoU | pixel acc. | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for split, result in results.items():
        ious = ["n/a" if v is None else f"{100 * v:.1f}" for v in result["per_class_iou"].values()]
        lines.append(f"| `{split}` ({result.get('frames', '?')}) | {100 * result['miou']:.1f} | "
                     f"{100 * result['pixel_accuracy']:.1f} | " + " | ".join(ious) + " |")
    return lines


def apply_entry_update(resolution: Sequence[int], path: Path = KNOWN_WEIGHTS_FILE) -> None:
    """Writes the new training resolution into the default's entry of weights/known_weights.py."""
    text = path.read_text()
    found = ENTRY_PATTERN.findall(text)
    if len(found) != 1:
        raise ValueError(f"{path}: found {len(found)} entries like 'info=CheckpointInfo(CAMVID, "
                         f"IMAGENET_NORMALIZATION, (H, W), \"camvid\")' instead of one; change the resolution by hand")
    height, width = (int(v) for v in resolution)
    path.write_text(ENTRY_PATTERN.sub(lambda m: f"{m.group(1)}({height}, {width}){m.group(3)}", text))


def promoted_ood_calibration(path: Path, dataset: str, root: str) -> str:
    """Stores the out-of-distribution calibration in the promoted file: references are the frames it
    trained on, the threshold comes from drive_val, recorded as seen in training unless it trained on
    drive_train only. Too few frames (a test's fake CamVid) is a line, not a failure."""
    held_out_unseen = dataset.lower() == "camvid:drive_train"
    try:
        return calibrate_ood_file(path, f"camvid:{SELECTION_SPLIT}", dataset if held_out_unseen else "camvid:train",
                                  seen_in_training=not held_out_unseen, dataset_root=root).summary()
    except OODCalibrationError as error:
        return f"not measured: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="training/promote.py", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="training checkpoint, e.g. runs/camvid_drive/best.pt")
    parser.add_argument("--root", default="../shared/data/camvid", help="CamVid SegNet folder")
    parser.add_argument("--output", default=str(REPO / "bisenetv2_ros" / "weights" / KNOWN_WEIGHTS[DEFAULT_WEIGHTS].file_name),
                        help="deploy file to write (default: the embedded default)")
    parser.add_argument("--baseline", default=DEFAULT_WEIGHTS, help="weights to beat (default: the current default)")
    parser.add_argument("--force", action="store_true", help="write even if the candidate does not beat the baseline")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--update-known-weights", action="store_true",
                        help="also write a changed resolution into the default's entry of weights/known_weights.py")
    parser.add_argument("--known-weights", type=Path, default=KNOWN_WEIGHTS_FILE, help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"--output {args.output} is the checkpoint to promote; the shipped file must be another one")

    checkpoint = load_checkpoint(args.checkpoint)
    lineage = lineage_of(checkpoint, Path(args.checkpoint).as_posix())  # before the default may be replaced
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        candidate_path = save_checkpoint(to_deploy(checkpoint), folder / "candidate.pt", half=True)
        baseline = evaluate_file(args.baseline, args.root, SELECTION_SPLIT, folder, args.threads)
        results = {split: evaluate_file(str(candidate_path), args.root, split, folder, args.threads)
                   for split in REPORT_SPLITS}
        new, old = results[SELECTION_SPLIT]["miou"], baseline["miou"]
        print(f"{SELECTION_SPLIT} mIoU: candidate {100 * new:.2f}% vs {args.baseline} {100 * old:.2f}%; "
              f"val mIoU: candidate {100 * results['val']['miou']:.2f}%")
        if new <= old and not args.force:
            print(f"not promoted: the candidate does not beat {args.baseline} on {SELECTION_SPLIT} "
                  f"(--force writes it anyway); nothing was written", file=sys.stderr)
            return 1
        metrics = {}
        for result in results.values():
            metrics.update(evaluation_metrics(result))
        notes = {"selected_by": f"{SELECTION_SPLIT} mIoU (CamVid drive 0001TP, never trained on)",
                 "source_checkpoint": Path(args.checkpoint).as_posix(), LINEAGE_KEY: json.dumps(lineage)}
        deploy = to_deploy(checkpoint, metrics, notes)
        written = save_checkpoint(deploy, folder / "final.pt", half=True)
        # int8 needs activation ranges; measured here on the training frames, so the shipped file
        # carries them and int8 works where no dataset is (the frames themselves never ship).
        table = calibrate_checkpoint_file(written, training_calibration(deploy.info.dataset, args.root),
                                          deploy.info.dataset)
        print(f"int8 calibration table: {summary(table)}")
        print(f"ood calibration: {promoted_ood_calibration(written, deploy.info.dataset, args.root)}")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, args.output)
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
    print("\n".join(per_class_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(run_script("training/promote.py", main))
