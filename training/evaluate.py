"""Exact mIoU evaluation: confusion matrix (np.bincount), per-class IoU, pixel accuracy.

``--protocol mmseg|coincheung`` runs that publisher's test pipeline instead (``training/protocols.py``), to
check an imported checkpoint against its published mIoU; ``--protocol paper`` the project pipeline at the
paper's resolution. The default (``project``) is described here:

The project protocol (the paper's, Sec. 5, at the checkpoint's resolution): each full-resolution frame
is resized to the model resolution and the logits are upsampled straight back to the full resolution -- exactly what
``bisenetv2_ros.inference.segmenter.Segmenter`` does, which every evaluation here goes through. Flip and
multi-scale testing (``--tta``, ``--flip``, ``--scales``) run ``bisenetv2_ros.inference.tta`` on the torch
backend, as ``bisenetv2 segment --tta`` does; ``predict_logits`` (validation during training) uses the
same code on the training model.

    python training/evaluate.py --weights camvid --dataset camvid --root ../shared/data/camvid --split val
    python training/evaluate.py --weights mmseg-cityscapes --dataset cityscapes --root /data/cityscapes --protocol mmseg
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

import numpy as np
import torch

from bisenetv2_ros.classes import IGNORE_INDEX
from bisenetv2_ros.cli.arguments import (
    add_debug_flag,
    add_size_accepting_two_numbers,
    positive_float,
    positive_int,
    run_script,
    threads_int,
)
from bisenetv2_ros.fileio import write_atomic
from bisenetv2_ros.inference.fused import FusedSegmentation
from bisenetv2_ros.inference.tta import DEFAULT_TTA_SCALES, TTASettings, tta_scores
from bisenetv2_ros.output_safety import check_output, record_file
from bisenetv2_ros.weights.checkpoint import Normalization
from training.protocols import COINCHEUNG_MODES, PROTOCOLS, choose_protocol, publisher_miou, publisher_predictor

DATASET_KINDS = ("cityscapes", "camvid", "folder", "coco-stuff", "ade20k")
PROTOCOL_DATASETS = {"coco-stuff": "coco-stuff164k"}  # --dataset -> the dataset names of the publishers' configs

PROG = "training/evaluate.py"


class ConfusionMatrix:
    """rows = ground truth, columns = prediction; pixels labelled IGNORE_INDEX are skipped."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        prediction = np.asarray(prediction).astype(np.int64).ravel()
        target = np.asarray(target).astype(np.int64).ravel()
        if prediction.shape != target.shape:
            raise ValueError(f"prediction and target differ in size: {prediction.size} vs {target.size}")
        valid = target != IGNORE_INDEX
        bad = valid & ((target < 0) | (target >= self.num_classes))
        if bad.any():
            raise ValueError(f"target holds class ids {sorted(set(target[bad].tolist()))[:10]} outside 0..{self.num_classes - 1}")
        n = self.num_classes
        self.matrix += np.bincount(n * target[valid] + prediction[valid], minlength=n * n)[: n * n].reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")

    def summary(self, class_names: Sequence[str]) -> dict:
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, self.iou())},
            "pixels": int(self.matrix.sum()),
        }


def format_table(summary: dict) -> str:
    lines = [f"{'class':<16} {'IoU':>7}"]
    for name, value in summary["per_class_iou"].items():
        lines.append(f"{name:<16} {'   n/a' if value is None else f'{100 * value:6.2f}%'}")
    lines.append(f"{'mIoU':<16} {100 * summary['miou']:6.2f}%")
    lines.append(f"{'pixel accuracy':<16} {100 * summary['pixel_accuracy']:6.2f}%")
    return "\n".join(lines)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, frames: np.ndarray, input_size: Sequence[int],
                   normalization: Normalization, flip: bool = False, scales: Sequence[float] = (1.0,),
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """NxHxWx3 uint8 RGB frames -> N x C x H x W scores at the frame resolution (eval-mode ``model``).

    Same pre-processing as Segmenter; one view gives its logits, flip / several scales the mean softmax
    (``bisenetv2_ros.inference.tta.tta_scores``, the implementation ``segment --tta`` runs too).
    """
    fused = FusedSegmentation(model, normalization, tuple(input_size), "rgb").to(device)
    frames = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return tta_scores(fused, frames, TTASettings(tuple(scales), flip))


