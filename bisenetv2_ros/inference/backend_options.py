"""Which backend takes which option, read from each backend's constructor (so a new option needs no list).

``backend_options`` reach every candidate ``auto`` measures and whichever backend it picks; an option of
one backend (``resize_in``: ONNX Runtime only) must not disqualify the others, and a misspelt one must be
named, not turn into "no candidate path could run here".
"""

from __future__ import annotations

import importlib
import inspect
import logging
from functools import lru_cache
from typing import Any, Mapping

from .backend_base import BackendError

LOGGER = logging.getLogger("bisenetv2_ros")
BACKEND_CLASSES = {"torch": ("torch_backend", "TorchBackend"), "onnxruntime": ("onnxruntime_backend", "OnnxRuntimeBackend"),
                   "openvino": ("openvino_backend", "OpenVinoBackend"), "tensorrt": ("tensorrt_backend", "TensorRTBackend")}
# What create_backend itself passes (not options a user gives)
POSITIONAL = frozenset({"self", "model", "normalization", "input_size", "device", "precision"})


@lru_cache(maxsize=None)
def option_names(backend: str) -> frozenset[str]:
    """The keyword options ``backend``'s constructor takes."""
    module, name = BACKEND_CLASSES[backend]
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return frozenset(inspect.signature(cls.__init__).parameters) - POSITIONAL


def require_known(options: Mapping[str, Any]) -> None:
    """An option no backend takes is an error naming it (checked before ``auto`` measures anything: else
    every candidate failed on it and the error read "no candidate path could run here")."""
    everyone = {name: option_names(name) for name in BACKEND_CLASSES}
    unknown = sorted(set(options) - set().union(*everyone.values()))
    if unknown:
        raise BackendError(f"unknown backend option(s) {', '.join(unknown)}; each backend takes: "
                           + "; ".join(f"{name}: {', '.join(sorted(names))}" for name, names in everyone.items()))


def options_for(backend: str, options: Mapping[str, Any], chosen_by_auto: bool) -> dict[str, Any]:
    """``options`` that ``backend`` takes (after ``require_known``): one that only other backends take is an
    error when the user named ``backend``, and left out (one log line) when ``auto`` chose it."""
    everyone = {name: option_names(name) for name in BACKEND_CLASSES}
    others = sorted(set(options) - everyone[backend])
    if others and not chosen_by_auto:
        takers = {key: [name for name, names in everyone.items() if key in names] for key in others}
        raise BackendError(f"backend option(s) {', '.join(others)} do not apply to {backend} ("
                           + "; ".join(f"{key}: {', '.join(names)} only" for key, names in takers.items())
                           + f"); {backend} takes {', '.join(sorted(everyone[backend]))}")
    if others:
        LOGGER.info("backend options %s do not apply to %s (auto's choice): not used", ", ".join(others), backend)
    return {key: value for key, value in options.items() if key not in others}


def options_fingerprint(options: Mapping[str, Any]) -> dict[str, str]:
    """The options as text for a cache key (arrays, such as calibration frames, by shape and hash)."""
    import hashlib

    import numpy as np

    return {name: (f"array {value.shape} {hashlib.sha256(np.ascontiguousarray(value)).hexdigest()}"
                   if isinstance(value, np.ndarray) else repr(value)) for name, value in sorted(options.items())}
