"""``bisenetv2 benchmark-ood``: how well the out-of-distribution alarm tells corrupted frames from clean ones.

Builds corrupted versions (``corruptions.py``: noise, blur, fog, exposure, contrast, JPEG, a covered
lens, black and white frames, turned and random-texture frames) of held-out frames at five severities
and prints, per corruption and severity, the share flagged at the threshold and the AUROC of the score
against the clean held-out frames; the false-alarm rate on the clean frames; the score's cost per frame
against the end-to-end segmentation time; and, to show why the score is what it is, the AUROC of the
other candidates computed from the same outputs (mean confidence, unsure pixels alone, layout alone,
whole-frame class proportions).

With weights that carry no calibration the threshold is measured here on every other held-out frame
and everything is reported on the rest, so no figure is measured on the frames that set the threshold.

    bisenetv2 benchmark-ood                                  # embedded weights, CamVid drive_val
    bisenetv2 benchmark-ood --weights my.pt --frames held_out/ --references train_frames/
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

import numpy as np

from ..image_files import read_image_file
from ..cli.arguments import add_size, positive_int, script_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, help="known name or checkpoint (default: the packaged model)")
    parser.add_argument("--frames", default=None, metavar="DIR", help="held-out frames, a folder or a known set such as "
                        "camvid:drive_val (default: the weights' known held-out split)")
    parser.add_argument("--references", default=None, metavar="DIR",
                        help="frames the weights trained on, when calibrating here (default: the known ones)")
    parser.add_argument("--count", type=positive_int, default=8, help="held-out frames corrupted per corruption and "
                        "severity (default 8: 520 corrupted frames, a few minutes on 2 cores)")
    parser.add_argument("--corruptions", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--backend", default="torch", help="backend to segment with (default torch)")
    parser.add_argument("--precision", default="fp32", help="precision (default fp32; the figures are for it)")
    add_size(parser, "--frame-size", "frame_size", help="frame size HxW the cost is timed at (default: a held-out frame's)")
    parser.add_argument("--cost-only", action="store_true", help="time the score's cost only (no corruptions)")
    parser.add_argument("--repeats", type=positive_int, default=15, help="timed repeats for the cost (default 15)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")


def auroc(clean: Sequence[float], corrupted: Sequence[float]) -> float:
    """P(score of a corrupted frame > score of a clean one), ties counted half (Mann-Whitney U)."""
    clean, corrupted = np.asarray(clean, float), np.asarray(corrupted, float)
    greater = (corrupted[:, None] > clean[None, :]).sum() + 0.5 * (corrupted[:, None] == clean[None, :]).sum()
    return float(greater / (len(clean) * len(corrupted)))


def candidate_scores(evidence, calibration, proportions: np.ndarray) -> dict[str, float]:
    """Every candidate score of one frame (higher = less like the training frames)."""
    from ..inference.ood import scaled_parts

    parts = scaled_parts(evidence, calibration)
    return {"score": max(parts.values()), "1 - mean confidence": 1.0 - evidence.mean_confidence,
            **{f"{part} alone": value for part, value in parts.items()},
            "max(layout, unsure)": max(parts["layout"], parts["unsure"]),
            "class-proportion distance": float(np.abs(evidence.class_fractions - proportions).sum())}


def run(args: argparse.Namespace) -> int:
    from ..inference.ood import OODCalibration, frame_evidence
    from ..inference.ood_calibration import (MAX_FRAMES, REFERENCE_FRAMES, OODCalibrationError, frame_files,
                                             frames_evidence, known_frames, measure_ood_calibration)
    from ..inference.segmenter import Segmenter
    from .corruptions import CORRUPTIONS
    from .measurement import machine_info

    segmenter = Segmenter(args.weights, backend=args.backend, device="cpu", precision=args.precision)
    known = known_frames(segmenter.info.dataset)
    if not args.frames and known is None:
        raise OODCalibrationError(f"no held-out frames are known for weights trained on {segmenter.info.dataset!r}; "
                                  "give --frames DIR")
    held_out = frame_files(args.frames or known[1], MAX_FRAMES)
    chosen = list(CORRUPTIONS) if not args.corruptions else [name.strip() for name in args.corruptions.split(",")]
    chosen = [] if args.cost_only else chosen
    unknown = sorted(set(chosen) - set(CORRUPTIONS))
    if unknown:
        raise OODCalibrationError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    calibration = OODCalibration.from_dict(segmenter.info.ood)
    where = "stored in the weights: " + (calibration.summary() if calibration else "")
    evaluated = list(held_out)
    if calibration is None:
        if not args.references and known is None:
            raise OODCalibrationError("the weights carry no ood calibration and no training frames are known: give "
                                      "--references DIR (frames they trained on)")
        references = frame_files(args.references or known[0], REFERENCE_FRAMES)
        calibration = measure_ood_calibration(segmenter, references, held_out[0::2], "references", "held-out (even)")
        evaluated = held_out[1::2]
        where = (f"measured here (the weights carry none): references {len(references)} frames, threshold on "
                 f"{len(held_out[0::2])} even held-out frames; figures below on the {len(evaluated)} odd ones")
    training_proportions = np.mean([layout.reshape(3, -1).mean(axis=0) for layout in calibration.references], axis=0)
    clean_evidence = frames_evidence(segmenter, evaluated)
    clean = [candidate_scores(e, calibration, training_proportions) for e in clean_evidence]
    threshold = calibration.threshold
    corrupted_files = [evaluated[i] for i in np.linspace(0, len(evaluated) - 1, min(args.count, len(evaluated))).astype(int)]
    import cv2

    originals = [read_image_file(path) for path in corrupted_files]
    rows, per_candidate = [], {name: [] for name in clean[0]}
    for name in chosen:
        for severity in range(1, 6):
            rng = np.random.default_rng(1000 * severity + chosen.index(name))
            scores = []
            for frame in originals:
                corrupted = CORRUPTIONS[name](frame, severity, rng)
                labels, confidence = segmenter.segment(corrupted, "bgr", confidence=True)
                evidence = frame_evidence(labels, confidence, len(segmenter.classes), corrupted)
                scores.append(candidate_scores(evidence, calibration, training_proportions))
            score = [s["score"] for s in scores]
            rows.append({"corruption": name, "severity": severity, "flagged": float(np.mean(np.array(score) > threshold)),
                         "auroc": auroc([c["score"] for c in clean], score)})
            if severity >= 4:
                for candidate in per_candidate:
                    per_candidate[candidate].append(auroc([c[candidate] for c in clean], [s[candidate] for s in scores]))
    timed = originals[0] if not args.frame_size else cv2.resize(originals[0], args.frame_size[::-1])
    cost = score_cost(segmenter, timed, args.repeats, calibration)
    result = {"command": "bisenetv2 benchmark-ood", "machine": machine_info(), "weights": segmenter.weights,
              "backend": f"{segmenter.backend_name} {segmenter.precision}", "calibration": where,
              "threshold": threshold, "clean_frames": len(clean),
              "false_alarms": float(np.mean([c["score"] > threshold for c in clean])), "rows": rows,
              "candidates_mean_auroc_severity_4_5": {k: float(np.mean(v)) for k, v in per_candidate.items() if v},
              "cost": cost}
    print(json.dumps(result, indent=2) if args.json else "\n".join(report_lines(result)))
    return 0


def score_cost(segmenter, frame: np.ndarray, repeats: int, calibration) -> dict[str, float]:
    """Median ms of: segmenting (labels only), segmenting with confidence, and the score from the
    outputs; interleaved, so a load that changes during the run hits all three alike."""
    import time

    from ..inference.ood import OODScorer

    scorer = OODScorer(calibration.to_dict(), len(segmenter.classes))
    times: dict[str, list[float]] = {"labels": [], "labels + confidence": [], "score": []}
    segmenter.segment(frame, "bgr", confidence=True)
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.segment(frame, "bgr")
        middle = time.perf_counter()
        labels, confidence = segmenter.segment(frame, "bgr", confidence=True)
        after = time.perf_counter()
        scorer.score(frame, labels, confidence)
        end = time.perf_counter()
        for key, seconds in zip(times, (middle - start, after - middle, end - after)):
            times[key].append(seconds * 1000.0)
    medians = {key: float(np.median(values)) for key, values in times.items()}
    medians["frame"] = f"{frame.shape[0]}x{frame.shape[1]}"
    medians["score_share_of_end_to_end"] = medians["score"] / (medians["labels + confidence"] + medians["score"])
    medians["confidence_share_of_end_to_end"] = 1.0 - medians["labels"] / medians["labels + confidence"]
    return medians


def report_lines(result: dict) -> list[str]:
    machine = result["machine"]
    lines = [f"bisenetv2 benchmark-ood: {result['weights']} ({result['backend']}) on {machine['cpu']['model']}, "
             f"{machine['cpu_cores']} cores, load {machine['load_average_1min']:.1f}",
             f"calibration: {result['calibration']}",
             f"threshold {result['threshold']:.3f}; false alarms on {result['clean_frames']} clean held-out frames: "
             f"{result['false_alarms']:.1%}", "", f"{'corruption':16} " + "  ".join(f"s{s} flag  AUROC" for s in range(1, 6))]
    by_name: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_name.setdefault(row["corruption"], []).append(row)
    for name, rows in by_name.items():
        lines.append(f"{name:16} " + "  ".join(f"{r['flagged']:6.0%} {r['auroc']:5.2f}" for r in rows))
    lines += ["", "candidates, mean AUROC over severities 4-5: " + ", ".join(
        f"{name} {value:.3f}" for name, value in result["candidates_mean_auroc_severity_4_5"].items())]
    cost = result["cost"]
    lines.append(f"cost per {cost['frame']} frame (medians, interleaved): labels {cost['labels']:.1f} ms, labels + "
                 f"confidence {cost['labels + confidence']:.1f} ms, score {cost['score']:.2f} ms = "
                 f"{cost['score_share_of_end_to_end']:.1%} of end to end (confidence output: "
                 f"{cost['confidence_share_of_end_to_end']:.1%})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    return script_main(__doc__, "bisenetv2 benchmark-ood", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
