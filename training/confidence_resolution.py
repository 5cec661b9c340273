"""How much the confidence output changes when taken at the logits' resolution and upsampled (what the
fused graph does) instead of at the frame resolution: both from the same fp32 network on real frames.

    python -m training.confidence_resolution ../shared/data/camvid/val --frames 20 --frame-size 480x640
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bisenetv2_ros.backends.fused import FusedSegmentation, top_class_confidence
from bisenetv2_ros.cli_args import size_or_comma
from bisenetv2_ros.known_weights import DEFAULT_WEIGHTS, load_model
from bisenetv2_ros.media import list_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--frame-size", type=size_or_comma, default=(480, 640))
    args = parser.parse_args()
    model, info = load_model(args.weights)
    fused = FusedSegmentation(model, info.normalization, info.train_resolution)
    files = list_images(args.folder)
    files = files[:: max(1, len(files) // args.frames)][: args.frames]
    height, width = args.frame_size
    differences, border = [], []
    with torch.inference_mode():
        for path in files:
            frame = cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (width, height), interpolation=cv2.INTER_AREA),
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


if __name__ == "__main__":
    main()
