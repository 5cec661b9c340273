"""Several cameras through the node's pipeline: `bisenetv2 benchmark-cameras`.

Runs the node's own ROS-free machinery (per-camera newest-frame slots, one worker, the batched
``SegmentationPipeline`` building labels, color and info messages) on synthetic cameras that publish
HEIGHTxWIDTH bgr8 frames at ``--rate`` Hz each, and compares, side by side in one run:

- *batched*: one process, N cameras, one network (what `cameras: [...]` does);
- *separate*: N processes with one camera each, running at the same time (N single-camera nodes).

Each configuration runs in fresh child processes (so resident memory is per "node"), started
together and measured over the same window; rounds alternate the configurations so that load from
other programs hits all of them alike. Prints frames/s per camera and in total, time per batch,
frames per network call, latency, the batched/separate throughput ratio and each process's peak
resident memory. Messages are rosbags dataclasses (no middleware): the figures are the node's
pipeline, not DDS transport.

    bisenetv2 benchmark-cameras --cameras 1,2,4 --frame-size 480x640 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from ..cli.arguments import add_size, float_in_range, int_in_range, positive_int, script_main

CHILD_FLAG = "--child-cameras"


def _counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected camera counts like 1,2,4, got {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 16:
        raise argparse.ArgumentTypeError(f"camera counts must be 1..16, got {text!r}")
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=_counts, default=[1, 2, 4], metavar="N[,N...]",
                        help="camera counts to run (default 1,2,4); each N > 1 runs batched and as N separate "
                             "processes")
    add_size(parser, "--frame-size", "frame_size", default=(480, 640), old_width_by_height="--size",
             help="frame size (default 480x640)")
    parser.add_argument("--rate", type=float_in_range(0.0, 1000.0, low_open=True), default=30.0, help="frames per second each camera sends (default 30)")
    parser.add_argument("--seconds", type=float_in_range(0.0, 3600.0, low_open=True), default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float_in_range(0.0, 3600.0), default=2.0, help="unmeasured seconds before each run (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="rounds over all configurations (default 2)")
    parser.add_argument("--weights", default="camvid", help="checkpoint path or known name (default: embedded camvid)")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, tensorrt or openvino (default auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--max-batch", type=int_in_range(0, 64), default=0, help="the node's max_batch (default 0: all cameras)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(CHILD_FLAG, type=int, default=0, help=argparse.SUPPRESS)


# --------------------------------------------------------------------------------------------
# One "node": runs in a child process, talks to the parent over stdin/stdout


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_node(args: argparse.Namespace) -> dict[str, Any]:
    """Builds an N-camera pipeline, prints 'ready', waits for a line on stdin, then measures."""
    from rosbags.typesys import Stores, get_typestore

    from ..ros import frame_worker, messages
    from ..ros.parameters import NodeSettings
    from ..ros.pipeline import CameraState, SegmentationPipeline, create_segmenter

    count = args.child_cameras
    names = [f"cam{index}" for index in range(count)]
    settings = NodeSettings(weights=args.weights, backend=args.backend, device=args.device,
                            cameras=names if count > 1 else [], max_batch=args.max_batch)
    load_started = time.monotonic()
    segmenter, classes = create_segmenter(settings)
    load_s = time.monotonic() - load_started
    types = messages.register_rosbags_types(get_typestore(Stores.ROS2_JAZZY)).types
    Image, Header, Time = (types[name] for name in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                   "builtin_interfaces/msg/Time"))
    published = [0] * count

    def sink(index):
        def publish(output, msg):
            if output == "labels":
                published[index] += 1
        return publish

    cameras = [CameraState(name, publish=sink(index)) for index, name in enumerate(settings.camera_names)]
    failures: list[str] = []
    pipeline = SegmentationPipeline(segmenter, classes, settings, cameras, image_type=Image,
                                              info_type=types["bisenetv2_ros/msg/SegmentationInfo"],
                                              warn=failures.append, on_failure=failures.append)
    batches: list[tuple[float, float, int]] = []  # (start, seconds, frames)

    def timed_batch(batch):
        started = time.monotonic()
        pipeline.process_batch(batch)
        batches.append((started, time.monotonic() - started, len(batch)))

    slots = frame_worker.FrameSlots(count, max_items=lambda: settings.max_batch)
    intake = frame_worker.FrameIntake(slots, cameras, settings)
    worker = frame_worker.FrameWorker(slots, timed_batch)
    height, width = args.frame_size
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, height * width * 3, dtype=np.uint8) for _ in range(count)]
    stop = threading.Event()

    def camera(index):  # a driver publishing at --rate; each frame a new message with its own stamp
        period, sent = 1.0 / args.rate, 0
        next_time = time.monotonic() + index * period / count  # cameras are not synchronised
        while not stop.is_set():
            delay = next_time - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            stamp = Time(sec=sent // 1000, nanosec=sent % 1000)
            intake.offer(Image(header=Header(stamp=stamp, frame_id=names[index]), height=height, width=width,
                               encoding="bgr8", is_bigendian=0, step=width * 3, data=pixels[index]), camera=index)
            sent += 1
            next_time += period

    # The first frame of a new size or batch is slow (a backend may build a graph for it): do it here,
    # unmeasured, for the batch this process will mostly run.
    segmenter.segment_batch(np.stack([pixels[0].reshape(height, width, 3)] * count), channel_order="bgr")
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts every process of a run at once
    worker.start()
    feeders = [threading.Thread(target=camera, args=(index,), daemon=True) for index in range(count)]
    for feeder in feeders:
        feeder.start()
    time.sleep(args.warmup)
    window_start, start_counts = time.monotonic(), list(published)
    time.sleep(args.seconds)
    window = time.monotonic() - window_start
    end_counts = list(published)
    stop.set()
    worker.stop()
    measured = [(seconds, frames) for started, seconds, frames in batches if started >= window_start]
    per_camera = [(end - start) / window for start, end in zip(start_counts, end_counts)]
    latencies = [camera.stats.snapshot().latency_p50_ms for camera in cameras]
    return {
        "cameras": count, "backend": segmenter.backend_name, "device": str(segmenter.device),
        "model_input": list(segmenter.input_size), "load_s": round(load_s, 2),
        "fps_per_camera": [round(v, 2) for v in per_camera], "fps_total": round(sum(per_camera), 2),
        "batch_ms_p50": round(1000 * statistics.median(s for s, _ in measured), 1) if measured else None,
        "frames_per_batch": round(statistics.mean(f for _, f in measured), 2) if measured else None,
        "latency_p50_ms": round(statistics.median(latencies), 1),  # nan before a camera's first frame
        "dropped_stale": sum(camera.stats.dropped_stale for camera in cameras),
        "failures": len(failures), "first_failure": failures[0] if failures else "",
        "rss_mib": round(_rss_mib(), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# --------------------------------------------------------------------------------------------
# The parent: runs the configurations side by side, round after round


def _child_command(args: argparse.Namespace, count: int) -> list[str]:
    height, width = args.frame_size
    return [sys.executable, "-m", "bisenetv2_ros.benchmarks.cameras_benchmark", CHILD_FLAG, str(count),
            "--frame-size", f"{height}x{width}", "--rate", str(args.rate), "--seconds", str(args.seconds),
            "--warmup", str(args.warmup), "--weights", args.weights, "--backend", args.backend,
            "--device", args.device, "--max-batch", str(args.max_batch)]


def _run_together(args: argparse.Namespace, counts: list[int]) -> list[dict[str, Any]]:
    """Starts one child per entry of ``counts``, waits until all are ready, starts them at once."""
    children = [subprocess.Popen(_child_command(args, count), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for count in counts]
    try:
        for child in children:
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a benchmark process failed to start (exit {child.wait()}); see its error above")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            output, _ = child.communicate(timeout=args.warmup + args.seconds + 120)
            lines = output.strip().splitlines()
            if not lines or not lines[-1].startswith("{"):
                raise RuntimeError(f"a benchmark process ended with exit status {child.returncode} and no result")
            results.append(json.loads(lines[-1]))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        info["model"] = model
        info["simd"] = [flag for flag in ("avx2", "fma", "avx512f", "amx_tile") if flag in flags]
    except (OSError, StopIteration):
        pass
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def run(args: argparse.Namespace) -> int:
    if args.child_cameras:
        print(json.dumps(run_node(args)), flush=True)
        # Interpreter teardown with ONNX Runtime / torch threads alive once aborted a child
        # ("terminate called without an active exception"); the measurement is out, so skip it.
        from ..ros.stop_signals import exit_without_finalizing

        exit_without_finalizing(0)
    if args.rate <= 0 or args.seconds <= 0 or args.rounds < 1 or args.warmup < 0:
        raise SystemExit("--rate and --seconds must be positive, --rounds at least 1, --warmup not negative")
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for round_index in range(args.rounds):
        for count in args.cameras:
            configurations = [(f"batched {count}", [count])]
            if count > 1:
                configurations.append((f"separate {count}x1", [1] * count))
            if round_index % 2:  # alternate which goes first
                configurations.reverse()
            for name, counts in configurations:
                print(f"round {round_index + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                runs.setdefault(name, []).append(_run_together(args, counts))
    summary = _summarise(args, runs)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary)
    return 0


def _median(values) -> float | None:
    values = [value for value in values if value is not None]
    return round(statistics.median(values), 2) if values else None


def _summarise(args: argparse.Namespace, runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, Any]:
    rows = {}
    for name, rounds in runs.items():
        totals = [sum(process["fps_total"] for process in processes) for processes in rounds]
        cameras = sum(process["cameras"] for process in rounds[0])
        processes = [process for processes in rounds for process in processes]
        rows[name] = {
            "processes": len(rounds[0]), "cameras": cameras,
            "fps_total_median": round(statistics.median(totals), 2), "fps_total_rounds": totals,
            "fps_per_camera_median": round(statistics.median(totals) / cameras, 2),
            "batch_ms_p50": _median(process["batch_ms_p50"] for process in processes),
            "frames_per_batch": _median(process["frames_per_batch"] for process in processes),
            "latency_p50_ms": _median(process["latency_p50_ms"] for process in processes
                                      if not math.isnan(process["latency_p50_ms"])),
            "peak_rss_mib_per_process": max(process["peak_rss_mib"] for process in processes),
            "backend": f"{rounds[0][0]['backend']}/{rounds[0][0]['device']}",
        }
    ratios = {}
    for count in args.cameras:
        batched, separate = runs.get(f"batched {count}"), runs.get(f"separate {count}x1")
        if batched and separate:
            per_round = [sum(p["fps_total"] for p in b) / max(sum(p["fps_total"] for p in s), 1e-9)
                         for b, s in zip(batched, separate)]
            ratios[f"{count} cameras: batched / separate fps"] = {
                "median": round(statistics.median(per_round), 2), "rounds": [round(v, 2) for v in per_round]}
    one = rows.get("batched 1")
    for count in args.cameras:
        if one and count > 1 and f"batched {count}" in rows:
            ratios[f"{count} cameras: memory of one batched process / one single-camera process"] = round(
                rows[f"batched {count}"]["peak_rss_mib_per_process"] / one["peak_rss_mib_per_process"], 2)
    height, width = args.frame_size
    return {"frame": f"{height}x{width} (HxW) bgr8", "rate_hz_per_camera": args.rate, "seconds": args.seconds,
            "rounds": args.rounds, "weights": args.weights, "max_batch": args.max_batch, "machine": _cpu(),
            "runs": rows, "ratios": ratios}


def _print_table(summary: dict[str, Any]) -> None:
    machine = summary["machine"]
    print(f"{summary['frame']} frames, each camera sending {summary['rate_hz_per_camera']:g} Hz; "
          f"{summary['seconds']:g} s measured x {summary['rounds']} rounds; weights {summary['weights']}")
    print(f"CPU: {machine.get('model', '?')} ({', '.join(machine.get('simd', []))}), {machine['cores']} cores, "
          f"load {machine['load_average_1min']}")
    print(f"  {'configuration':20s} {'backend':16s} {'fps total':>9s} {'fps/cam':>8s} {'batch ms':>9s} "
          f"{'frames/call':>11s} {'latency ms':>10s} {'peak RSS MiB/process':>21s}")
    def text(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, row in summary["runs"].items():
        print(f"  {name:20s} {row['backend']:16s} {row['fps_total_median']:9.2f} {row['fps_per_camera_median']:8.2f} "
              f"{text(row['batch_ms_p50'], 1):>9s} {text(row['frames_per_batch'], 2):>11s} "
              f"{text(row['latency_p50_ms'], 1):>10s} {row['peak_rss_mib_per_process']:21.1f}")
    for name, value in summary["ratios"].items():
        print(f"  {name}: {value['median'] if isinstance(value, dict) else value}"
              + (f" (rounds {value['rounds']})" if isinstance(value, dict) else ""))


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, "python -m bisenetv2_ros.benchmarks.cameras_benchmark", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