def evaluate_model(model: torch.nn.Module, dataset, input_size: Sequence[int], normalization: Normalization,
                   flip: bool = False, scales: Sequence[float] = (1.0,), limit: int | None = None,
                   device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Confusion-matrix metrics of ``model`` (eval mode) on a dataset yielding (image, label) arrays."""
    was_training = model.training
    model.eval()

    def predict(image):
        scores = predict_logits(model, image[None], input_size, normalization, flip, scales, device)
        return scores.argmax(1)[0].cpu().numpy()

    try:
        return _evaluate(dataset, predict, limit, progress)
    finally:
        model.train(was_training)


def evaluate_segmenter(segmenter, dataset, limit: int | None = None, progress: bool = False,
                       reference=None) -> dict:
    """The plain protocol through the deployed pipeline (any backend).

    reference: a second Segmenter (e.g. fp32 beside an int8 one); the result then also holds
    ``agreement_with_reference``, the fraction of all pixels whose labels are identical, and the
    reference's own metrics under ``reference``.
    """
    if reference is None:
        return _evaluate(dataset, lambda image: segmenter.segment(image, channel_order="rgb"), limit, progress)
    counts = {"equal": 0, "total": 0}
    reference_matrix = ConfusionMatrix(len(dataset.classes))

    def predict(image, label):
        labels = segmenter.segment(image, channel_order="rgb")
        expected = reference.segment(image, channel_order="rgb")
        counts["equal"] += int((labels == expected).sum())
        counts["total"] += labels.size
        reference_matrix.update(expected, label)
        return labels

    result = _evaluate(dataset, predict, limit, progress, with_label=True)
    result["agreement_with_reference"] = counts["equal"] / max(1, counts["total"])
    result["reference"] = {"precision": reference.precision, "backend": reference.backend_name,
                           **reference_matrix.summary(dataset.classes.names)}
    return result


def _evaluate(dataset, predict, limit: int | None, progress: bool, with_label: bool = False,
              matrix: ConfusionMatrix | None = None) -> dict:
    """Accumulates one confusion matrix (``matrix``, else a new one) over the dataset;
    ``predict(image) -> labels`` (``predict(image, label)`` with ``with_label``)."""
    matrix = matrix or ConfusionMatrix(len(dataset.classes))
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="evaluate", dynamic_ncols=True)
    for i in indices:
        image, label = dataset[i]
        matrix.update(predict(image, label) if with_label else predict(image), label)
    return matrix.summary(dataset.classes.names)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=PROG, description="Exact mIoU of a checkpoint on a dataset split.")
    parser.add_argument("--weights", required=True, help="checkpoint path or known weights name")
    parser.add_argument("--dataset", choices=DATASET_KINDS, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="val",
                        help="dataset split; CamVid also has the drive-disjoint drive_train / drive_val "
                             "(datasets.CAMVID_DRIVE_SPLITS)")
    parser.add_argument("--classes-file", default=None)
    add_size_accepting_two_numbers(parser, "--input-size",
                                   help="model resolution, e.g. 360x480 (default: the checkpoint's training resolution)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation as `bisenetv2 segment --tta`: flip + scales "
                             f"{','.join(f'{s:g}' for s in DEFAULT_TTA_SCALES)} (or --scales), scores averaged "
                             "before the argmax; torch backend")
    parser.add_argument("--flip", action="store_true", help="TTA: average with the mirrored frame")
    parser.add_argument("--scales", type=positive_float, nargs="+", default=None,
                        help="TTA: multi-scale factors of the input size (default: 1, or the --tta scales)")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", help="Segmenter backend for the plain protocol")
    parser.add_argument("--precision", default="fp32",
                        help="Segmenter precision for the plain protocol: auto, fp32, fp16, bf16, int8 (default: fp32)")
    parser.add_argument("--calibration-images", default=None,
                        help="int8: folder of calibration frames (default: the checkpoint's training frames, if known)")
    parser.add_argument("--reference-precision", default=None, metavar="PRECISION",
                        help="also run this precision (e.g. fp32) on the same frames and report the fraction "
                             "of pixels whose labels agree with it")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="project",
                        help="project: this package's pipeline (default); paper: the same at the BiSeNetV2 "
                             "paper's resolution; mmseg / coincheung: that publisher's test pipeline "
                             "(training/protocols.py), to check an imported checkpoint's published mIoU")
    parser.add_argument("--mmseg-mode", choices=("whole", "slide"), default="whole",
                        help="mmseg: inference mode (every BiSeNet config uses whole)")
    add_size_accepting_two_numbers(parser, "--crop-size", help="mmseg slide window / coincheung crop, HxW")
    add_size_accepting_two_numbers(parser, "--stride", help="mmseg slide stride, HxW")
    parser.add_argument("--ms-flip", action="store_true", help="mmseg: its mIoU(ms+flip) pipeline")
    parser.add_argument("--coincheung-eval", choices=COINCHEUNG_MODES, default="ss",
                        help="coincheung: which column of its tables (single scale, crop, multi-scale+flip, both)")
    parser.add_argument("--output", default=None, help="write the JSON result here")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output this script wrote before")
    parser.add_argument("--threads", type=threads_int, default=None, help="torch CPU threads")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.output:  # before the long evaluation: never onto the weights or a file this script did not write
        check_output(args.output, PROG, [args.weights] if Path(args.weights).exists() else [], args.overwrite,
                     folder=False)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bisenetv2_ros.weights.known_weights import open_weights
    from training.datasets import build_dataset

    dataset = build_dataset(args.dataset, args.root, args.split, args.classes_file)
    weights = open_weights(args.weights)  # read once, even for a second (reference) Segmenter
    try:
        choice = choose_protocol(args.protocol, PROTOCOL_DATASETS.get(args.dataset, args.dataset),
                                 weights.architecture, mmseg_mode=args.mmseg_mode,
                                 crop_size=tuple(args.crop_size) if args.crop_size else None,
                                 stride=tuple(args.stride) if args.stride else None, ms_flip=args.ms_flip,
                                 coincheung_mode=args.coincheung_eval,
                                 input_size=tuple(args.input_size) if args.input_size else None)
    except ValueError as error:
        parser.error(str(error))
    if choice.settings is not None:
        if args.tta or args.flip or args.scales:
            parser.error(f"--protocol {args.protocol} has its own scales and flip (--ms-flip, --coincheung-eval); "
                         f"--tta/--flip/--scales belong to the project protocol")
        return _evaluate_publisher(args, choice, weights, dataset)
    from bisenetv2_ros.inference.segmenter import Segmenter

    scales = args.scales or (list(DEFAULT_TTA_SCALES) if args.tta else [1.0])
    flip = args.flip or args.tta
    try:
        tta = TTASettings(tuple(scales), flip) if (flip or scales != [1.0]) else None
    except ValueError as error:
        parser.error(str(error))
    options = {"calibration_images": args.calibration_images} if args.calibration_images else None
    backend = "torch" if tta is not None and args.backend == "auto" else args.backend  # TTA needs logits
    make = lambda precision, tta=None: Segmenter(weights, backend=backend, device=args.device,  # noqa: E731
                                                 precision=precision, backend_options=options, tta=tta,
                                                 input_size=choice.input_size)
    segmenter = make(args.precision, tta)
    info, size = segmenter.info, segmenter.input_size
    reference = make(args.reference_precision) if args.reference_precision else None
    result = evaluate_segmenter(segmenter, dataset, args.limit, progress=True, reference=reference)
    result.update({"backend": segmenter.backend_name, "precision": segmenter.precision})
    result.update({"weights": str(args.weights), "dataset": args.dataset, "split": args.split,
                   "input_size": list(size), "flip": flip, "scales": scales, "protocol": args.protocol,
                   "frames": len(dataset) if args.limit is None else min(args.limit, len(dataset))})
    _warn_if_classes_differ(info, dataset)
    return _report(args, result)


def _evaluate_publisher(args, choice, weights, dataset) -> dict:
    """mmseg / coincheung: the publisher's pipeline on the torch model (fp32, ``--device``)."""
    model = weights.build_model().to(args.device).eval()
    matrix = ConfusionMatrix(len(dataset.classes))
    predict = publisher_predictor(choice, model, weights.info.normalization, args.device)
    result = _evaluate(dataset, predict, args.limit, progress=True, matrix=matrix)
    if args.protocol == "coincheung":  # its tools/evaluate.py divides by tp + fp + fn + 1
        result["miou_publisher_formula"] = publisher_miou(matrix.matrix)
    result.update({"weights": str(args.weights), "dataset": args.dataset, "split": args.split,
                   "protocol": args.protocol, "protocol_settings": dataclasses.asdict(choice.settings),
                   "backend": "torch", "precision": "fp32",
                   "frames": len(dataset) if args.limit is None else min(args.limit, len(dataset))})
    _warn_if_classes_differ(weights.info, dataset)
    return _report(args, result)


def _warn_if_classes_differ(info, dataset) -> None:
    if list(info.classes.names) != list(dataset.classes.names):
        print(f"warning: checkpoint classes {list(info.classes.names)} differ from dataset classes "
              f"{list(dataset.classes.names)}", file=sys.stderr)


def _report(args, result: dict) -> dict:
    print(format_table(result))
    if "miou_publisher_formula" in result:
        print(f"{'mIoU, +1 in each denominator (as CoinCheung/BiSeNet computes it)':<16} "
              f"{100 * result['miou_publisher_formula']:6.2f}%")
    if "agreement_with_reference" in result:
        reference = result["reference"]
        print(f"{args.precision} ({result['backend']}) vs {reference['precision']} ({reference['backend']}): labels "
              f"agree on {100 * result['agreement_with_reference']:.2f} % of pixels; mIoU "
              f"{100 * result['miou']:.2f} vs {100 * reference['miou']:.2f} "
              f"({100 * (result['miou'] - reference['miou']):+.2f} points)")
    text = json.dumps(result, indent=2)
    if args.output:
        record_file(write_atomic(args.output, (text + "\n").encode()), PROG)
    else:
        print(text)
    return result


if __name__ == "__main__":
    sys.exit(run_script(PROG, main))
