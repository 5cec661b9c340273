"""PyTorch backend: BN folded into the convolutions, channels_last, inference mode, optional compile.

compile modes (``compile=``):
  "off"       eager execution of the folded channels_last graph (default: builds instantly).
  "inductor"  ``torch.compile`` with freezing (weights become constants); on CUDA it also captures
              CUDA graphs ("reduce-overhead"). The fastest torch path on CPU (1.2-1.3x over eager on a
              2-core box), but the first frame of every new shape compiles for about a minute on a
              small CPU (under 20 s once torch's compile cache is warm), so it is opt-in.
  "script"    TorchScript trace + freeze + optimize_for_inference (a few seconds per shape).
Compiled pipelines are cached per (channel order, frame shape).
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch

from ..checkpoint import Normalization
from . import Backend, BackendError
from .fused import FusedSegmentation, fold_batchnorm

LOGGER = logging.getLogger("bisenetv2_ros")
COMPILE_MODES = ("off", "inductor", "script")
DEFAULT_COMPILE_ENV = "BISENETV2_TORCH_COMPILE"


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, normalization: Normalization, input_size: tuple[int, int],
                 device: str = "cpu", precision: str = "fp32", compile: str | None = None,
                 fold_bn: bool = True, channels_last: bool = True) -> None:
        super().__init__(device, precision, input_size)
        compile = compile or os.environ.get(DEFAULT_COMPILE_ENV, "off")
        if compile not in COMPILE_MODES:
            raise BackendError(f"unknown torch compile mode {compile!r}; choose one of {COMPILE_MODES}")
        if precision == "int8":
            raise BackendError("precision 'int8' is only available with the tensorrt backend")
        if precision == "fp16" and device == "cpu":
            raise BackendError("precision 'fp16' needs CUDA with the torch backend; on CPU use 'fp32'")
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"unknown precision {precision!r} for the torch backend; use 'fp32' or 'fp16'")
        self.compile_mode = compile
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        network = fold_batchnorm(model) if fold_bn else model.eval()
        network = network.to(device=device, dtype=self.dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.to(memory_format=self.memory_format)
        self.normalization = normalization
        self._fused: dict[str, FusedSegmentation] = {}
        self._compiled: dict[tuple, torch.nn.Module] = {}

    def pipeline(self, channel_order: str = "rgb") -> FusedSegmentation:
        """The eager fused module for this channel order (shares the network's weights)."""
        if channel_order not in self._fused:
            fused = FusedSegmentation(self.network, self.normalization, self.input_size, channel_order)
            self._fused[channel_order] = fused.to(device=self.device, dtype=self.dtype)
        return self._fused[channel_order]

    def _pipeline_for(self, frames: torch.Tensor, channel_order: str) -> torch.nn.Module:
        fused = self.pipeline(channel_order)
        if self.compile_mode == "off":
            return fused
        key = (channel_order, tuple(frames.shape))
        compiled = self._compiled.get(key)
        if compiled is None:
            LOGGER.info("torch backend: compiling (%s) for frames of shape %s", self.compile_mode, tuple(frames.shape))
            if self.compile_mode == "script":
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TorchScript deprecation notices; it still measures fastest to build
                    traced = torch.jit.trace(fused, frames, check_trace=False)
                    compiled = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            else:
                # dynamic=False: one specialised graph per frame shape, which is what we cache by.
                # Freezing is switched on around each call (run_tensor), where the graph is built.
                mode = "reduce-overhead" if self.device != "cpu" else "default"
                compiled = torch.compile(fused, dynamic=False, mode=mode)
            self._compiled[key] = compiled
        return compiled

    def run_tensor(self, frames: torch.Tensor, channel_order: str = "rgb") -> torch.Tensor:
        """uint8 (N, H, W, 3) tensor on the backend's device -> uint8 (N, H, W) tensor, no host copies."""
        module = self._pipeline_for(frames, channel_order)
        with torch.inference_mode():
            if self.compile_mode == "inductor":
                with torch._inductor.config.patch(freezing=True):
                    labels = module(frames)
                # CUDA graphs reuse their output memory on the next replay: hand out a copy.
                return labels.clone() if self.device != "cpu" else labels
            return module(frames)

    def _run(self, frames: np.ndarray, channel_order: str) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device != "cpu":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return self.run_tensor(tensor, channel_order).cpu().numpy()

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """Network only (for benchmarks): normalised float NCHW at the model size -> logits at that size."""
        with torch.inference_mode():
            return self.network(x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format))
