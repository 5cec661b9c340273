"""What this CPU can do, and the instruction-set rule for ``precision: auto``.

The rule serves where nothing is measured (``BISENETV2_AUTO=rule``, a single candidate); by
default auto measures the candidate paths instead (``measured_auto``), since flags do not say
what is fast.

The rule is a pure function of the instruction-set flags (``auto_precision``), so it is tested
without the hardware; ``cpu_info`` reads the flags from /proc/cpuinfo (Linux, x86 and ARM) and
asks PyTorch which kernels it dispatches to.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Flags that give native bf16 matrix arithmetic (AMX tiles, AVX-512 BF16 dot products).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Flags with int8 dot-product instructions; without them AVX2 still runs int8 through 16-bit
# multiply-adds (vpmaddubsw), which measured 1.5x over fp32 ONNX Runtime on a 2-core EPYC (docs/measured.md).
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")
# The instruction-set flags worth printing in benchmark output (the rest is noise for inference).
REPORTED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                  "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "bf16",
                  "i8mm")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity), which a container or taskset can limit."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] = field(default_factory=frozenset)
    torch_capability: str = "unknown"  # torch.backends.cpu.get_cpu_capability(), e.g. "AVX2", "AVX512"

    @property
    def reported_flags(self) -> list[str]:
        return [flag for flag in REPORTED_FLAGS if flag in self.flags]

    def to_dict(self) -> dict:
        return {"model": self.model, "isa_flags": self.reported_flags, "torch_capability": self.torch_capability}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text (x86 'flags', ARM 'Features')."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        pass
    model, flags = parse_cpuinfo(text)
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        capability = "unknown"
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown", flags, capability)


def native_bf16(flags: frozenset[str] | set[str]) -> bool:
    return any(flag in flags for flag in BF16_FLAGS)


def auto_precision(flags: frozenset[str] | set[str], backend: str = "auto", calibration_available: bool = True,
                   machine: str = "x86_64") -> tuple[str, str, str]:
    """The ``precision: auto`` rule on a CPU -> (precision, backend, reason).

    backend: the requested backend ('auto', 'torch', 'onnxruntime', 'openvino'); a named one is kept
    (openvino runs bf16 and int8 both, so it follows steps 1 and 2 itself).
    1. native bf16 (AMX / AVX512-BF16) and torch allowed -> torch bf16 (the team's Xeon measured
       2.2x over fp32 eager PyTorch; issue 12).
    2. x86 with AVX2 (the 1.5x int8 speed-up measured here needs at least AVX2) or an int8 dot
       product, ONNX Runtime allowed, and calibration frames known -> onnxruntime int8.
    3. otherwise fp32 on the requested backend (auto: ONNX Runtime, the fast fp32 CPU path).
    """
    if native_bf16(flags) and backend in ("auto", "torch", "openvino"):
        found = ", ".join(f for f in BF16_FLAGS if f in flags)
        return "bf16", "torch" if backend == "auto" else backend, f"the CPU has native bf16 ({found})"
    int8_capable = any(f in flags for f in INT8_DOT_FLAGS) or (
        "avx2" in flags and machine.lower() in ("x86_64", "amd64", "i686", "x86"))
    if int8_capable and backend in ("auto", "onnxruntime", "openvino"):
        if calibration_available:
            found = ", ".join(f for f in ("avx2", *INT8_DOT_FLAGS) if f in flags)
            return "int8", "onnxruntime" if backend == "auto" else backend, f"no native bf16; int8 runs fast with {found}"
        return "fp32", backend, ("no native bf16, and int8 needs calibration frames "
                                 "(backend_options calibration_images) that are not known for these weights")
    if backend == "torch" and int8_capable:
        return "fp32", backend, "no native bf16, and int8 runs with onnxruntime, not torch"
    return "fp32", backend, "no native bf16 and no fast int8 path on this CPU"
