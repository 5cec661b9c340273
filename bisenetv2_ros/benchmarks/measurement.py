"""What every benchmark here measures with: the machine's description, latency statistics, a timer
(CUDA events on a GPU), memory, synthetic frames, and the weights to time (the embedded default, or a
random default-config network when asked or when it is missing)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..conventions import DEFAULT_INPUT_SIZE
from ..inference.cpu import cpu_cores


def machine_info() -> dict[str, Any]:
    from ..inference.cpu import cpu_info

    info = {"cpu": cpu_info().to_dict(), "cpu_cores": cpu_cores(), "torch": torch.__version__,
            "load_average_1min": os.getloadavg()[0]}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


RANDOM_NOTE = "random default-config model (C_t=1024), timing only"


def benchmark_weights(requested: str | None) -> tuple[str | None, str]:
    if requested == "random":
        return None, RANDOM_NOTE
    if requested:
        return requested, ""
    from ..weights.known_weights import DEFAULT_WEIGHTS, KNOWN_WEIGHTS, PACKAGE_WEIGHTS_DIR

    entry = KNOWN_WEIGHTS.get(DEFAULT_WEIGHTS)
    if entry is not None and entry.embedded and (PACKAGE_WEIGHTS_DIR / entry.file_name).is_file():
        return DEFAULT_WEIGHTS, ""
    return None, "embedded default weights not present: " + RANDOM_NOTE


def random_default_checkpoint(folder: Path, architecture: str = "bisenetv2") -> Path:
    from ..classes import CITYSCAPES
    from ..models.architectures import build_model, default_config
    from ..weights.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint

    torch.manual_seed(0)
    model = build_model(default_config(architecture, num_classes=len(CITYSCAPES), aux_heads=False)).eval()
    info = CheckpointInfo(CITYSCAPES, train_resolution=DEFAULT_INPUT_SIZE, dataset="random (benchmark)")
    return save_checkpoint(Checkpoint.from_model(model, info), folder / f"random_{architecture}.pt")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def latency_stats(times_ms: Sequence[float], batch: int) -> dict[str, float]:
    values = np.asarray(times_ms)
    p50 = float(np.percentile(values, 50))
    return {"p50_ms": round(p50, 2), "p90_ms": round(float(np.percentile(values, 90)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "fps": round(1000.0 * batch / p50, 2)}


def timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds of one call: CUDA events on a GPU (the GPU's own clock), perf_counter on CPU."""
    if device.startswith("cuda"):
        def timed(call):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return timed

    def timed_cpu(call):
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1000.0
    return timed_cpu


def random_frames(args, input_size) -> np.ndarray:
    height, width = args.frame_size or input_size
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (args.batch, height, width, 3), dtype=np.uint8)
