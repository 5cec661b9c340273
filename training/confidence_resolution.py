"""How much the confidence output changes when taken at the logits' resolution and upsampled (what the
fused graph does) instead of at the frame resolution: both from the same fp32 network on real frames.
With --timing N, also what each costs end to end on the torch backend (N interleaved runs, p50).

    python -m training.confidence_resolution ../shared/data/camvid/val --frames 20 --frame-size 480x640
    python -m training.confidence_resolution ../shared/data/camvid/val --frames 0 --timing 40
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path, as the other scripts
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bisenetv2_ros.cli.arguments import add_debug_flag, non_negative_int, run_script, size_or_comma
from bisenetv2_ros.cli.media import list_images
from bisenetv2_ros.image_files import read_image_file
from bisenetv2_ros.inference.fused import FusedSegmentation, top_class_confidence
from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, load_model


PROG = "training/confidence_resolution.py"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--frames", type=non_negative_int, default=20, help="frames of FOLDER to compare (0: none)")
    parser.add_argument("--frame-size", type=size_or_comma, default=(480, 640), metavar="HxW")
    parser.add_argument("--timing", type=non_negative_int, default=0, metavar="N", help="also time the variants, N runs each")
    parser.add_argument("--precision", default="auto", help="torch precision for --timing (default: auto)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.timing:
        time_variants(args)
    if args.frames < 1:
        return
    model, info = load_model(args.weights)
    fused = FusedSegmentation(model, info.normalization, info.train_resolution)
    files = list_images(args.folder)
    if not files:
        raise ValueError(f"FOLDER {args.folder} holds no images (or does not exist)")
    files = files[:: max(1, len(files) // args.frames)][: args.frames]
    height, width = args.frame_size
    differences, border = [], []
    with torch.inference_mode():
        for path in files:
            frame = cv2.cvtColor(cv2.resize(read_image_file(path), (width, height), interpolation=cv2.INTER_AREA),
                                 cv2.COLOR_BGR2RGB)
            small = fused.model(fused.preprocess(torch.from_numpy(frame)[None]), upsample=False)
            upsampled = top_class_confidence(small, (height, width))[0].numpy().astype(int)
            logits = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
            exact = (torch.softmax(logits, 1).amax(1)[0] * 255).round().numpy().astype(int)
            labels = logits.argmax(1)[0].numpy()
            edge = np.zeros_like(labels, bool)  # pixels with a differently labelled 4-neighbour
            edge[1:] |= labels[1:] != labels[:-1]
            edge[:-1] |= labels[1:] != labels[:-1]
            edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
            edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
            differences.append(upsampled - exact)
            border.append(edge)
    difference, edge = np.concatenate([d.ravel() for d in differences]), np.concatenate([e.ravel() for e in border])
    magnitude = np.abs(difference)
    print(f"{len(files)} frames of {args.folder} at {height}x{width}, weights {args.weights} "
          f"(model input {info.train_resolution[0]}x{info.train_resolution[1]}); upsampled - frame-size, in levels of 255:")
    print(f"  all pixels:    mean |d| {magnitude.mean():.2f}, median {np.median(magnitude):.0f}, "
          f"p99 {np.percentile(magnitude, 99):.0f}, max {magnitude.max()}, mean d {difference.mean():+.2f}, "
          f"|d| <= 2: {100 * (magnitude <= 2).mean():.1f} %")
    print(f"  class borders ({100 * edge.mean():.1f} % of pixels): mean |d| {magnitude[edge].mean():.2f}, "
          f"mean d {difference[edge].mean():+.2f}; elsewhere: mean |d| {magnitude[~edge].mean():.2f}")


def time_variants(args) -> None:
    """Labels only, confidence at 1/8 (shipped), confidence at frame size: interleaved, p50 and min."""
    from bisenetv2_ros.inference.segmenter import Segmenter

    seg = Segmenter(args.weights, backend="torch", device="cpu", precision=args.precision)
    plain, with_confidence = seg.backend.pipeline("rgb"), seg.backend.pipeline("rgb", confidence=True)
    dtype = with_confidence.network_dtype

    def frame_size_confidence(frames):
        x = with_confidence.preprocess(frames)
        small = with_confidence.model(x.to(dtype) if dtype else x, upsample=False).float()
        logits = with_confidence.model.upsample_logits(small, tuple(frames.shape[1:3]))
        return logits.argmax(1).to(torch.uint8), (torch.softmax(logits, 1).amax(1) * 255).round().to(torch.uint8)

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, *args.frame_size, 3), dtype=np.uint8))
    calls = {"labels only": plain, "confidence at 1/8, upsampled": with_confidence,
             "confidence at frame size": frame_size_confidence}
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for run in range(args.timing + 3):  # three untimed warm-up rounds
            for name, call in calls.items():
                start = time.perf_counter()
                call(frames)
                if run >= 3:
                    times[name].append((time.perf_counter() - start) * 1000)
    base = np.median(times["labels only"])
    print(f"torch {seg.precision}, frames {args.frame_size[0]}x{args.frame_size[1]}, {args.timing} interleaved runs:")
    for name, values in times.items():
        print(f"  {name:30s} p50 {np.median(values):7.1f} ms  min {min(values):7.1f} ms  "
              f"{100 * (np.median(values) / base - 1):+.1f} %")


if __name__ == "__main__":
    sys.exit(run_script(PROG, main))
