"""Corrupted camera frames at five severities, for ``bisenetv2 benchmark-ood``.

The families follow the common-corruption benchmarks (noise, blur, weather, digital; Hendrycks &
Dietterich 2019) plus what a robot camera does when it fails: a black or white frame, a lens partly
covered by mud, a camera mounted upside down, a frame of random texture (a broken cable or decoder).
Every function takes a uint8 HxWx3 BGR frame, a severity 1..5 and a numpy Generator, and returns a new
uint8 frame of the same size; severity 5 is the worst.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _level(values: tuple, severity: int):
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    return values[int(severity) - 1]


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def gaussian_noise(frame, severity, rng):
    return _u8(frame + rng.normal(0.0, _level((20, 31, 46, 64, 97), severity), frame.shape))


def motion_blur(frame, severity, rng):
    length = _level((5, 9, 15, 21, 31), severity)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1.0
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(-45, 45)), 1.0)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(frame, -1, kernel / kernel.sum())


def defocus_blur(frame, severity, rng):
    radius = _level((2, 3, 5, 7, 10), severity)
    disk = np.zeros((2 * radius + 1,) * 2, np.float32)
    cv2.circle(disk, (radius, radius), radius, 1.0, -1)
    return cv2.filter2D(frame, -1, disk / disk.sum())


def fog(frame, severity, rng):
    height, width = frame.shape[:2]
    patches = cv2.resize(rng.uniform(0, 1, (4, 6)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    veil = np.clip(_level((0.25, 0.4, 0.55, 0.7, 0.85), severity) * (0.7 + 0.3 * patches), 0, 1)[..., None]
    return _u8(frame * (1 - veil) + 220.0 * veil)


def overexposure(frame, severity, rng):
    return _u8(frame.astype(np.float32) * _level((1.6, 2.2, 3.0, 4.0, 6.0), severity))


def underexposure(frame, severity, rng):
    return _u8(frame.astype(np.float32) * _level((0.45, 0.3, 0.18, 0.1, 0.04), severity))


def contrast(frame, severity, rng):
    mean = frame.mean(axis=(0, 1), keepdims=True)
    return _u8((frame - mean) * _level((0.5, 0.35, 0.22, 0.12, 0.05), severity) + mean)


def jpeg(frame, severity, rng):
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, _level((20, 12, 8, 5, 2), severity)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def occlusion(frame, severity, rng):
    """A soft-edged blob of mud covering 30 % .. 90 % of the lens, around a random point."""
    height, width = frame.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    distance = np.hypot((rows - rng.uniform(0, height)) / height, (cols - rng.uniform(0, width)) / width)
    covered = (distance <= np.quantile(distance, _level((0.3, 0.45, 0.6, 0.75, 0.9), severity))).astype(np.float32)
    covered = cv2.GaussianBlur(covered, (0, 0), 5)[..., None]
    mud = np.array([40.0, 50.0, 60.0]) * rng.uniform(0.5, 1.5)
    return _u8(frame * (1 - covered) + mud * covered)


def black(frame, severity, rng):
    level = _level((16, 12, 8, 4, 0), severity)
    return _u8(level + rng.normal(0.0, level / 4 + 0.01, frame.shape))


def white(frame, severity, rng):
    level = _level((239, 243, 247, 251, 255), severity)
    return _u8(level + rng.normal(0.0, (255 - level) / 4 + 0.01, frame.shape))


def upside_down(frame, severity, rng):
    """Turned by 36 degrees per severity: severity 5 is upside down."""
    height, width = frame.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 36.0 * _level((1, 2, 3, 4, 5), severity), 1.0)
    return cv2.warpAffine(frame, turn, (width, height), borderMode=cv2.BORDER_REFLECT)


def random_texture(frame, severity, rng):
    """Smooth random colour blobs, finer with severity (cells of 64 .. 2 pixels)."""
    height, width = frame.shape[:2]
    cell = _level((64, 32, 16, 8, 2), severity)
    cells = rng.uniform(0, 255, (max(1, height // cell), max(1, width // cell), 3)).astype(np.float32)
    return _u8(cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "motion_blur": motion_blur, "defocus_blur": defocus_blur, "fog": fog,
    "overexposure": overexposure, "underexposure": underexposure, "contrast": contrast, "jpeg": jpeg,
    "occlusion": occlusion, "black": black, "white": white, "upside_down": upside_down,
    "random_texture": random_texture,
}
