"""What every backend shares: the Backend interface, its error, the backend and precision names,
device resolution and the precision table."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..conventions import CHANNEL_ORDERS

if TYPE_CHECKING:  # annotations only: importing the names stays cheap
    import numpy as np

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
# "auto": on a CPU, the fastest path measured on this machine (``measured_auto``; with
# BISENETV2_AUTO=rule the instruction-set rule ``cpu.auto_precision``); on a GPU, fp32.
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
DEFAULT_PRECISION = "auto"
# Which precision each backend runs, by device kind; everything else is a BackendError naming these.
SUPPORTED_PRECISIONS = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "fp16"),
    ("onnxruntime", "cpu"): ("fp32", "int8"),
    ("onnxruntime", "cuda"): ("fp32",),
    ("tensorrt", "cuda"): ("fp32", "fp16", "int8"),
    ("openvino", "cpu"): ("fp32", "bf16", "int8"),  # bf16: CPUs with native bf16 only (openvino_backend.py)
}


class BackendError(ValueError):
    """A backend that cannot be built as asked; the message says why and what to do instead."""


class Backend:
    """uint8 frames (N, H, W, 3) in, uint8 labels (N, H, W) out, at the frames' resolution; with
    ``confidence=True`` also uint8 (N, H, W) confidence (round(255 x top-class probability)).

    Subclasses set ``name``, ``device`` and ``precision`` and implement ``_run(frames, channel_order)``;
    those whose graphs also have the confidence output set ``supports_confidence`` and take
    ``_run(frames, channel_order, confidence=True)``. Pipelines are built lazily per channel order
    (and per shape where the backend needs fixed shapes) and cached.
    """

    name = "base"
    supports_confidence = False

    def __init__(self, device: str, precision: str, input_size: tuple[int, int]) -> None:
        self.device = device
        self.precision = precision
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def run(self, frames: np.ndarray, channel_order: str = "rgb", confidence: bool = False):
        """labels, or (labels, confidence) with ``confidence=True``."""
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if not confidence:
            return self._run(frames, channel_order)
        if not self.supports_confidence:
            raise BackendError(f"the {self.name} backend has no confidence output; use backend torch, "
                               "onnxruntime, openvino or tensorrt for confidence")
        return self._run(frames, channel_order, confidence=True)

    def _run(self, frames: np.ndarray, channel_order: str) -> np.ndarray:
        raise NotImplementedError

    # Backends whose pipeline can stop before the argmax (logits out) set this and implement run_tta.
    returns_logits = False

    def run_tta(self, frames: np.ndarray, channel_order: str, settings) -> np.ndarray:
        """Labels from test-time augmentation (``bisenetv2_ros.inference.tta``); needs the network's logits."""
        self.check_tta()
        raise NotImplementedError

    def check_tta(self) -> None:
        """A BackendError unless this backend can run test-time augmentation."""
        if self.returns_logits:
            return
        raise BackendError(f"test-time augmentation needs the network's logits, which the {self.name} backend does "
                           "not return (its graph ends in the argmax); use backend 'torch'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, precision={self.precision!r}, input_size={self.input_size})"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def onnxruntime_importable() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def openvino_importable() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnxruntime_cuda_available() -> bool:
    """True when this ONNX Runtime build has CUDAExecutionProvider (the CPU-only wheel has not)."""
    if not onnxruntime_importable():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def resolve_device(device: str | None, backend: str | None = None) -> str:
    """'auto' / None -> 'cuda' when a GPU is visible and ``backend`` can use it (onnxruntime: only with
    its CUDA provider; openvino: never), else 'cpu'. 'cuda[:n]' without a GPU is an error."""
    if device in (None, "auto"):
        usable = (backend != "openvino" and cuda_available()  # openvino: CPU only here
                  and (backend != "onnxruntime" or onnxruntime_cuda_available()))
        return "cuda" if usable else "cpu"
    device = str(device)
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda_available():
            raise BackendError(f"no CUDA device: device {device!r} was requested but torch.cuda.is_available() is "
                               "False (CPU-only PyTorch build or no visible GPU); use device='cpu'")
        return device
    raise BackendError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'")


def check_precision(backend: str, device: str, precision: str) -> None:
    """A clear BackendError when ``backend`` cannot run ``precision`` on ``device``."""
    kind = "cpu" if device == "cpu" else "cuda"
    supported = SUPPORTED_PRECISIONS.get((backend, kind), ())
    if precision in supported:
        return
    where = [f"{b} on {d}" for (b, d), p in SUPPORTED_PRECISIONS.items() if precision in p]
    hint = f"{precision} runs with " + (", ".join(where) if where else "no backend")
    if precision == "fp16" and kind == "cpu":
        hint = ("no CPU backend runs fp16 faster than fp32 (x86 CPUs have no fp16 arithmetic for these "
                "convolutions); on a CPU use 'auto', 'fp32', 'int8' (onnxruntime) or 'bf16' (torch, native bf16)")
    raise BackendError(f"precision {precision!r} is not available with the {backend} backend on {kind} "
                       f"(it runs {', '.join(supported) or 'nothing there'}); {hint}")
