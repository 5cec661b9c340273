"""Input encodings measured: `bisenetv2 benchmark-messages --all-encodings` and `--compare-bayer DIR`.

``encoding_costs``: for every encoding (``ros.encodings``; aliases once), a message of random bytes
at the frame size -> the 8-bit frame the network gets, timed interleaved (one round over all encodings,
then the next round), median and minimum in ms, and the conversion's memory peak (tracemalloc: the
frame plus any copy) in bytes per pixel.

``compare_bayer``: real RGB frames (e.g. CamVid's val split) made into RGGB mosaics, then turned back
into a network frame three ways: OpenCV's bilinear demosaic (what the node does), OpenCV's edge-aware
demosaic, and 2x2 binning (one RGB pixel per Bayer cell, a half-size frame whose labels are upsampled
by nearest neighbour to the image's size). Prints each one's conversion cost at the frame size and at
1920x1080 and the agreement of its labels with the labels of the original 8-bit frame (bgr8).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import cv2
import numpy as np

from ..image_files import read_image_file
from ..ros import encodings, messages


def canonical_encodings() -> list[str]:
    """Every supported encoding once (the canonical name of each alias)."""
    names: list[str] = []
    for name, info in encodings.ENCODINGS.items():
        if name == info.name or info.name not in encodings.ENCODINGS:
            names.append(name)
    return names


BIG_ENDIAN_CASES = ("rgb16", "mono16", "bayer_rggb16")  # also timed with is_bigendian set (byte-swapped tiles)


def random_message(encoding: str, height: int, width: int, rng: np.random.Generator,
                   big_endian: bool = False) -> SimpleNamespace:
    info = encodings.encoding_info(encoding)
    step = width * info.bytes_per_pixel
    size = step * height
    if info.planar:
        rows, stride, _ = encodings.chroma_plane_shape(info, width, height, step)
        size += rows * stride
    return SimpleNamespace(header=SimpleNamespace(frame_id="camera"), height=height, width=width, encoding=encoding,
                           is_bigendian=int(big_endian), step=step, data=rng.integers(0, 256, size, dtype=np.uint8))


def _peak_bytes(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def encoding_costs(height: int, width: int, repeats: int) -> list[tuple[str, float, float, float]]:
    """(encoding, median ms, min ms, peak bytes per pixel) of Image -> 8-bit frame, interleaved rounds."""
    rng = np.random.default_rng(0)
    msgs = {name: random_message(name, height, width, rng) for name in canonical_encodings()}
    msgs.update({f"{name} big-endian": random_message(name, height, width, rng, True) for name in BIG_ENDIAN_CASES})
    names = list(msgs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        messages.image_to_frame(msgs[name], max_pixels=height * width)  # warm-up
    for _ in range(repeats):
        for name in names:
            started = time.perf_counter()
            messages.image_to_frame(msgs[name], max_pixels=height * width)
            times[name].append((time.perf_counter() - started) * 1000.0)
    pixels = height * width
    return [(name, statistics.median(times[name]), min(times[name]),
             _peak_bytes(lambda m=msgs[name]: messages.image_to_frame(m, max_pixels=pixels)) / pixels)
            for name in names]


def print_encoding_costs(height: int, width: int, repeats: int) -> None:
    print(f"Image -> 8-bit frame per encoding, {height}x{width} (HxW), random bytes, {repeats} interleaved runs:")
    print(f"  {'encoding':24s} {'median ms':>10s} {'min ms':>8s} {'peak B/px':>10s}")
    for name, median, fastest, per_pixel in encoding_costs(height, width, repeats):
        print(f"  {name:24s} {median:10.2f} {fastest:8.2f} {per_pixel:10.2f}")


def rggb_mosaic(rgb: np.ndarray) -> np.ndarray:
    mosaic = rgb[..., 1].copy()
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


def binned_rgb(mosaic: np.ndarray) -> np.ndarray:
    """One RGB pixel per RGGB cell: R, the mean of the two G, B (a half-size frame)."""
    even = mosaic[: mosaic.shape[0] // 2 * 2, : mosaic.shape[1] // 2 * 2]
    green = ((even[0::2, 1::2].astype(np.uint16) + even[1::2, 0::2] + 1) >> 1).astype(np.uint8)
    return np.dstack([even[0::2, 0::2], green, even[1::2, 1::2]])


BAYER_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bilinear demosaic (node)": lambda m: cv2.cvtColor(m, cv2.COLOR_BayerRGGB2RGB),
    "edge-aware demosaic": lambda m: cv2.cvtColor(m, cv2.COLOR_BayerRGGB2RGB_EA),
    "2x2 binning": binned_rgb,
}


def compare_bayer(segmenter, folder: Path, frames: int, repeats: int) -> None:
    paths = sorted(folder.glob("*.jpg")) or sorted(folder.glob("*.png"))
    if not paths:
        raise SystemExit(f"no .jpg or .png frames in {folder}")
    paths = paths[:: max(1, len(paths) // frames)][:frames]
    agreement: dict[str, list[float]] = {name: [] for name in BAYER_METHODS}
    for path in paths:
        rgb = cv2.cvtColor(read_image_file(path), cv2.COLOR_BGR2RGB)
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
        reference = segmenter.segment(rgb, channel_order="rgb")
        mosaic = rggb_mosaic(rgb)
        for name, method in BAYER_METHODS.items():
            labels = segmenter.segment(np.ascontiguousarray(method(mosaic)), channel_order="rgb")
            if labels.shape != reference.shape:
                labels = cv2.resize(labels, reference.shape[::-1], interpolation=cv2.INTER_NEAREST)
            agreement[name].append(float((labels == reference).mean()))
    sizes = {"frame": rgb.shape[:2], "1080x1920": (1080, 1920)}
    costs: dict[tuple[str, str], list[float]] = {(n, s): [] for n in BAYER_METHODS for s in sizes}
    mosaics = {s: rggb_mosaic(cv2.resize(rgb, shape[::-1])) for s, shape in sizes.items()}
    for _ in range(repeats):  # interleaved: every method and size once per round
        for size in sizes:
            for name, method in BAYER_METHODS.items():
                started = time.perf_counter()
                converted = method(mosaics[size])
                if converted.shape[:2] != mosaics[size].shape:  # binning: labels come back at the image's size
                    cv2.resize(converted[..., 0], mosaics[size].shape[::-1], interpolation=cv2.INTER_NEAREST)
                costs[(name, size)].append((time.perf_counter() - started) * 1000.0)
    print(f"Bayer (RGGB) mosaics of {len(paths)} frames of {folder}, labels against the 8-bit frame's labels; "
          f"cost median of {repeats} interleaved runs (binning includes upsampling its labels):")
    print(f"  {'method':26s} {'agreement mean':>15s} {'min':>7s} {'ms frame':>9s} {'ms 1080p':>9s} {'(min)':>7s}")
    for name in BAYER_METHODS:
        values = agreement[name]
        print(f"  {name:26s} {100 * statistics.mean(values):14.2f}% {100 * min(values):6.2f}% "
              f"{statistics.median(costs[(name, 'frame')]):9.2f} {statistics.median(costs[(name, '1080x1920')]):9.2f} "
              f"{min(costs[(name, '1080x1920')]):7.2f}")
