"""ONNX Runtime backend: the fused pipeline exported to ONNX, run by a tuned InferenceSession.

By default one graph with dynamic batch and frame size serves every frame (one export, about a
second for the default model), except frames already at the model size: they get their own graph
without the resize (an identity Resize still costs a pass over the frame). ``dynamic=False`` exports
one fixed-shape graph per frame shape. On the CPU the graph's tail runs channels-last
(``export.channels_last_tail_onnx``). CUDAExecutionProvider is used when the device is CUDA and the
provider is present.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..checkpoint import Normalization
from . import Backend, BackendError

LOGGER = logging.getLogger("bisenetv2_ros")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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

    def __init__(self, model, normalization: Normalization, input_size: tuple[int, int], device: str = "cpu",
                 precision: str = "fp32", dynamic: bool = True, exporter: str = "legacy", threads: int | None = None,
                 opset: int = 17, spin: bool = False) -> None:
        if precision != "fp32":
            raise BackendError(f"precision {precision!r} is not available with onnxruntime; use 'fp32' "
                               "(fp16 and int8 run with the tensorrt backend)")
        if device not in ("auto", None, "cpu") and not str(device).startswith("cuda"):
            raise BackendError(f"unknown device {device!r}; use 'cpu' or 'cuda[:n]'")
        super().__init__("cpu" if device in ("auto", None) else device, precision, input_size)
        self.model = model.eval()
        self.normalization = normalization
        self.dynamic = dynamic
        self.exporter = exporter
        self.threads = threads
        self.opset = opset
        self.spin = spin
        self._sessions: dict[tuple, object] = {}
        self._model_only = None

    def onnx_bytes(self, channel_order: str = "rgb", frame_shape: tuple[int, int, int] | None = None) -> bytes:
        from ..export import fused_onnx_bytes

        batch, frame_size = (None, "dynamic") if frame_shape is None else (frame_shape[0], frame_shape[1:])
        return fused_onnx_bytes(self.model, self.normalization, self.input_size, frame_size, channel_order,
                                batch, self.opset, self.exporter, channels_last_tail=self.device == "cpu")

    def graph_shape(self, frame_shape: tuple[int, int, int]) -> tuple | None:
        """The fixed (batch, height, width) of the graph that serves these frames, or None (dynamic)."""
        if not self.dynamic:
            return tuple(frame_shape)
        if tuple(frame_shape[1:]) == self.input_size:
            return (None, *self.input_size)  # no resize; any batch
        return None

    def session(self, channel_order: str = "rgb", frame_shape: tuple[int, int, int] | None = None):
        key = (channel_order, None if frame_shape is None else self.graph_shape(frame_shape))
        session = self._sessions.get(key)
        if session is None:
            LOGGER.info("onnxruntime backend: exporting the fused pipeline (%s, frames %s)", channel_order,
                        "of any size" if key[1] is None else "x".join("N" if v is None else str(v) for v in key[1]))
            session = make_session(self.onnx_bytes(channel_order, key[1]), self.device, self.threads, self.spin)
            self._sessions[key] = session
        return session

    def _run(self, frames: np.ndarray, channel_order: str) -> np.ndarray:
        frames = np.ascontiguousarray(frames)
        return self.session(channel_order, frames.shape[:3]).run(None, {"frames": frames})[0]

    def run_model(self, x: np.ndarray) -> np.ndarray:
        """Network only (for benchmarks): normalised float32 NCHW at the model size -> logits at that size."""
        if self._model_only is None:
            self._model_only = make_session(_network_onnx_bytes(self.model, self.input_size, self.opset),
                                            self.device, self.threads, self.spin)
        return self._model_only.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def _network_onnx_bytes(model, input_size: tuple[int, int], opset: int) -> bytes:
    import io
    import warnings

    import torch

    from .fused import fold_batchnorm

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fold_batchnorm(model), (torch.zeros(1, 3, *input_size),), buffer, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()
