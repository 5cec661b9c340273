"""Frame in, labels out: the one pipeline the node, the CLI and evaluation share.

This first version runs the network eagerly in PyTorch; the backends (torch, onnxruntime, tensorrt)
plug in behind the same API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import DEFAULT_WEIGHTS, load_model
from .classes import ClassSet

CHANNEL_ORDERS = ("rgb", "bgr")


class Segmenter:
    """Segments uint8 HxWx3 frames into uint8 HxW label images (class id per pixel).

    weights: a known name (``bisenetv2_ros.checkpoint.KNOWN_WEIGHTS``) or a checkpoint path.
    input_size: (height, width) the network runs at; default: the checkpoint's training resolution.
    """

    def __init__(self, weights: str | os.PathLike = DEFAULT_WEIGHTS, backend: str = "auto", device: str = "cpu",
                 precision: str = "fp32", input_size: tuple[int, int] | None = None,
                 engine_cache_dir: str | os.PathLike | None = None) -> None:
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend {backend!r} is not available in this build; use 'torch' or 'auto'")
        if precision != "fp32":
            raise ValueError(f"precision {precision!r} is not supported yet; use 'fp32'")
        self.model, self.info = load_model(weights)
        self.weights = str(weights)
        self.backend_name = "torch"
        self.device = device
        self.precision = precision
        self.input_size = tuple(input_size or self.info.train_resolution or (512, 1024))
        self.classes: ClassSet = self.info.classes
        norm = self.info.normalization
        self._mean = torch.tensor(norm.mean).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(norm.std).view(1, 3, 1, 1) * 255.0
        self._lut = self.classes.lookup_table()

    def segment(self, frame: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
        """One HxWx3 uint8 frame -> HxW uint8 labels at the frame's resolution."""
        return self.segment_batch(frame[None], channel_order)[0]

    def segment_batch(self, frames: np.ndarray | Sequence[np.ndarray], channel_order: str = "rgb") -> np.ndarray:
        """NxHxWx3 uint8 frames (one size) -> NxHxW uint8 labels."""
        batch = _as_batch(frames)
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        if channel_order != self.info.normalization.channel_order:
            x = x.flip(1)
        with torch.inference_mode():
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
            x = (x - self._mean) / self._std
            logits = self.model(x, output_size=batch.shape[1:3])
            return logits.argmax(1).to(torch.uint8).numpy()

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """HxW labels -> HxWx3 uint8 RGB palette image (unknown ids are black)."""
        return self._lut[labels]

    def overlay(self, frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5, channel_order: str = "rgb") -> np.ndarray:
        """Alpha blend of the palette over the frame, in the frame's channel order."""
        colors = self.colorize(labels)
        if channel_order == "bgr":
            colors = colors[..., ::-1]
        blended = frame.astype(np.float32) * (1.0 - alpha) + colors.astype(np.float32) * alpha
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _as_batch(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    batch = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"frames must be uint8 of shape (N, H, W, 3), got {batch.dtype} {batch.shape}")
    if batch.shape[1] == 0 or batch.shape[2] == 0:
        raise ValueError(f"frames must not be empty, got shape {batch.shape}")
    return np.ascontiguousarray(batch)
