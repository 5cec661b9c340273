"""Frame in, labels out: the one pipeline the node, the CLI and evaluation share.

The whole per-pixel path (resize, normalise, network, logit upsampling, argmax) runs inside the
chosen backend's graph (``fused.FusedSegmentation``); this class only checks inputs and
hands uint8 arrays across.

    seg = Segmenter("camvid")                      # backend "auto": the best available, logged
    labels = seg.segment(frame_bgr, channel_order="bgr")   # HxW uint8 class ids
    labels, confidence = seg.segment(frame_bgr, "bgr", confidence=True)  # + round(255 x top probability)
    color = seg.colorize(labels)                   # HxWx3 RGB palette image
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..classes import ClassSet, colorize
from ..conventions import DEFAULT_INPUT_SIZE
from ..weights.known_weights import OpenedWeights, open_weights
from .backends import CHANNEL_ORDERS, DEFAULT_PRECISION, Backend, create_backend
from .tta import TTASettings


class Segmenter:
    """Segments uint8 HxWx3 frames into uint8 HxW label images (class id per pixel).

    weights: a known name (``bisenetv2_ros.weights.known_weights.KNOWN_WEIGHTS``), a checkpoint path, weights
        already opened with ``open_weights`` (several Segmenters, one read), or None: ``DEFAULT_WEIGHTS``.
    backend: "auto" (on a CPU the fastest path measured here, see precision; with a GPU TensorRT, else
        torch CUDA), "torch", "onnxruntime" or "tensorrt".
    device: "auto" (a GPU when visible), "cpu", "cuda" or "cuda:N"; the attribute holds the resolved one.
    precision: "auto" (default: on a CPU the fastest path *measured* on this machine for these weights
        and ``frame_size``/``batch`` -- torch fp32 / bf16 (native only), ONNX Runtime fp32 / int8
        (with calibration frames), quiet and under one competing process, labels within 1 % of fp32;
        cached, logged once; ``measured_auto``. ``BISENETV2_AUTO=rule`` picks by CPU flags
        instead. On a GPU fp32), "fp32", "fp16" (GPU),
        "bf16" (torch on a CPU with native bf16) or "int8" (onnxruntime on CPU, tensorrt on GPU;
        calibrated on ``backend_options={"calibration_images": folder}``, by default with the
        calibration table the weights carry, else on the frames they were trained on when known).
    input_size: (height, width) the network runs at; default: the checkpoint's training resolution.
    engine_cache_dir: where TensorRT engines are cached (default: ``$BISENETV2_CACHE/engines``).
    backend_options: backend-specific settings, e.g. ``{"compile": "inductor"}`` for torch,
        ``{"calibration_images": folder}`` for int8, ``{"auto_remeasure": True}`` to measure auto afresh.
    tta: ``tta.TTASettings`` for offline test-time augmentation (flip + scales, averaged before the
        argmax; several times slower); needs a backend that returns logits (torch), else a BackendError.
    frame_size, batch: the (height, width) and count of the frames per call auto measures with
        (default: one frame at ``input_size``); any size still works afterwards.
    """

    def __init__(self, weights: str | os.PathLike | OpenedWeights | None = None, backend: str = "auto",
                 device: str = "auto", precision: str = DEFAULT_PRECISION,
                 input_size: tuple[int, int] | None = None,
                 engine_cache_dir: str | os.PathLike | None = None,
                 backend_options: Mapping[str, Any] | None = None, tta: TTASettings | None = None,
                 frame_size: tuple[int, int] | None = None, batch: int = 1) -> None:
        if tta is not None and not isinstance(tta, TTASettings):
            raise ValueError(f"tta must be a TTASettings (bisenetv2_ros.inference.tta) or None, got {type(tta).__name__}")
        opened = open_weights(weights)
        model, self.info = opened.build_model(), opened.info
        self.weights: str = opened.name
        self.classes: ClassSet = self.info.classes
        self.input_size: tuple[int, int] = _size(input_size or self.info.train_resolution or DEFAULT_INPUT_SIZE,
                                                 "input_size", input_size)
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        frame_shape = (int(batch), *(_size(frame_size, "frame_size") if frame_size else self.input_size))
        self.backend: Backend = create_backend(backend, model, self.info, device, precision, self.input_size,
                                               engine_cache_dir, backend_options, frame_shape)
        # The measured auto decision (measured_auto.Decision: its table) when auto measured, else None.
        self.auto_decision = getattr(self.backend, "auto_decision", None)
        self.backend_name: str = self.backend.name
        self.device: str = self.backend.device
        self.precision: str = self.backend.precision
        if tta is not None:
            self.backend.check_tta()
        self.tta: TTASettings | None = tta
        self._lut = self.classes.lookup_table()

    def segment(self, frame: np.ndarray, channel_order: str = "rgb", confidence: bool = False):
        """One HxWx3 uint8 frame -> HxW uint8 labels at the frame's resolution; with ``confidence=True``
        (labels, confidence), confidence being HxW uint8 round(255 x the labelled class's probability)."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise ValueError(f"frame must be a uint8 array of shape (H, W, 3), got "
                             f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")
        if confidence:
            labels, confidences = self.segment_batch(frame[None], channel_order, confidence=True)
            return labels[0], confidences[0]
        return self.segment_batch(frame[None], channel_order)[0]

    def segment_batch(self, frames: np.ndarray | Sequence[np.ndarray], channel_order: str = "rgb",
                      confidence: bool = False):
        """NxHxWx3 uint8 frames (one size, e.g. several cameras) -> NxHxW uint8 labels, or (labels,
        confidence) with ``confidence=True``."""
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if self.tta is not None:
            if confidence:
                raise ValueError("confidence is not available with test-time augmentation (tta); use one or the other")
            return self.backend.run_tta(_as_batch(frames), channel_order, self.tta)
        if confidence:
            return self.backend.run(_as_batch(frames), channel_order, confidence=True)
        return self.backend.run(_as_batch(frames), channel_order)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """HxW labels -> HxWx3 uint8 RGB palette image (ids without a class are black)."""
        labels = np.asarray(labels)
        if labels.dtype != np.uint8:
            if not np.issubdtype(labels.dtype, np.integer) or (labels.size and (labels.min() < 0 or labels.max() > 255)):
                raise ValueError(f"labels must be integer class ids in 0..255, got {labels.dtype}")
            labels = labels.astype(np.uint8)
        return colorize(labels, self._lut)

    def overlay(self, frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5, channel_order: str = "rgb") -> np.ndarray:
        """Alpha blend of the palette over the frame, in the frame's channel order."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if frame.shape[:2] != np.shape(labels)[:2] or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"overlay needs a uint8 (H, W, 3) frame and (H, W) labels of the same size, got "
                             f"{frame.dtype} {frame.shape} and {np.shape(labels)}")
        colors = self.colorize(labels)
        if channel_order == "bgr":
            colors = np.ascontiguousarray(colors[..., ::-1])
        return cv2.addWeighted(np.ascontiguousarray(frame), 1.0 - alpha, colors, alpha, 0.0)

    def __repr__(self) -> str:
        return (f"Segmenter(weights={self.weights!r}, backend={self.backend_name!r}, device={self.device!r}, "
                f"precision={self.precision!r}, input_size={self.input_size}"
                + (f", tta={self.tta}" if self.tta else "") + ")")


def _size(size, name: str, given=None) -> tuple[int, int]:
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
        raise ValueError(f"{name} must be (height, width) with positive integers, got {given if given is not None else size!r}")
    return int(size[0]), int(size[1])


def _as_batch(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        frames = list(frames)
        if not frames:
            raise ValueError("frames must not be an empty sequence")
        if len({np.shape(f) for f in frames}) != 1:
            raise ValueError(f"frames of one batch must share one size, got {sorted({np.shape(f) for f in frames})}")
        frames = np.stack(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    return np.ascontiguousarray(frames)
