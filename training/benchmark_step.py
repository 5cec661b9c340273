"""Seconds per training iteration (forward + booster loss + backward + SGD step) for CPU speed choices.

    python training/benchmark_step.py --size 240x320 --batch 8 --threads 2 --variants fp32 channels_last

Variants are run interleaved (A B A B ...) so that load from other processes hits all of them alike;
the medians, their ratio to the first variant and iterations per hour are printed with the CPU model and
its flags. Variants: fp32 (NCHW), channels_last, bf16 (autocast), bf16_channels_last, compile
(torch.compile), compile_channels_last, compile_bf16.

Whether a faster variant trains like fp32: run train.py twice with the same config and seed, once with
``--set run.amp=none`` and once with the variant, then compare their logs block by block:

    python training/benchmark_step.py --compare-logs runs/fp32/log.jsonl runs/bf16/log.jsonl --block 20
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import platform
import statistics
import time
from typing import Sequence

import torch

from bisenetv2_ros.cli.arguments import (
    add_debug_flag,
    add_size_accepting_two_numbers,
    batch_int,
    int_in_range,
    non_negative_int,
    positive_int,
    run_script,
    threads_int,
)
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from training.losses import BoosterLoss, OhemCrossEntropy
from training.run_setup import cpu_has_native_bf16, param_groups

VARIANTS = ("fp32", "channels_last", "bf16", "bf16_channels_last", "compile", "compile_channels_last", "compile_bf16")


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == (platform.processor() or "unknown CPU"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                flags = " ".join(f for f in line.split(":", 1)[1].split() if f in wanted)
                break
    except OSError:
        pass
    return f"{model} [{flags}], native bf16: {cpu_has_native_bf16()}"


class Step:
    """One variant's model, optimizer and a fixed random batch."""

    def __init__(self, variant: str, size: Sequence[int], batch: int, head_channels: int) -> None:
        torch.manual_seed(0)
        self.variant = variant
        self.memory_format = torch.channels_last if "channels_last" in variant else torch.contiguous_format
        self.model = BiSeNetV2(BiSeNetV2Config(num_classes=11, head_channels=head_channels)).to(
            memory_format=self.memory_format).train()
        self.net = torch.compile(self.model) if variant.startswith("compile") else self.model
        self.optimizer = torch.optim.SGD(param_groups(self.model, 5e-4), lr=0.01, momentum=0.9)
        self.criterion = BoosterLoss(OhemCrossEntropy())
        self.images = torch.randn(batch, 3, *size).contiguous(memory_format=self.memory_format)
        self.labels = torch.randint(0, 11, (batch, *size))

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in self.variant):
            outputs = self.net(self.images)
        loss, _ = self.criterion(outputs, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def loss_blocks(log: Path, block: int, key: str = "loss_main") -> dict[int, float]:
    """Mean ``key`` of train.py's log.jsonl per block of ``block`` iterations: {last iteration of block: mean}."""
    sums: dict[int, list[float]] = {}
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"--compare-logs {log}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--compare-logs {log}: not text (is it train.py's log.jsonl?)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if isinstance(record, dict) and key in record and "iteration" in record:
                sums.setdefault((int(record["iteration"]) - 1) // block, []).append(float(record[key]))
        except (ValueError, TypeError, RecursionError):
            raise ValueError(f"--compare-logs {log}: line {number} is not a log record of train.py") from None
    if not sums:
        raise ValueError(f"--compare-logs {log}: no '{key}' entries (is it train.py's log.jsonl?)")
    return {(index + 1) * block: statistics.fmean(values) for index, values in sorted(sums.items())}


def compare_logs(logs: Sequence[Path], block: int) -> dict[str, dict[int, float]]:
    """Prints each log's block means beside the first's, and the largest gap relative to the first."""
    curves = {str(log): loss_blocks(Path(log), block) for log in logs}
    reference = curves[str(logs[0])]
    shared = sorted(set.intersection(*(set(c) for c in curves.values())))
    print(f"mean main loss per {block} iterations; first log is the reference ({logs[0]})")
    print("iterations  " + "  ".join(f"{Path(log).parent.name:>14}" for log in logs))
    for end in shared:
        print(f"{end:>10}  " + "  ".join(f"{curves[str(log)][end]:14.4f}" for log in logs))
    for log in logs[1:]:
        gaps = [abs(curves[str(log)][end] - reference[end]) / reference[end] for end in shared]
        print(f"{Path(log).parent.name}: largest gap {100 * max(gaps):.1f} %, mean gap {100 * statistics.fmean(gaps):.1f} % "
              f"of the reference's block mean")
    return curves


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="training/benchmark_step.py", description=__doc__.split("\n")[0])
    add_size_accepting_two_numbers(parser, "--size", help="training crop HxW (default 240x320)", default=(240, 320))
    parser.add_argument("--batch", type=batch_int, default=8)
    parser.add_argument("--threads", type=threads_int, default=2)
    parser.add_argument("--head-channels", type=int_in_range(1, 65536), default=128)
    parser.add_argument("--rounds", type=positive_int, default=5, help="timed iterations per variant")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed iterations per variant (compile happens here)")
    parser.add_argument("--variants", nargs="+", default=["fp32", "channels_last"], choices=VARIANTS)
    parser.add_argument("--compare-logs", nargs="+", type=Path, default=None, metavar="LOG",
                        help="instead of timing: compare the loss curves of train.py logs (the first is the reference)")
    parser.add_argument("--block", type=positive_int, default=20, help="iterations per block for --compare-logs")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.compare_logs:
        compare_logs(args.compare_logs, args.block)
        return {}
    torch.set_num_threads(args.threads)
    steps = [Step(v, args.size, args.batch, args.head_channels) for v in args.variants]
    for step in steps:
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for step in steps:
            times[step.variant].append(step())
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} threads, batch {args.batch} "
          f"x {args.size[0]}x{args.size[1]}, head C_t {args.head_channels}, {args.rounds} interleaved rounds")
    medians = {v: statistics.median(t) for v, t in times.items()}
    first = medians[args.variants[0]]
    for variant, median in medians.items():
        print(f"{variant:<24} {median:6.3f} s/iter   x{first / median:4.2f} vs {args.variants[0]}   "
              f"{3600 / median:6.0f} iterations/hour")
    return medians


if __name__ == "__main__":
    sys.exit(run_script("training/benchmark_step.py", main))
