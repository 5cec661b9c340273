"""TensorRT 10 backend: the fused ONNX graph built into one engine per frame shape, cached on disk.

Written against the TensorRT 10 Python API (``trt.Builder``, ``OnnxParser``, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``, ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).
Buffers are torch CUDA tensors, so no pycuda is needed. Engines are built from the same ONNX export
the onnxruntime backend runs (the tested path) and cached by ``EngineCache``, keyed by the ONNX hash,
the TensorRT version, the GPU name, the precision and the shapes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ..conventions import DEFAULT_WORKSPACE_GIB
from ..fileio import write_atomic
from ..weights.checkpoint import Normalization
from . import int8
from .backend_base import Backend, BackendError, cuda_available, tensorrt_importable
from .engine_cache import EngineCache, default_engine_cache_dir
from .onnx_graph import CONFIDENCE_NAME, OUTPUT_NAME, fused_onnx_bytes

LOGGER = logging.getLogger("bisenetv2_ros")
ENGINE_NAME = "bisenetv2"  # the engine cache slot's name, unless the caller names it


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as error:
        raise BackendError(f"the tensorrt backend needs the TensorRT 10 Python package ({error}); "
                           "install TensorRT or use backend='torch' / 'onnxruntime'") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendError(f"the tensorrt backend needs TensorRT >= 10, found {trt.__version__}")
    return trt


def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def calibration_files(folder: str | os.PathLike | None, limit: int = 64) -> list[Path]:
    """Image files for int8 calibration (spread over the folder); a clear error when there are none."""
    if folder is None:
        raise BackendError("precision 'int8' needs calibration images: pass calibration_images=<folder of "
                           "representative frames> (a few dozen PNG/JPEG images)")
    return int8.calibration_files(folder, limit)


def require_engine_build(precision: str, calibration_images: str | os.PathLike | None = None) -> None:
    """One clear BackendError, before anything is written, unless an engine can be built here:
    TensorRT >= 10 importable, a CUDA GPU visible, calibration images for int8."""
    if not tensorrt_importable():
        raise BackendError("building a TensorRT engine needs the TensorRT 10 Python package 'tensorrt', "
                           "which is not installed here")
    _import_tensorrt()  # the version check
    if not cuda_available():
        raise BackendError("building a TensorRT engine needs a CUDA GPU, and torch sees none here")
    if precision == "int8":
        calibration_files(calibration_images)


def _make_calibrator(trt, files: list[Path], frame_shape: tuple[int, int, int], channel_order: str, cache_path: Path):
    """An IInt8EntropyCalibrator2 feeding uint8 frames (resized to the engine's frame size) from files."""
    import torch

    batch, height, width = frame_shape

    class FolderCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.position = 0
            self.buffer = torch.empty((batch, height, width, 3), dtype=torch.uint8, device="cuda")

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if self.position + batch > len(files):
                return None
            frames = int8.load_calibration_frames(files[self.position:self.position + batch], (height, width),
                                                  channel_order)
            self.buffer.copy_(torch.from_numpy(frames))
            self.position += batch
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            try:  # a cache: an unwritable one costs the next build a calibration, nothing else
                write_atomic(cache_path, bytes(cache))
            except OSError as error:
                LOGGER.warning("cannot keep the TensorRT int8 calibration cache (%s); the next build calibrates "
                               "again", error)

    return FolderCalibrator()


def build_serialized_engine(onnx_bytes: bytes, precision: str, frame_shape: tuple[int, int, int],
                            workspace_gib: float = DEFAULT_WORKSPACE_GIB, calibrator=None) -> bytes:
    """ONNX bytes -> serialized TensorRT plan for uint8 frames of exactly ``frame_shape`` (N, H, W)."""
    trt = _import_tensorrt()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch dimension
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
    shape = (*frame_shape, 3)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if precision == "int8":
        if calibrator is None:
            raise BackendError("precision 'int8' needs calibration images")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT failed to build a {precision} engine for frames {shape} (see its log above)")
    return bytes(plan)


def build_engine_cached(onnx_bytes: bytes, directory: Path, precision: str, frame_shape: tuple[int, int, int],
                        channel_order: str = "rgb", workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                        calibration_images: str | os.PathLike | None = None, name: str = ENGINE_NAME,
                        device: str = "cuda") -> Path:
    """Build-only mode: make sure the cache holds an up-to-date engine; returns its file."""
    _, path = load_engine_cached(onnx_bytes, directory, precision, frame_shape, channel_order, workspace_gib,
                                 calibration_images, name, device)
    return path


def load_engine_cached(onnx_bytes: bytes, directory: Path, precision: str, frame_shape: tuple[int, int, int],
                       channel_order: str = "rgb", workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                       calibration_images: str | os.PathLike | None = None, name: str = ENGINE_NAME,
                       device: str = "cuda", runtime=None):
    """(engine, cache file). Pass a long-lived ``runtime``: it must outlive the engines it deserializes."""
    trt = _import_tensorrt()
    import torch

    files = calibration_files(calibration_images) if precision == "int8" else []
    index = torch.device(device).index or 0
    slot = {"name": name, "precision": precision, "shape": "x".join(map(str, frame_shape)), "order": channel_order}
    key = {
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(index),
        "precision": precision,
        "frame_shape": list(frame_shape),
        "workspace_gib": workspace_gib,
        "calibration": int8.files_fingerprint(files) if files else None,
    }
    runtime = runtime or trt.Runtime(_trt_logger(trt))

    def build() -> bytes:
        calibrator = None
        if precision == "int8":
            calibrator = _make_calibrator(trt, files, frame_shape, channel_order,
                                          directory / (EngineCache(directory).path(slot).stem + ".calib"))
        return build_serialized_engine(onnx_bytes, precision, frame_shape, workspace_gib, calibrator)

    with torch.cuda.device(index):
        return EngineCache(directory).load_or_build(slot, key, build, runtime.deserialize_cuda_engine)


def engine_onnx_bytes(model, normalization: Normalization, input_size: tuple[int, int],
                      frame_shape: tuple[int, int, int], channel_order: str = "rgb", confidence: bool = False) -> bytes:
    """The graph an engine for uint8 frames of ``frame_shape`` (N, H, W) is built from: fixed shapes,
    plain tail (and the confidence output when asked). Its hash keys the engine cache, so a prebuilt
    engine is found by the backend."""
    return fused_onnx_bytes(model, normalization, input_size, frame_shape[1:], channel_order, batch=frame_shape[0],
                            confidence=confidence)


def prebuild_engine(model, normalization: Normalization, input_size: tuple[int, int],
                    frame_shape: tuple[int, int, int], precision: str = "fp16", channel_order: str = "rgb",
                    engine_cache_dir: str | os.PathLike | None = None, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                    calibration_images: str | os.PathLike | None = None, device: str = "cuda") -> Path:
    """Build-only mode: puts the engine ``TensorRTBackend`` would build for these frames into its
    cache (default: the backend's), without running it; returns the cache file."""
    onnx_bytes = engine_onnx_bytes(model.eval(), normalization, input_size, frame_shape, channel_order)
    return build_engine_cached(onnx_bytes, Path(engine_cache_dir or default_engine_cache_dir()), precision,
                               tuple(frame_shape), channel_order, workspace_gib, calibration_images, ENGINE_NAME,
                               device)


class TensorRTBackend(Backend):
    name = "tensorrt"
    supports_confidence = True

    def __init__(self, model, normalization: Normalization, input_size: tuple[int, int], device: str = "cuda",
                 precision: str = "fp16", engine_cache_dir: Path | None = None, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                 calibration_images: str | os.PathLike | None = None, name: str | None = None) -> None:
        super().__init__(device, precision, input_size)
        self.trt = _import_tensorrt()
        if precision == "int8":
            calibration_files(calibration_images)  # fail now, not at the first frame
        self.model = model.eval()
        self.normalization = normalization
        self.engine_cache_dir = Path(engine_cache_dir) if engine_cache_dir else default_engine_cache_dir()
        self.workspace_gib = workspace_gib
        self.calibration_images = calibration_images
        self.engine_name = name or ENGINE_NAME
        self._engines: dict[tuple, tuple] = {}
        self.runtime = self.trt.Runtime(_trt_logger(self.trt))
        import torch

        self._torch = torch
        self.stream = torch.cuda.Stream(device=device)

    def _context(self, channel_order: str, frame_shape: tuple[int, int, int], confidence: bool = False):
        key = (channel_order, frame_shape, confidence)
        if key not in self._engines:
            onnx_bytes = engine_onnx_bytes(self.model, self.normalization, self.input_size, frame_shape, channel_order,
                                           confidence)
            engine, path = load_engine_cached(onnx_bytes, self.engine_cache_dir, self.precision, frame_shape,
                                              channel_order, self.workspace_gib, self.calibration_images,
                                              self.engine_name, self.device, self.runtime)
            context = engine.create_execution_context()
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
            outputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.OUTPUT]
            wanted = [OUTPUT_NAME, CONFIDENCE_NAME] if confidence else [OUTPUT_NAME]
            if len(inputs) != 1 or sorted(outputs) != sorted(wanted):
                raise BackendError(f"engine {path} has inputs {inputs} and outputs {outputs}; expected one input "
                                   f"and outputs {wanted}")
            context.set_input_shape(inputs[0], (*frame_shape, 3))
            self._engines[key] = (engine, context, inputs[0], wanted)
        return self._engines[key]

    def run_tensor(self, frames, channel_order: str = "rgb", confidence: bool = False):
        """uint8 (N, H, W, 3) CUDA tensor -> uint8 (N, H, W) CUDA labels tensor, and the confidence
        tensor with ``confidence=True`` (synchronised)."""
        torch = self._torch
        frames = frames.contiguous()
        _, context, input_name, output_names = self._context(channel_order, tuple(frames.shape[:3]), confidence)
        outputs = [torch.empty(frames.shape[:3], dtype=torch.uint8, device=self.device) for _ in output_names]
        context.set_tensor_address(input_name, int(frames.data_ptr()))
        for name, output in zip(output_names, outputs):
            context.set_tensor_address(name, int(output.data_ptr()))
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the frame upload happened there
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return tuple(outputs) if confidence else outputs[0]

    def _run(self, frames: np.ndarray, channel_order: str, confidence: bool = False):
        tensor = self._torch.from_numpy(np.ascontiguousarray(frames)).pin_memory().to(self.device, non_blocking=True)
        outputs = self.run_tensor(tensor, channel_order, confidence)
        return tuple(o.cpu().numpy() for o in outputs) if confidence else outputs.cpu().numpy()
