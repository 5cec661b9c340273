"""Training checkpoint -> deployment checkpoint (no booster heads, optional fp16), ONNX, TensorRT.

    python training/export.py /work/runs/camvid_cpu/best.pt bisenetv2_ros/weights/bisenetv2_camvid.pt --half
    python training/export.py best.pt model.pt --onnx model.onnx [--tensorrt ENGINE_CACHE_DIR --frame-size 720x1280]

The deployment checkpoint keeps the classes, normalisation and training resolution of the training
checkpoint, and its metrics (val mIoU, ...); ``--metrics result.json`` (from training/evaluate.py)
replaces them with a full evaluation, ``--metric key=value`` adds single figures.
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

from bisenetv2_ros.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

# Provenance fields worth keeping in a deployed file (the full config stays in the training run).
KEPT_PROVENANCE = ("source", "command", "date", "iterations")


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


def export_onnx_file(deploy_path: Path, onnx_path: Path, input_size: Sequence[int] | None) -> None:
    try:
        from bisenetv2_ros import export as package_export
        export_onnx = package_export.export_onnx
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"ONNX export needs bisenetv2_ros.export.export_onnx, which is not available "
                         f"in this build ({error}); the deployment checkpoint {deploy_path} was written.")
    kwargs = {"input_size": tuple(input_size)} if input_size else {}
    export_onnx(str(deploy_path), str(onnx_path), **kwargs)


def build_engine(onnx_path: Path, cache_dir: Path, precision: str, frame_size: Sequence[int]) -> Path:
    try:
        from bisenetv2_ros import export as package_export
        build = package_export.build_tensorrt_engine
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"TensorRT export needs bisenetv2_ros.export.build_tensorrt_engine, which is not "
                         f"available in this build ({error}).")
    return build(str(onnx_path), str(cache_dir), precision=precision, frame_shape=(1, *frame_size))


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Export a training checkpoint for deployment.")
    parser.add_argument("checkpoint", help="training (or deploy) checkpoint, e.g. runs/camvid/best.pt")
    parser.add_argument("output", help="deployment checkpoint to write (.pt)")
    parser.add_argument("--half", action="store_true", help="store weights as fp16 (half the size)")
    parser.add_argument("--metrics", action="append", default=[],
                        help="JSON from training/evaluate.py --output: its mIoU etc. are stored as "
                             "SPLIT_miou, SPLIT_iou/CLASS (repeatable, e.g. one per split)")
    parser.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE", help="add one metric")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="add a provenance entry")
    parser.add_argument("--onnx", default=None, help="also export ONNX here")
    parser.add_argument("--onnx-input-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--tensorrt", default=None, metavar="CACHE_DIR",
                        help="also build a TensorRT engine into this engine cache folder (needs --onnx and a GPU)")
    parser.add_argument("--engine-precision", default="fp16", choices=("fp32", "fp16"),
                        help="TensorRT engine precision (int8 calibration: bisenetv2_ros.export)")
    parser.add_argument("--frame-size", default="720x1280", help="camera frame HxW the engine is built for")
    args = parser.parse_args(argv)

    checkpoint = load_checkpoint(args.checkpoint)
    metrics: dict[str, float] = {}
    for metrics_file in args.metrics:
        metrics.update(evaluation_metrics(json.loads(Path(metrics_file).read_text())))
    for item in args.metric:
        key, _, value = item.partition("=")
        metrics[key] = float(value)
    notes = dict(item.partition("=")[::2] for item in args.note)
    deploy = to_deploy(checkpoint, metrics, notes)
    path = save_checkpoint(deploy, args.output, half=args.half)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, {'fp16' if args.half else 'fp32'}, {len(deploy.info.classes)} classes, "
          f"resolution {deploy.info.train_resolution}, metrics {dict(deploy.info.metrics)})")
    if args.tensorrt and not args.onnx:
        raise SystemExit("--tensorrt needs --onnx (the engine is built from the ONNX file)")
    if args.onnx:
        export_onnx_file(path, Path(args.onnx), args.onnx_input_size)
        print(f"wrote {args.onnx}")
    if args.tensorrt:
        height, width = (int(v) for v in args.frame_size.lower().split("x"))
        engine = build_engine(Path(args.onnx), Path(args.tensorrt), args.engine_precision, (height, width))
        print(f"wrote {engine}")
    return path


if __name__ == "__main__":
    main()
