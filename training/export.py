"""Training checkpoint -> deployment checkpoint with its evaluation metrics; files written by ``bisenetv2 export``.

    python training/export.py runs/camvid/best.pt bisenetv2_ros/weights/bisenetv2_camvid.pt --half --metrics val.json
    python training/export.py best.pt model.pt --onnx model.onnx [--engine ENGINE_CACHE_DIR --frame-size 720x1280]

What this adds to ``bisenetv2 export``: the deployment checkpoint keeps the classes, normalisation,
training resolution and metrics (val mIoU, ...) of the training checkpoint; ``--metrics result.json``
(from training/evaluate.py) adds a full evaluation, ``--metric key=value`` single figures, ``--note
key=value`` provenance. The ONNX and engine flags, and the all-or-nothing writing, are the package's
(``bisenetv2_ros.cli.export``). Older flags still work with a note: ``--onnx-input-size H W`` (now
``--input-size HxW``), ``--tensorrt CACHE_DIR`` (now ``--engine``), ``--engine-precision`` (now ``--precision``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and `bisenetv2_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
from typing import Sequence

from bisenetv2_ros.cli import export as package_export
from bisenetv2_ros.cli.arguments import add_debug_flag, int_in_range, run_script
from bisenetv2_ros.conventions import size_argument
from bisenetv2_ros.weights.checkpoint import Checkpoint, load_checkpoint

PROG = "training/export.py"

LEGACY_FRAME_SIZE = (720, 1280)  # the engine frame size of the deprecated --tensorrt CACHE_DIR
# Provenance fields worth keeping in a deployed file (the full config stays in the training run).
KEPT_PROVENANCE = ("source", "command", "date", "iterations", "lineage")


def to_deploy(checkpoint: Checkpoint, metrics: dict[str, float] | None = None,
              provenance: dict[str, str] | None = None) -> Checkpoint:
    """A deploy checkpoint: booster heads and training state dropped, weights checked by a strict rebuild."""
    model = checkpoint.build_model(for_inference=True)  # strict load: fails loudly on any mismatch
    info = checkpoint.info
    merged_metrics = dict(info.metrics)
    merged_metrics.update(metrics or {})
    merged_provenance = {k: v for k, v in info.provenance.items() if k in KEPT_PROVENANCE}
    merged_provenance.update(provenance or {})
    info = dataclasses.replace(info, metrics=merged_metrics, provenance=merged_provenance)
    return Checkpoint.from_model(model, info, kind="deploy")


def evaluation_metrics(result: dict) -> dict[str, float]:
    """training/evaluate.py's JSON -> {SPLIT_miou, SPLIT_pixel_accuracy, SPLIT_iou/CLASS} (fractions)."""
    split = result.get("split", "val")
    metrics = {f"{split}_miou": float(result["miou"]), f"{split}_pixel_accuracy": float(result["pixel_accuracy"])}
    for name, value in result.get("per_class_iou", {}).items():
        if value is not None:
            metrics[f"{split}_iou/{name}"] = float(value)
    return metrics


class Deprecated(argparse.Action):
    """An old flag that still works: stores into the new flag's ``dest`` and says, once, what replaces it."""

    def __init__(self, option_strings, dest, replacement: str, convert=None, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement, self.convert = replacement, convert

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def main(argv: Sequence[str] | None = None) -> Path:
    """The command; errors are raised (``run`` turns the expected ones into one line)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a training checkpoint for deployment, with its evaluation metrics. The ONNX and "
                    "engine flags are those of `bisenetv2 export`, which writes the files.")
    parser.add_argument("checkpoint", help="training (or deploy) checkpoint, e.g. runs/camvid/best.pt")
    parser.add_argument("output", type=Path, help="deployment checkpoint to write (.pt)")
    parser.add_argument("--half", action="store_true", help="store weights as fp16 (half the size)")
    parser.add_argument("--metrics", action="append", default=[],
                        help="JSON from training/evaluate.py --output: its mIoU etc. are stored as "
                             "SPLIT_miou, SPLIT_iou/CLASS (repeatable, e.g. one per split)")
    parser.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE", help="add one metric")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="add a provenance entry")
    parser.add_argument("--resolution", type=size_argument, default=None, metavar="HxW",
                        help="store this network input size instead of the checkpoint's (the size frames are "
                             "resized to), e.g. after evaluate.py --input-size showed the same weights do better "
                             "at it; the old and new sizes are kept in the provenance")
    package_export.add_arguments(parser)
    parser.add_argument("--onnx-input-size", dest="input_size", type=int_in_range(1, 32768), nargs=2, metavar=("H", "W"),
                        action=Deprecated, replacement="--input-size HxW", convert=tuple, help=argparse.SUPPRESS)
    parser.add_argument("--tensorrt", dest="legacy_engine", type=Path, metavar="CACHE_DIR", action=Deprecated,
                        replacement="--engine CACHE_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--engine-precision", dest="precision", choices=("fp32", "fp16"), action=Deprecated,
                        replacement="--precision", help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.legacy_engine is not None:
        args.engine = args.legacy_engine
        args.frame_size = args.frame_size or LEGACY_FRAME_SIZE  # what --tensorrt built for by default
    request = package_export.request_from_args(args, output=args.output, half=args.half, command=PROG,
                                               source=args.checkpoint)
    request.check()  # bad settings and unsafe targets fail before the checkpoint is read
    checkpoint = load_checkpoint(args.checkpoint)
    metrics: dict[str, float] = {}
    for metrics_file in args.metrics:
        try:
            metrics.update(evaluation_metrics(json.loads(Path(metrics_file).read_text(encoding="utf-8"))))
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else repr(error)
            raise ValueError(f"--metrics {metrics_file} is not the JSON of training/evaluate.py --output "
                             f"({reason})") from None
    for item in args.metric:
        key, _, value = item.partition("=")
        try:
            metrics[key] = float(value)
        except ValueError:
            raise ValueError(f"--metric {item}: the value must be a number (KEY=VALUE)") from None
    notes = dict(item.partition("=")[::2] for item in args.note)
    if args.resolution is not None:
        old = "x".join(str(v) for v in checkpoint.info.train_resolution or ()) or "none"
        notes["resolution_changed"] = f"{old} -> {args.resolution[0]}x{args.resolution[1]} (same weights)"
    deploy = to_deploy(checkpoint, metrics, notes)
    if args.resolution is not None:  # figures measured at the old size do not hold at the new one
        deploy = dataclasses.replace(deploy, info=dataclasses.replace(
            deploy.info, train_resolution=tuple(args.resolution), metrics=metrics))
    result = package_export.export_checkpoint(deploy, request)
    size_mb = result.deploy.stat().st_size / 1e6
    print(f"wrote {result.deploy} ({size_mb:.1f} MB, {'fp16' if args.half else 'fp32'}, {len(deploy.info.classes)} "
          f"classes, resolution {deploy.info.train_resolution}, metrics {dict(deploy.info.metrics)})")
    for line in result.lines()[1:]:  # the ONNX model and the engine, if asked for
        print(line)
    return result.deploy


def run(argv: Sequence[str] | None = None) -> int:
    """The script's entry: ``main`` with expected errors as one line and exit status 1."""
    return run_script(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(run())
