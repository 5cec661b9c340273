"""Inference backends behind one small interface, chosen by name.

Every backend runs the same fused pipeline (``fused.FusedSegmentation``): uint8 NHWC frames in,
uint8 NHW labels at the frame size out. ``create_backend`` picks and builds one; ``"auto"`` tries
TensorRT (with a GPU), then torch CUDA, then ONNX Runtime CPU, then torch CPU, and logs its choice.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

LOGGER = logging.getLogger("bisenetv2_ros")

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
CHANNEL_ORDERS = ("rgb", "bgr")


class BackendError(ValueError):
    """A backend that cannot be built as asked; the message says why and what to do instead."""


class Backend:
    """uint8 frames (N, H, W, 3) in, uint8 labels (N, H, W) out, at the frames' resolution.

    Subclasses set ``name``, ``device`` and ``precision`` and implement ``_run``. Pipelines are built
    lazily per channel order (and per shape where the backend needs fixed shapes) and cached.
    """

    name = "base"

    def __init__(self, device: str, precision: str, input_size: tuple[int, int]) -> None:
        self.device = device
        self.precision = precision
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def run(self, frames: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        return self._run(frames, channel_order)

    def _run(self, frames: np.ndarray, channel_order: str) -> np.ndarray:
        raise NotImplementedError

    def warmup(self, frame_shape: tuple[int, int, int, int], channel_order: str = "rgb", iterations: int = 2) -> None:
        """Builds (compiles, exports) the pipeline for this shape and runs it a few times."""
        frames = np.zeros(frame_shape, dtype=np.uint8)
        for _ in range(iterations):
            self.run(frames, channel_order)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, precision={self.precision!r}, input_size={self.input_size})"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def onnxruntime_importable() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_device(device: str | None) -> str:
    """'auto' / None -> 'cuda' when a GPU is visible, else 'cpu'. 'cuda[:n]' without a GPU is an error."""
    if device in (None, "auto"):
        return "cuda" if cuda_available() else "cpu"
    device = str(device)
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda_available():
            raise BackendError(f"no CUDA device: device {device!r} was requested but torch.cuda.is_available() is "
                               "False (CPU-only PyTorch build or no visible GPU); use device='cpu'")
        return device
    raise BackendError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'")


def choose_backend(device: str | None = "auto", precision: str = "fp32") -> tuple[str, str]:
    """The ``auto`` rule: (backend name, resolved device). Logs the choice and why."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    device = resolve_device(device)
    if device != "cpu":
        if tensorrt_importable():
            choice, reason = "tensorrt", "TensorRT is importable and a CUDA GPU is visible"
        elif precision == "int8":
            raise BackendError("precision 'int8' needs the tensorrt backend, and TensorRT is not importable")
        else:
            choice, reason = "torch", "a CUDA GPU is visible but TensorRT is not importable"
    else:
        if precision != "fp32":
            raise BackendError(f"precision {precision!r} needs a GPU (tensorrt, or torch on CUDA); on CPU use 'fp32'")
        if onnxruntime_importable():
            choice, reason = "onnxruntime", "no CUDA GPU; ONNX Runtime is the fastest CPU path"
        else:
            choice, reason = "torch", "no CUDA GPU and ONNX Runtime is not importable"
    LOGGER.info("backend auto -> %s on %s (%s)", choice, device, reason)
    return choice, device


def create_backend(name: str, model, info, device: str | None = "auto", precision: str = "fp32",
                   input_size: tuple[int, int] = (512, 1024), engine_cache_dir: str | os.PathLike | None = None,
                   options: Mapping[str, Any] | None = None) -> Backend:
    """Builds backend ``name`` ('auto', 'torch', 'onnxruntime', 'tensorrt') for an eval-mode BiSeNetV2 or BiSeNetV1.

    ``options`` are backend-specific keyword arguments (e.g. ``{"compile": "inductor"}`` for torch,
    ``{"dynamic": False}`` for onnxruntime, ``{"calibration_images": DIR}`` for tensorrt int8).
    """
    options = dict(options or {})
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if name == "auto":
        name, device = choose_backend(device, precision)
    if precision == "int8" and name != "tensorrt":
        raise BackendError(f"precision 'int8' is only available with the tensorrt backend, not {name!r}")
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, info.normalization, input_size, resolve_device(device), precision, **options)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, info.normalization, input_size, device or "cpu", precision, **options)
    from .tensorrt_backend import TensorRTBackend, calibration_files

    if precision == "int8":
        calibration_files(options.get("calibration_images"))  # the clearest error first
    resolved = resolve_device(device)
    if resolved == "cpu":
        if device in (None, "auto"):
            raise BackendError("no CUDA device: the tensorrt backend needs an NVIDIA GPU and none is visible")
        raise BackendError("the tensorrt backend runs on CUDA only; use device='cuda' (or backend 'onnxruntime' on CPU)")
    cache = Path(engine_cache_dir) if engine_cache_dir is not None else None
    return TensorRTBackend(model, info.normalization, input_size, resolved, precision, engine_cache_dir=cache, **options)
