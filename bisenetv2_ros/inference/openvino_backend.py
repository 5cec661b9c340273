"""OpenVINO backend (CPU): the fused ONNX graph the onnxruntime backend runs, compiled by OpenVINO.

fp32 pins OpenVINO's inference precision to f32 (its CPU plugin otherwise runs bf16 wherever the CPU
has it); bf16 asks for bf16 and is refused on a CPU without native bf16 (AVX512-BF16 / AMX), where
OpenVINO would quietly run f32. int8 compiles the QDQ graph ``int8.py`` makes for ONNX Runtime, from
the same calibration (frames, or the table the weights carry), so the pre-processing, classifier and
labels tail stay float there too and scores are not rounded before the argmax.

One graph per channel order (dynamic frame size; frames already at the model size get one without
the resize, as with ONNX Runtime), reshaped to each frame shape and compiled for it: static shapes
let OpenVINO fold the resize sizes and pick its kernels once. Compiled models are cached on disk like
TensorRT engines (``engine_cache.EngineCache``: ``export_model`` / ``import_model``), keyed by the
source graph, OpenVINO's version, the CPU, the precision, the thread count and for int8 the
calibration and quantiser settings.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..weights.checkpoint import Normalization
from .backend_base import Backend, BackendError, check_precision
from .engine_cache import EngineCache, default_engine_cache_dir
from .onnx_graph import CONFIDENCE_NAME, MIN_OPSET, OUTPUT_NAME, fused_onnx_bytes
from .signal_stack import kept_signal_stack

LOGGER = logging.getLogger("bisenetv2_ros")
INSTALL_HINT = "pip install openvino (or the extra: pip install 'bisenetv2_ros[openvino]')"
# OpenVINO's names for the precisions it is asked to run the float parts in.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


_shared_core = None
_shared_core_lock = threading.Lock()


def shared_core(ov):
    """The process's one ``openvino.Core``, its CPU plugin loaded with the thread's signal stack kept.

    One Core for the whole process, never released before exit: every Core loads the CPU plugin
    afresh, which swaps the thread's alternate signal stack and, released out of order or on another
    thread, left it pointing at unmapped memory: a later SIGTERM crashed the process (signal_stack.py).
    """
    global _shared_core
    with _shared_core_lock:
        if _shared_core is None:
            from .signal_stack import kept_signal_stack

            with kept_signal_stack():
                core = ov.Core()
                core.get_property("CPU", "FULL_DEVICE_NAME")  # loads the plugin now, under the guard
            _shared_core = core
        return _shared_core


def import_openvino():
    """The openvino module, or a BackendError saying how to install it."""
    try:
        import openvino
    except ImportError as error:
        raise BackendError(f"the openvino backend needs the openvino package, which is not importable ({error}); "
                           f"{INSTALL_HINT}; or use backend 'onnxruntime'") from None
    return openvino


class OpenVinoBackend(Backend):
    name = "openvino"
    supports_confidence = True

    def __init__(self, model, normalization: Normalization, input_size: tuple[int, int], device: str = "cpu",
                 precision: str = "fp32", threads: int | None = None, opset: int = MIN_OPSET,
                 calibration_images: str | os.PathLike | None = None, calibration_frames: np.ndarray | None = None,
                 calibration_limit: int | None = None, dataset: str = "unknown",
                 cache_dir: str | os.PathLike | None = None, calibration_table: dict | None = None) -> None:
        if device not in ("auto", None, "cpu"):
            raise BackendError(f"the openvino backend runs on the CPU here, not {device!r}; use device='cpu' "
                               f"(or the tensorrt / torch backends on a GPU)")
        check_precision(self.name, "cpu", precision)
        from .cpu import BF16_FLAGS, cpu_info, native_bf16

        info = cpu_info()
        if precision == "bf16" and not native_bf16(info.flags):
            raise BackendError(f"precision 'bf16' with openvino needs a CPU with native bf16 ({' / '.join(BF16_FLAGS)}); "
                               f"this CPU ({info.model}) has none, and OpenVINO would run f32 instead; use 'fp32' or 'int8'")
        self.ov = import_openvino()
        super().__init__("cpu", precision, input_size)
        self.calibration = None
        if precision == "int8":
            from .int8 import calibration_for

            self.calibration = calibration_for(model, normalization, calibration_frames, calibration_images, dataset,
                                               calibration_limit, calibration_table)
        self.model, self.normalization, self.opset = model.eval(), normalization, opset
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir else default_engine_cache_dir()
        self.core = shared_core(self.ov)
        self._graphs: dict[tuple, bytes] = {}  # (channel order, at model size, confidence) -> ONNX
        self._requests: dict[tuple, object] = {}  # (channel order, frame shape, confidence) -> infer request
        self.cache_files: list[Path] = []

    def config(self) -> dict[str, object]:
        from .cpu import cpu_cores

        # One stream, latency first: the node runs one frame (or batch) at a time.
        return {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision], "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": int(self.threads or cpu_cores())}

    def graph(self, channel_order: str, at_model_size: bool, confidence: bool = False) -> bytes:
        """The fused ONNX graph (quantised for int8) that frames of this order are compiled from."""
        key = (channel_order, at_model_size, confidence)
        if key not in self._graphs:
            frame_size = self.input_size if at_model_size else "dynamic"
            data = fused_onnx_bytes(self.model, self.normalization, self.input_size, frame_size, channel_order,
                                    None, self.opset, confidence=confidence)
            self._graphs[key] = data
        return self._graphs[key]

    def request(self, channel_order: str, frame_shape: tuple[int, int, int], confidence: bool = False):
        key = (channel_order, tuple(frame_shape), confidence)
        request = self._requests.get(key)
        if request is None:
            request = self._compiled(channel_order, tuple(frame_shape), confidence).create_infer_request()
            self._requests[key] = request
        return request

    def _compiled(self, channel_order: str, frame_shape: tuple[int, int, int], confidence: bool = False):
        from .cpu import cpu_info

        source = self.graph(channel_order, tuple(frame_shape[1:]) == self.input_size, confidence)
        source_hash = hashlib.sha256(source).hexdigest()
        info = cpu_info()
        slot = {"name": f"openvino-{source_hash[:12]}", "precision": self.precision,
                "shape": "x".join(map(str, frame_shape)), "order": channel_order}
        key = {"onnx_sha256": source_hash, "openvino": self.ov.get_version(), "cpu": info.model,
               "cpu_flags": info.reported_flags, "config": self.config(), "frame_shape": list(frame_shape)}
        settings = None
        if self.precision == "int8":
            from .int8 import int8_cache_key, quantizer_settings

            settings = quantizer_settings(info.flags)
            key["int8"] = int8_cache_key(source, self.calibration, self.input_size, settings)

        def build() -> bytes:
            onnx_bytes = source
            if settings is not None:
                from .int8 import quantize_with

                LOGGER.info("openvino int8: quantising with %s (one-off; the result is cached)", self.calibration.source)
                graph_shape = (None, *self.input_size) if tuple(frame_shape[1:]) == self.input_size else None
                onnx_bytes = quantize_with(self.calibration, source, self.input_size, graph_shape, channel_order,
                                           settings)
            LOGGER.info("openvino %s: compiling for %s frames (%s)", self.precision, "x".join(map(str, frame_shape)),
                        channel_order)
            ov_model = self.core.read_model(bytes(onnx_bytes))
            ov_model.reshape({ov_model.inputs[0].get_any_name(): list(frame_shape) + [3]})
            with kept_signal_stack():
                compiled = self.core.compile_model(ov_model, "CPU", self.config())
            stream = io.BytesIO()
            compiled.export_model(stream)
            return stream.getvalue()

        def load(data: bytes):
            with kept_signal_stack():
                return self.core.import_model(data, "CPU", self.config())

        compiled, path = EngineCache(self.cache_dir).load_or_build(slot, key, build, load)
        self.cache_files.append(path)
        return compiled

    def _run(self, frames: np.ndarray, channel_order: str, confidence: bool = False):
        frames = np.ascontiguousarray(frames)
        outputs = self.request(channel_order, frames.shape[:3], confidence).infer({0: frames})
        if confidence:
            return np.array(outputs[OUTPUT_NAME], copy=True), np.array(outputs[CONFIDENCE_NAME], copy=True)
        return np.array(outputs[0], copy=True)
