"""Inference backends behind one small interface, chosen by name.

Every backend runs the same fused pipeline (``fused.FusedSegmentation``): uint8 NHWC frames in,
uint8 NHW labels at the frame size out. ``create_backend`` picks and builds one; ``"auto"`` on a CPU
measures the candidate paths (``measured_auto``), on a GPU it tries TensorRT, then torch CUDA; it logs
its choice.
The interface, the names and device resolution live in ``base.py`` (re-exported here); the ONNX
graphs the onnxruntime and tensorrt backends run are built by ``onnx_graph.py``.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from ..conventions import CHANNEL_ORDERS, DEFAULT_INPUT_SIZE
from .backend_base import (
    BACKENDS,
    DEFAULT_PRECISION,
    PRECISIONS,
    SUPPORTED_PRECISIONS,
    Backend,
    BackendError,
    check_precision,
    cuda_available,
    onnxruntime_cuda_available,
    onnxruntime_importable,
    openvino_importable,
    resolve_device,
    tensorrt_importable,
)
from .backend_options import options_for, require_known

__all__ = ["BACKENDS", "CALIBRATION_OPTIONS", "CHANNEL_ORDERS", "DEFAULT_PRECISION", "PRECISIONS",
           "SUPPORTED_PRECISIONS", "Backend", "BackendError", "calibration_available", "check_precision", "choose_backend",
           "create_backend",
           "cuda_available", "onnxruntime_cuda_available", "onnxruntime_importable", "openvino_importable",
           "resolve_auto_precision", "resolve_device",
           "tensorrt_importable"]

LOGGER = logging.getLogger("bisenetv2_ros")
CALIBRATION_OPTIONS = ("calibration_images", "calibration_frames", "calibration_limit")


def resolve_auto_precision(backend: str, device: str | None, calibration_available: bool) -> tuple[str, str, str]:
    """``precision: auto`` -> (precision, backend, resolved device), logged once with the reason."""
    from .cpu import auto_precision, cpu_info

    if backend not in ("auto", "torch", "onnxruntime", "openvino"):  # tensorrt: GPU only
        device = resolve_device(device if device not in (None, "auto") else "cuda")
        LOGGER.info("precision auto -> fp32 (the %s backend on %s)", backend, device)
        return "fp32", backend, device
    device = resolve_device(device, backend)
    if device != "cpu":
        LOGGER.info("precision auto -> fp32 on %s (a GPU: fp32 as before; fp16 is one parameter away)", device)
        return "fp32", backend, device
    info = cpu_info()
    precision, chosen, reason = auto_precision(info.flags, backend, calibration_available, platform.machine())
    if chosen == "onnxruntime" and not onnxruntime_importable():
        precision, chosen, reason = "fp32", "torch", "ONNX Runtime is not importable"
    LOGGER.info("precision auto -> %s with the %s backend on %s (%s; CPU %s, flags %s)", precision,
                chosen, device, reason, info.model, " ".join(info.reported_flags) or "none")
    return precision, chosen, device


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
        if precision == "bf16":
            choice, reason = "torch", "bf16 runs with torch on the CPU"
        elif precision == "int8":
            if not onnxruntime_importable():
                raise BackendError("precision 'int8' on a CPU needs ONNX Runtime, which is not importable")
            choice, reason = "onnxruntime", "int8 runs with ONNX Runtime on the CPU"
        elif precision == "fp16":
            check_precision("onnxruntime", "cpu", precision)  # raises: no CPU backend runs fp16
        elif onnxruntime_importable():
            choice, reason = "onnxruntime", "no CUDA GPU; ONNX Runtime is the fastest CPU path"
        else:
            choice, reason = "torch", "no CUDA GPU and ONNX Runtime is not importable"
    LOGGER.info("backend auto -> %s on %s (%s)", choice, device, reason)
    return choice, device


def calibration_available(model, info, options: Mapping[str, Any]) -> bool:
    """int8 calibration is given in ``options``, carried by the weights (a table) or known frames."""
    if any(options.get(k) is not None for k in CALIBRATION_OPTIONS):
        return True
    from .calibration_table import usable_table
    from .int8 import default_calibration_folder

    return (usable_table(getattr(info, "calibration", None), model, info.normalization) is not None
            or default_calibration_folder(getattr(info, "dataset", "unknown")) is not None)


def create_backend(name: str, model, info, device: str | None = "auto", precision: str = "fp32",
                   input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, engine_cache_dir: str | os.PathLike | None = None,
                   options: Mapping[str, Any] | None = None, frame_shape: tuple[int, int, int] | None = None) -> Backend:
    """Builds backend ``name`` ('auto', 'torch', 'onnxruntime', 'tensorrt', 'openvino') for an eval-mode BiSeNetV2
    or BiSeNetV1.

    ``options`` are backend-specific keyword arguments (e.g. ``{"compile": "inductor"}`` for torch,
    ``{"dynamic": False}`` for onnxruntime, ``{"calibration_images": DIR}`` for tensorrt int8).
    With 'auto' backend or precision on a CPU the path is measured (``measured_auto``) on frames of
    ``frame_shape`` (batch, height, width; default one frame at ``input_size``); option
    ``auto_remeasure=True`` ignores a cached decision.
    """
    options = dict(options or {})
    remeasure = bool(options.pop("auto_remeasure", False))
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    require_known(options)  # before auto measures: every candidate failing on it would hide the name
    if "auto" in (name, precision) and name != "tensorrt":
        from .measured_auto import measured_backend, measuring_enabled

        if measuring_enabled() and resolve_device(device, None if name == "auto" else name) == "cpu":
            def build(candidate):
                own = options_for(candidate.backend, options, chosen_by_auto=True)
                return create_backend(candidate.backend, model, info, "cpu", candidate.precision, input_size,
                                      engine_cache_dir, {**own, **candidate.options})

            chosen = measured_backend(name, precision, model, info, input_size, frame_shape or (1, *input_size),
                                      options, calibration_available(model, info, options), engine_cache_dir,
                                      build, remeasure)
            if chosen is not None:
                return chosen
    requested = name
    if precision == "auto":
        precision, name, device = resolve_auto_precision(name, device, calibration_available(model, info, options))
    if name == "auto":
        name, device = choose_backend(device, precision)
    if name == "tensorrt":
        check_precision(name, "cuda", precision)  # the device itself is checked below
    else:
        check_precision(name, resolve_device(device, name), precision)
    if precision != "int8" and name != "tensorrt":
        # Calibration settings matter to int8 only; auto may have chosen another path (node and CLI
        # pass them whenever the user gave them).
        for key in (*CALIBRATION_OPTIONS, "calibration_table"):
            options.pop(key, None)
    options = options_for(name, options, chosen_by_auto=requested == "auto")
    if name in ("onnxruntime", "openvino") and precision == "int8":
        options.setdefault("dataset", getattr(info, "dataset", "unknown"))
        options.setdefault("calibration_table", getattr(info, "calibration", None))
    if ((name == "onnxruntime" and precision == "int8") or name == "openvino") and engine_cache_dir is not None:
        options.setdefault("cache_dir", engine_cache_dir)  # openvino caches every compiled model
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, info.normalization, input_size, resolve_device(device), precision, **options)
    if name == "openvino":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(model, info.normalization, input_size, resolve_device(device, name), precision,
                               **options)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, info.normalization, input_size, resolve_device(device, name), precision,
                                  **options)
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
