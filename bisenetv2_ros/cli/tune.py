"""``bisenetv2 tune``: measure ``auto`` ahead of time (as ``bisenetv2 export --engine`` prebuilds engines).

Builds the Segmenter exactly as the node and ``bisenetv2 segment`` do, with backend and precision
``auto`` by default, for the frame size and batch given: the candidate paths are timed (quiet and
with one competing busy process), checked against fp32, and the decision is cached where the next
start finds it (``$BISENETV2_CACHE/engines``, or --engine-cache). Prints the table.

    bisenetv2 tune --frame-size 480x640
    bisenetv2 tune --weights my.pt --frame-size 720x1280 --batch 2 --again
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from .arguments import CliError, add_size, batch_int, complete, script_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, help="known name or checkpoint path (default: the packaged model)")
    parser.add_argument("--backend", default="auto", help="auto (default) or one backend to choose a precision for")
    parser.add_argument("--precision", default="auto", help="auto (default) or one precision to choose a backend for")
    add_size(parser, "--frame-size", "frame_size", help="camera frame size HxW (default: the network input size)")
    add_size(parser, "--input-size", "input_size", help="network input size HxW (default: the checkpoint's)")
    parser.add_argument("--batch", type=batch_int, default=1, help="frames per network call (default 1)")
    parser.add_argument("--calibration-images", default=None, metavar="FOLDER",
                        help="int8: folder of representative frames (default: the checkpoint's training frames)")
    parser.add_argument("--engine-cache", default=None, help="cache folder (default: $BISENETV2_CACHE/engines)")
    parser.add_argument("--again", action="store_true", help="measure even if a cached decision is up to date")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def run(args: argparse.Namespace) -> int:
    from ..inference.measured_auto import MODE_ENV
    from ..inference.segmenter import Segmenter

    if os.environ.get(MODE_ENV, "measure").strip().lower() == "rule":
        raise CliError(f"{MODE_ENV}=rule switches measuring off; unset it to tune")
    options = {"auto_remeasure": bool(args.again)}
    if args.calibration_images:
        options["calibration_images"] = args.calibration_images
    seg = Segmenter(args.weights, backend=args.backend, device="cpu", precision=args.precision,
                    input_size=complete(args.input_size, None, "--input-size"), engine_cache_dir=args.engine_cache,
                    backend_options=options, frame_size=complete(args.frame_size, None, "--frame-size"),
                    batch=args.batch)
    decision = seg.auto_decision
    if decision is None:
        raise CliError(f"nothing to measure: backend {args.backend!r} with precision {args.precision!r} leaves one "
                         f"path on this CPU ({seg.backend_name} {seg.precision})")
    if args.json:
        print(json.dumps({"backend": seg.backend_name, "precision": seg.precision, **vars(decision)}, indent=2))
    else:
        print("\n".join(decision.table_lines()))
        print(f"auto -> {decision.name} (measured {decision.measured_at}, {decision.measured_s} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return script_main(__doc__, "bisenetv2 tune", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
