"""Before/after pictures: a few frames of a split, each as ground truth | before | after overlays.

    python training/overlays.py --before camvid --after runs/camvid_campaign/best.pt \\
        --root ../shared/data/camvid --split drive_val --frames 3 --output runs/overlays/drive_val.jpg

Progress can then be seen, not only read (issue 23, item 5). The frames are spread evenly over the
split (or given with --indices); ground-truth pixels without a label show the plain frame. Both
models run the plain deployed pipeline (torch, fp32) at their own training resolution. The picture
is scaled down to --max-width; as JPEG (quality --quality) a 3-frame grid at 960 px is a few hundred
KB at most. CamVid frames are for research use: keep pictures derived from them small and out of
the repository, except a small picture for the documentation (docs/images/, under 300 KB in all).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Sequence

import cv2
import numpy as np

from bisenetv2_ros.classes import IGNORE_INDEX, ClassSet
from bisenetv2_ros.cli.arguments import (
    add_debug_flag,
    fraction,
    int_in_range,
    non_negative_int,
    run_script,
)
from bisenetv2_ros.fileio import write_atomic
from bisenetv2_ros.output_safety import check_output, record_file

PROG = "training/overlays.py"

GAP = 4  # white pixels between panels, and around the grid
TITLE_HEIGHT = 30  # the strip above each column holding its title (at full resolution)
LEGEND_ROW = 26  # height of one legend line
DOCS_IMAGE_BUDGET = 300 * 1024  # the size a picture in docs/images/ derived from CamVid frames must stay under


def frame_panels(before, after, image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> list[np.ndarray]:
    """[ground truth, before, after] overlays (RGB uint8) of one RGB frame; ``before`` / ``after`` are Segmenters."""
    truth = before.overlay(image, np.where(label == IGNORE_INDEX, 0, label).astype(np.uint8), alpha=alpha)
    truth[label == IGNORE_INDEX] = image[label == IGNORE_INDEX]
    return [truth] + [model.overlay(image, model.segment(image), alpha=alpha) for model in (before, after)]


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.6) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def legend(classes: ClassSet, width: int) -> np.ndarray:
    """White strip(s) of colour swatches with the class names, wrapped to ``width``."""
    items, x, line = [], GAP, 0
    for name, colour in zip(classes.names, classes.palette):
        item_width = 22 + cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] + 14
        if x + item_width > width and x > GAP:
            x, line = GAP, line + 1
        items.append((name, colour, x, line))
        x += item_width
    strip = np.full(((line + 1) * LEGEND_ROW, width, 3), 255, np.uint8)
    for name, colour, x, line in items:
        top = line * LEGEND_ROW + 5
        strip[top:top + 16, x:x + 16] = colour
        _text(strip, name, (x + 22, top + 13), 0.5)
    return strip


def compose(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], classes: ClassSet | None = None,
            max_width: int | None = None) -> np.ndarray:
    """Panels (rows x columns, one size) -> one RGB picture: titles on top, GAP-pixel white borders,
    a class legend below; scaled down (never up) to ``max_width``."""
    if not rows or any(len(row) != len(titles) for row in rows):
        raise ValueError(f"compose needs rows of {len(titles)} panels each, got {[len(r) for r in rows]}")
    height, width = rows[0][0].shape[:2]
    if any(panel.shape[:2] != (height, width) for row in rows for panel in row):
        raise ValueError("all panels must have one size")
    columns = len(titles)
    total_width = GAP + columns * (width + GAP)
    canvas = np.full((TITLE_HEIGHT + len(rows) * (height + GAP), total_width, 3), 255, np.uint8)
    for c, title in enumerate(titles):
        _text(canvas, title, (GAP + c * (width + GAP) + 2, TITLE_HEIGHT - 9))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top, left = TITLE_HEIGHT + r * (height + GAP), GAP + c * (width + GAP)
            canvas[top:top + height, left:left + width] = panel
    if classes is not None:
        canvas = np.concatenate([canvas, legend(classes, total_width)])
    if max_width and canvas.shape[1] > max_width:
        scale = max_width / canvas.shape[1]
        canvas = cv2.resize(canvas, (max_width, max(1, round(canvas.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return canvas


def spread_indices(count: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly over ``count`` frames (first and last included)."""
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, min(frames, count))})


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="weights before (a known name or a checkpoint)")
    parser.add_argument("--after", required=True, help="weights after (a known name or a checkpoint)")
    parser.add_argument("--before-title", default=None, help="column title (default: 'before: WEIGHTS')")
    parser.add_argument("--after-title", default=None, help="column title (default: 'after: WEIGHTS')")
    parser.add_argument("--dataset", choices=("camvid", "folder", "cityscapes"), default="camvid")
    parser.add_argument("--root", default="../shared/data/camvid")
    parser.add_argument("--split", default="drive_val")
    parser.add_argument("--classes-file", default=None)
    parser.add_argument("--frames", type=int_in_range(1, 1000), default=3, help="how many frames, spread over the split (default: 3)")
    parser.add_argument("--indices", type=non_negative_int, nargs="+", default=None, help="these frames of the split instead")
    parser.add_argument("--alpha", type=fraction, default=0.5, help="palette opacity (default: 0.5)")
    parser.add_argument("--max-width", type=int_in_range(1, 32768), default=960, help="scale the picture down to this width (px)")
    parser.add_argument("--quality", type=int_in_range(0, 100), default=80, help="JPEG quality (default: 80)")
    parser.add_argument("--output", type=Path, required=True, help="picture to write (.jpg or .png)")
    parser.add_argument("--overwrite", action="store_true", help="replace a picture this script wrote before")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.output.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        parser.error(f"--output {args.output} must end in .jpg, .jpeg or .png")
    inputs = [Path(w) for w in (args.before, args.after) if Path(w).exists()]
    check_output(args.output, PROG, inputs, args.overwrite, folder=False)  # before the models run
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality must be in 1..100, got {args.quality}")

    from bisenetv2_ros.inference.segmenter import Segmenter
    from training.datasets import build_dataset

    dataset = build_dataset(args.dataset, args.root, args.split, args.classes_file)
    try:
        indices = args.indices if args.indices is not None else spread_indices(len(dataset), args.frames)
    except ValueError as error:
        parser.error(str(error))
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        parser.error(f"--indices {bad} are outside {dataset.name}'s {len(dataset)} frames (0..{len(dataset) - 1})")
    before, after = (Segmenter(w, backend="torch", device="cpu", precision="fp32") for w in (args.before, args.after))
    for model in (before, after):
        if list(model.classes.names) != list(dataset.classes.names):
            parser.error(f"{model.weights} predicts {list(model.classes.names)}, not the classes of "
                         f"{dataset.name} {list(dataset.classes.names)}")
    rows = [frame_panels(before, after, *dataset[i], alpha=args.alpha) for i in indices]
    titles = ["ground truth", args.before_title or f"before: {args.before}", args.after_title or f"after: {args.after}"]
    picture = compose(rows, titles, before.classes, args.max_width)
    params = [cv2.IMWRITE_JPEG_QUALITY, args.quality] if args.output.suffix.lower() != ".png" else []
    # encoded here, written by Python: a failure names the file and the OS's reason (cv2.imwrite says only False)
    ok, encoded = cv2.imencode(args.output.suffix.lower(), np.ascontiguousarray(picture[..., ::-1]), params)
    if not ok:
        raise ValueError(f"--output {args.output}: OpenCV cannot encode a {args.output.suffix} picture")
    write_atomic(args.output, encoded.tobytes())
    record_file(args.output, PROG)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({picture.shape[1]}x{picture.shape[0]}, {size / 1024:.0f} KB): frames "
          f"{indices} of {dataset.name}")
    if size > DOCS_IMAGE_BUDGET:
        print(f"note: {size / 1024:.0f} KB is over the {DOCS_IMAGE_BUDGET // 1024} KB a picture in docs/images/ may take; "
              "use fewer --frames, a smaller --max-width or a lower --quality", file=sys.stderr)
    return args.output


if __name__ == "__main__":
    sys.exit(run_script(PROG, main))
