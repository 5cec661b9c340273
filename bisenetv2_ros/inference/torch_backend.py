"""PyTorch backend: BN folded into the convolutions, channels_last, inference mode, optional compile.

compile modes (``compile=``):
  "off"       eager execution of the folded channels_last graph (default: builds instantly).
  "inductor"  ``torch.compile`` with freezing (weights become constants); on CUDA it also captures
              CUDA graphs ("reduce-overhead"). The fastest torch path on CPU (1.2-1.3x over eager on a
              2-core box), but the first frame of every new shape compiles for about a minute on a
              small CPU (under 20 s once torch's compile cache is warm), so it is opt-in.
  "script"    TorchScript trace + freeze + optimize_for_inference (a few seconds per shape).
Compiled pipelines are cached per (channel order, frame shape).

precision "bf16" (CPU): bf16 weights, channels_last, BN folded; the uint8 pre-processing and the
labels tail (logits upsampling, argmax) stay float32 (``FusedSegmentation.network_dtype``). Only on
CPUs with native bf16 (AMX or AVX512-BF16); elsewhere a BackendError, unless ``emulate_bf16=True``
(runs, slower than fp32: for checking labels).
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch

from ..weights.checkpoint import Normalization
from .backend_base import Backend, BackendError, check_precision
from .fused import FusedSegmentation, fold_batchnorm

LOGGER = logging.getLogger("bisenetv2_ros")
COMPILE_MODES = ("off", "inductor", "script")
DEFAULT_COMPILE_ENV = "BISENETV2_TORCH_COMPILE"


def require_native_bf16(emulate: bool = False) -> None:
    """A BackendError unless this CPU has native bf16 arithmetic (AMX or AVX512-BF16).

    emulate=True lets bf16 run anyway: PyTorch then converts to and from float32 around each
    operation, which is slower than fp32 (useful for checking labels, never for speed).
    """
    from .cpu import BF16_FLAGS, cpu_info, native_bf16

    info = cpu_info()
    if native_bf16(info.flags):
        return
    if emulate:
        LOGGER.warning("torch bf16 on a CPU without native bf16 (%s): emulated, slower than fp32", info.model)
        return
    raise BackendError(f"precision 'bf16' needs a CPU with native bf16 ({' or '.join(BF16_FLAGS)}); this CPU "
                       f"({info.model}, torch capability {info.torch_capability}) has neither. Use precision "
                       "'auto' or 'fp32' (or backend_options={'emulate_bf16': True} to check labels, slowly)")


class TorchBackend(Backend):
    name = "torch"
    supports_confidence = True

    def __init__(self, model: torch.nn.Module, normalization: Normalization, input_size: tuple[int, int],
                 device: str = "cpu", precision: str = "fp32", compile: str | None = None,
                 fold_bn: bool = True, channels_last: bool = True, emulate_bf16: bool = False) -> None:
        super().__init__(device, precision, input_size)
        source = "the compile option"
        if not compile:
            compile, source = os.environ.get(DEFAULT_COMPILE_ENV, "off").strip().lower() or "off", f"${DEFAULT_COMPILE_ENV}"
        if compile not in COMPILE_MODES:
            raise BackendError(f"{source}: unknown torch compile mode {compile!r}; choose one of {', '.join(COMPILE_MODES)}")
        check_precision(self.name, "cpu" if device == "cpu" else "cuda", precision)
        if precision == "bf16":
            require_native_bf16(emulate_bf16)
        self.compile_mode = compile
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        network = fold_batchnorm(model) if fold_bn else model.eval()
        network = network.to(device=device, dtype=self.dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.to(memory_format=self.memory_format)
        self.normalization = normalization
        self._fused: dict[tuple[str, bool], FusedSegmentation] = {}
        self._compiled: dict[tuple, torch.nn.Module] = {}

    def pipeline(self, channel_order: str = "rgb", confidence: bool = False) -> FusedSegmentation:
        """The eager fused module for this channel order (shares the network's weights)."""
        key = (channel_order, confidence)
        if key not in self._fused:
            fused = FusedSegmentation(self.network, self.normalization, self.input_size, channel_order, confidence)
            if self.dtype == torch.bfloat16:  # bf16 network, float32 pre-processing and labels tail
                fused.network_dtype = self.dtype
                self._fused[key] = fused.to(device=self.device)
            else:
                self._fused[key] = fused.to(device=self.device, dtype=self.dtype)
        return self._fused[key]

    def _pipeline_for(self, frames: torch.Tensor, channel_order: str, confidence: bool = False) -> torch.nn.Module:
        fused = self.pipeline(channel_order, confidence)
        if self.compile_mode == "off":
            return fused
        key = (channel_order, confidence, tuple(frames.shape))
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

    def run_tensor(self, frames: torch.Tensor, channel_order: str = "rgb", confidence: bool = False):
        """uint8 (N, H, W, 3) tensor on the backend's device -> uint8 (N, H, W) labels tensor (and the
        confidence tensor with ``confidence=True``), no host copies."""
        module = self._pipeline_for(frames, channel_order, confidence)
        with torch.inference_mode():
            if self.compile_mode == "inductor":
                with torch._inductor.config.patch(freezing=True):
                    outputs = module(frames)
                # CUDA graphs reuse their output memory on the next replay: hand out a copy.
                if self.device != "cpu":
                    outputs = tuple(o.clone() for o in outputs) if confidence else outputs.clone()
                return outputs
            return module(frames)

    def _run(self, frames: np.ndarray, channel_order: str, confidence: bool = False):
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device != "cpu":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        outputs = self.run_tensor(tensor, channel_order, confidence)
        if confidence:
            return tuple(o.cpu().numpy() for o in outputs)
        return outputs.cpu().numpy()

    returns_logits = True

    def run_tta(self, frames: np.ndarray, channel_order: str, settings) -> np.ndarray:
        """Labels averaged over flip / scale views (``bisenetv2_ros.inference.tta``), eager (compile does not apply)."""
        from .tta import tta_scores

        tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        with torch.inference_mode():
            scores = tta_scores(self.pipeline(channel_order), tensor, settings)
            return scores.argmax(dim=1).to(torch.uint8).cpu().numpy()

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """Network only (for benchmarks): normalised float NCHW at the model size -> logits at that size."""
        with torch.inference_mode():
            return self.network(x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format))
