"""ONNX Runtime backend: the fused pipeline exported to ONNX, run by a tuned InferenceSession.

By default one graph with dynamic batch and frame size serves every frame (one export, about a
second for the default model), except frames already at the model size: they get their own graph
without the resize (an identity Resize still costs a pass over the frame). ``dynamic=False`` exports
one fixed-shape graph per frame shape. On the CPU the graph's tail runs channels-last
(``onnx_graph.channels_last_tail_onnx``), or by default outside it: the graph stops at the 1/8 class
scores and ``labels_tail.upsample_argmax`` labels the frame without its frame-size score tensor
(``labels_tail="graph"`` keeps it in the graph). CUDAExecutionProvider is used when the device is CUDA and the
provider is present.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..weights.checkpoint import Normalization
from .backend_base import Backend, BackendError, check_precision
from .cpu import cpu_cores
from .engine_cache import EngineCache, default_engine_cache_dir
from .labels_tail import upsample_argmax
from .onnx_graph import MIN_OPSET, fused_onnx_bytes, network_onnx_bytes

LOGGER = logging.getLogger("bisenetv2_ros")


def make_session(onnx_model: bytes | str, device: str = "cpu", threads: int | None = None, spin: bool = False):
    """InferenceSession with all graph optimisations, one intra-op thread per core, sequential execution.

    spin=False stops the worker threads from busy-waiting between runs. Measured on a 2-core box it
    costs a single session nothing, while spinning workers of one session slowed another session (or
    any other thread of the process, such as a ROS executor) by about 40 %.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cpu_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    providers: list = ["CPUExecutionProvider"]
    if device != "cpu":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendError(f"device {device!r} asks for CUDA but this onnxruntime has no CUDAExecutionProvider "
                               f"(available: {ort.get_available_providers()}); install onnxruntime-gpu or use device='cpu'")
        index = int(device.split(":")[1]) if ":" in device else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    return ort.InferenceSession(onnx_model, options, providers=providers)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    supports_confidence = True

    def __init__(self, model, normalization: Normalization, input_size: tuple[int, int], device: str = "cpu",
                 precision: str = "fp32", dynamic: bool = True, exporter: str = "legacy", threads: int | None = None,
                 opset: int = MIN_OPSET, spin: bool = False, calibration_images: str | os.PathLike | None = None,
                 calibration_frames: np.ndarray | None = None, calibration_limit: int | None = None,
                 dataset: str = "unknown", cache_dir: str | os.PathLike | None = None,
                 quant_format: str = "QDQ", calibration_table: dict | None = None, labels_tail: str = "auto",
                 resize_in: str = "graph") -> None:
        if device not in ("auto", None, "cpu") and not str(device).startswith("cuda"):
            raise BackendError(f"unknown device {device!r}; use 'cpu' or 'cuda[:n]'")
        device = "cpu" if device in ("auto", None) else device
        if precision not in ("fp32", "int8") or (precision == "int8" and device != "cpu"):
            check_precision(self.name, device, precision)
        super().__init__(device, precision, input_size)
        if labels_tail not in ("auto", "outside", "graph"):
            raise BackendError(f"labels_tail must be auto, outside or graph, got {labels_tail!r}")
        # auto: outside on the CPU (where the frame-size scores cost memory bandwidth), in the graph on a GPU
        self.labels_tail = ("outside" if device == "cpu" else "graph") if labels_tail == "auto" else labels_tail
        if resize_in not in ("graph", "uint8"):
            raise BackendError(f"resize_in must be graph or uint8, got {resize_in!r}")
        # uint8: frames are resized by OpenCV on uint8 (bilinear, half-pixel centres like the graph's) before the
        # graph, which then runs at the model size; pixel values round to integers, so labels may differ a little.
        self.resize_in = resize_in
        self.calibration = None
        if precision == "int8":
            from .int8 import QUANT_FORMATS, calibration_for

            if quant_format not in QUANT_FORMATS:
                raise BackendError(f"unknown quant_format {quant_format!r}; choose one of {QUANT_FORMATS}")
            # Resolved now, so that a missing folder fails at start-up, not at the first frame.
            self.calibration = calibration_for(model, normalization, calibration_frames, calibration_images, dataset,
                                               calibration_limit, calibration_table)
            self.cache_dir = Path(cache_dir) if cache_dir else default_engine_cache_dir()
        self.quant_format = quant_format
        self.model, self.normalization = model.eval(), normalization
        self.dynamic, self.exporter, self.opset = dynamic, exporter, opset  # how graphs are exported
        self.threads, self.spin = threads, spin  # how sessions run them (make_session)
        self._sessions: dict[tuple, object] = {}
        self._model_only = None

    def onnx_bytes(self, channel_order: str = "rgb", frame_shape: tuple[int, int, int] | None = None,
                   confidence: bool = False, small_logits: bool = False) -> bytes:
        batch, frame_size = (None, "dynamic") if frame_shape is None else (frame_shape[0], frame_shape[1:])
        return fused_onnx_bytes(self.model, self.normalization, self.input_size, frame_size, channel_order,
                                batch, self.opset, self.exporter, channels_last_tail=self.device == "cpu",
                                confidence=confidence, small_logits=small_logits)

    def graph_shape(self, frame_shape: tuple[int, int, int]) -> tuple | None:
        """The fixed (batch, height, width) of the graph that serves these frames, or None (dynamic)."""
        if not self.dynamic:
            return tuple(frame_shape)
        if tuple(frame_shape[1:]) == self.input_size:
            return (None, *self.input_size)  # no resize; any batch
        return None

    def session(self, channel_order: str = "rgb", frame_shape: tuple[int, int, int] | None = None,
                confidence: bool = False, small_logits: bool = False):
        key = (channel_order, None if frame_shape is None else self.graph_shape(frame_shape), confidence, small_logits)
        session = self._sessions.get(key)
        if session is None:
            LOGGER.info("onnxruntime backend: exporting the fused pipeline (%s, frames %s%s)", channel_order,
                        "of any size" if key[1] is None else "x".join("N" if v is None else str(v) for v in key[1]),
                        ", with confidence" if confidence else ", 1/8 class scores out" if small_logits else "")
            onnx_bytes = self.onnx_bytes(channel_order, key[1], confidence, small_logits)
            if self.precision == "int8":
                session = self._int8_session(onnx_bytes, channel_order, key[1])
            else:
                session = self._new_session(onnx_bytes)
            self._sessions[key] = session
        return session

    def _int8_session(self, onnx_bytes: bytes, channel_order: str, graph_shape: tuple | None):
        """The quantised graph from the cache, or quantised now (and cached) from the calibration."""
        import hashlib

        from .cpu import cpu_info
        from .int8 import int8_cache_key, quantize_with, quantizer_settings

        settings = quantizer_settings(cpu_info().flags)
        source_hash = hashlib.sha256(onnx_bytes).hexdigest()
        shape = "dynamic" if graph_shape is None else "x".join("N" if v is None else str(v) for v in graph_shape)
        slot = {"name": f"onnxruntime-{source_hash[:12]}", "precision": "int8", "shape": shape, "order": channel_order}
        key = int8_cache_key(onnx_bytes, self.calibration, self.input_size, settings, self.quant_format)

        def build() -> bytes:
            LOGGER.info("onnxruntime int8: calibrating on %s (one-off; the result is cached)", self.calibration.source)
            return quantize_with(self.calibration, onnx_bytes, self.input_size, graph_shape, channel_order, settings,
                                 self.quant_format)

        session, path = EngineCache(self.cache_dir).load_or_build(
            slot, key, build, self._new_session)
        self.int8_cache_files = getattr(self, "int8_cache_files", []) + [path]
        return session

    def _new_session(self, onnx_model: bytes):
        return make_session(onnx_model, self.device, self.threads, self.spin)

    def _run(self, frames: np.ndarray, channel_order: str, confidence: bool = False):
        frames = np.ascontiguousarray(frames)
        frame_size = frames.shape[1:3]
        outside = self.labels_tail == "outside" and not confidence
        # (the labels tail must be outside: a graph fed model-size frames would label at the model size)
        if outside and self.resize_in == "uint8" and tuple(frame_size) != self.input_size:
            import cv2

            height, width = self.input_size
            frames = np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in frames])
        outputs = self.session(channel_order, frames.shape[:3], confidence, outside).run(None, {"frames": frames})
        if outside:
            return upsample_argmax(outputs[0], frame_size, bool(self.model.config.align_corners))
        return (outputs[0], outputs[1]) if confidence else outputs[0]

    def run_model(self, x: np.ndarray) -> np.ndarray:
        """Network only (for benchmarks): normalised float32 NCHW at the model size -> logits at that size."""
        if self._model_only is None:
            self._model_only = self._new_session(network_onnx_bytes(self.model, self.input_size, self.opset))
        return self._model_only.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]

