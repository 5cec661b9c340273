"""Upsample the 1/8 class scores to the frame and take the argmax, without the frame-size score tensor.

The fused graph's tail (``F.interpolate`` of all C class scores to H x W, then argmax) writes and
reads 4 x C bytes per frame pixel (88 MB for 11 classes at 1920x1080) before it keeps one byte. Here:

1. Bilinear interpolation makes each frame pixel a convex combination (weights >= 0, sum 1) of the
   score vectors at the 4 corners of its source cell. When the 4 corners have the same argmax k,
   ``s[k] >= s[j]`` holds at each corner, so it holds for the combination: every pixel of that cell
   is labelled k without computing its scores. Such cells (most of a frame: classes are regions)
   are filled by repeating the small argmax map, one byte written per pixel.
2. Only pixels in cells whose corners disagree (class borders) get their C scores interpolated,
   in row bands of a bounded byte budget (``tile_bytes``), so the scratch never exceeds that budget
   plus the small per-row maps: at most ``MAX_SCRATCH_PER_PIXEL`` bytes per frame pixel, whatever the
   class count (tested with tracemalloc).

Labels equal ``F.interpolate(..., mode="bilinear").argmax(1)`` of the same scores except where two
classes' interpolated scores are equal to within float32 rounding (the two compute the same sums in a
different order), which ``test/test_labels_tail.py`` measures. The source-index arithmetic follows
PyTorch's (half-pixel centres clamped at 0 without ``align_corners``; corner-aligned with it), in
float32 like its CPU kernel.
"""

from __future__ import annotations

import numpy as np

MAX_SCRATCH_PER_PIXEL = 8  # bytes of temporary memory per frame pixel (the bound)
DEFAULT_TILE_BYTES = 1 << 20  # border bands are interpolated in pieces of at most this many score bytes


def source_index(source: int, target: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``target`` output positions: the lower source index, the upper one, and the upper's
    weight (float32), as PyTorch's bilinear upsampling computes them."""
    positions = np.arange(target, dtype=np.float32)
    if align_corners:
        scale = np.float32((source - 1) / (target - 1)) if target > 1 else np.float32(0)
        real = positions * scale
    else:
        scale = np.float32(source / target)
        real = np.maximum(scale * (positions + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    lower = np.minimum(real.astype(np.int64), source - 1)
    upper = np.minimum(lower + 1, source - 1)
    return lower, upper, (real - lower.astype(np.float32)).astype(np.float32)


def upsample_argmax(logits: np.ndarray, size: tuple[int, int], align_corners: bool = False,
                    tile_bytes: int = DEFAULT_TILE_BYTES) -> np.ndarray:
    """float (N, C, h, w) class scores -> uint8 (N, H, W) labels of their bilinear upsampling to ``size``."""
    logits = np.asarray(logits)
    if logits.ndim != 4 or logits.shape[1] < 1 or logits.shape[1] > 256 or 0 in logits.shape:
        raise ValueError(f"logits must be (N, C, h, w) with 1..256 classes, got shape {logits.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width) with positive sides, got {size!r}")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    _, classes, small_h, small_w = logits.shape
    rows = source_index(small_h, height, align_corners)
    cols = source_index(small_w, width, align_corners)
    # Each output row / column belongs to the source cell of its lower index; the cells are runs.
    row_counts = np.bincount(rows[0], minlength=small_h)
    col_counts = np.bincount(cols[0], minlength=small_w)
    row_starts = np.concatenate([[0], np.cumsum(row_counts)])
    # Scratch kept within the bound at small frames too: a band piece never exceeds the pixel budget.
    budget = max(4 * classes, min(int(tile_bytes), MAX_SCRATCH_PER_PIXEL // 2 * height * width))
    labels = np.empty((logits.shape[0], height, width), np.uint8)
    for index, scores in enumerate(logits):
        _labels_of_one(scores, labels[index], rows, cols, row_counts, col_counts, row_starts, budget)
    return labels


def _labels_of_one(scores, out, rows, cols, row_counts, col_counts, row_starts, budget) -> None:
    classes, small_h, small_w = scores.shape
    small = _argmax_over_classes(scores)
    below, right = np.minimum(np.arange(small_h) + 1, small_h - 1), np.minimum(np.arange(small_w) + 1, small_w - 1)
    uniform = (small == small[:, right]) & (small == small[below, :]) & (small == small[below][:, right])
    # Every cell first gets its corners' label (exact where they agree), one row band at a time.
    for cell_row in np.flatnonzero(row_counts):
        band = out[row_starts[cell_row]:row_starts[cell_row + 1]]
        band[:] = np.repeat(small[cell_row], col_counts)[None, :]
    # Border cells: interpolate the scores of their pixels only.
    row_lower, row_upper, row_weight = rows
    col_lower, col_upper, col_weight = cols
    for cell_row in np.flatnonzero(~uniform.all(axis=1) & (row_counts > 0)):
        border_columns = np.flatnonzero(~uniform[cell_row][col_lower])
        if border_columns.size == 0:
            continue
        start, stop = row_starts[cell_row], row_starts[cell_row + 1]
        top, bottom = scores[:, row_lower[start]], scores[:, row_upper[start]]  # (C, w)
        weight_down = row_weight[start:stop][None, :, None]
        piece = max(1, budget // (4 * classes * 4 * (stop - start)))  # four (C, rows, piece) temporaries
        for begin in range(0, border_columns.size, piece):
            columns = border_columns[begin:begin + piece]
            left, right_index, weight_right = col_lower[columns], col_upper[columns], col_weight[columns]
            upper_row = top[:, left] + (top[:, right_index] - top[:, left]) * weight_right
            lower_row = bottom[:, left] + (bottom[:, right_index] - bottom[:, left]) * weight_right
            values = upper_row[:, None, :] + (lower_row - upper_row)[:, None, :] * weight_down
            out[start:stop, columns] = values.argmax(axis=0)


def _argmax_over_classes(scores: np.ndarray) -> np.ndarray:
    """uint8 argmax over axis 0 of (C, h, w), the first maximum on ties like ``argmax``, class by class:
    numpy's own argmax over axis 0 copies all C planes first (4 x C bytes per 1/8 pixel)."""
    best = scores[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    for index in range(1, scores.shape[0]):
        higher = scores[index] > best
        labels[higher] = index
        np.maximum(best, scores[index], out=best)
    return labels
