"""``bisenetv2 calibrate-ood``: measure the out-of-distribution threshold of a checkpoint and store it there.

    bisenetv2 calibrate-ood my_weights.pt frames_of_my_cameras/
    bisenetv2 calibrate-ood my_weights.pt held_out/ --references training_frames/
    bisenetv2 calibrate-ood camvid_drive_train.pt              # weights of a known split: its held-out drive
    bisenetv2 calibrate-ood final.pt camvid:drive_val --references camvid:train --seen-in-training

References are frames the weights trained on (default: the weights' known training frames, else every
other frame of FRAMES_DIR); the threshold is measured on FRAMES_DIR, frames of drives the weights never
saw (docs/node.md#out-of-distribution-frames). The checkpoint file is rewritten in place with the
calibration in its info; every other entry stays as it was.
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from .arguments import script_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="checkpoint file (bisenetv2_ros format) to calibrate; rewritten in place")
    parser.add_argument("frames", nargs="?", default=None, metavar="FRAMES_DIR",
                        help="held-out frames of your cameras, or a known set such as camvid:drive_val (default: the "
                        "weights' known held-out split)")
    parser.add_argument("--references", default=None, metavar="DIR",
                        help="frames the weights trained on, a folder or a known set (default: the weights' known "
                        "training frames, else every other frame of FRAMES_DIR)")
    parser.add_argument("--dataset-root", default=None, metavar="DIR", help="where known sets live (default: "
                        "../shared/data/<dataset> beside the repository)")
    parser.add_argument("--split", default=None, help="name of the held-out frames in the record (default: folder name)")
    parser.add_argument("--seen-in-training", action="store_true",
                        help="record that the weights trained on FRAMES_DIR (the threshold is then optimistic)")
    parser.add_argument("--json", action="store_true", help="print the stored calibration's summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ..inference.ood_calibration import calibrate_ood_file

    calibration = calibrate_ood_file(args.weights, args.frames, args.references, args.split, args.seen_in_training,
                                     args.dataset_root)
    if args.json:
        print(json.dumps({"threshold": calibration.threshold, "scales": dict(calibration.scales),
                          "references_from": dict(calibration.references_from),
                          "measured_on": dict(calibration.measured_on)}, indent=2))
    else:
        print(f"ood calibration stored in {args.weights}: {calibration.summary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return script_main(__doc__, "bisenetv2 calibrate-ood", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
