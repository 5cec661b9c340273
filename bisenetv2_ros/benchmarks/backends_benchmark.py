"""``bisenetv2 benchmark``: latency, FPS and memory of the segmentation pipeline per backend.

Two timings per run: *model-only* (the network on a normalised float tensor at the model size,
logits out) and *end-to-end* (uint8 camera frame in, uint8 labels at the frame size out: everything
the node pays per frame). GPU work is timed with CUDA events. ``--compare`` runs eager PyTorch fp32,
the optimised torch CPU backend, ONNX Runtime fp32 and every reduced-precision path this CPU runs
(ONNX Runtime int8 everywhere, torch bf16 with native bf16) side by side, interleaved frame by frame
so that load from other processes hits all of them alike, and prints the speed-up ratios; with
``--weights random --architectures bisenetv1,bisenetv2`` it does so for both networks in one run.
The output names the CPU model and its instruction-set flags, since the reduced paths depend on them.

    python -m bisenetv2_ros.benchmarks.backends_benchmark --backend onnxruntime --input-size 512x1024 --frame-size 720x1280
    python -m bisenetv2_ros.benchmarks.backends_benchmark --compare --input-size 256x512
    python -m bisenetv2_ros.benchmarks.backends_benchmark --compare --compile off --weights random --architectures bisenetv1,bisenetv2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..cli.arguments import add_size, batch_int, complete, non_negative_int, positive_int
from ..conventions import DEFAULT_INPUT_SIZE
from ..inference.backends import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from ..inference.background_load import BackgroundLoad
from ..inference.cpu import cpu_cores
from ..inference.fused import FusedSegmentation
from ..models.architectures import ARCHITECTURES
from .breakdown import arithmetic_limit, limit_line, print_breakdown, run_breakdown
from .measurement import (
    benchmark_weights,
    latency_stats,
    machine_info,
    peak_rss_mib,
    random_default_checkpoint,
    random_frames,
    rss_mib,
    timer,
)


def _architectures(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ARCHITECTURES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(ARCHITECTURES)}, got {text!r}")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help="checkpoint path, known name, or 'random': a randomly initialised default-config model "
                             "(C_t 1024, 19 classes; the paper's speed protocol: same speed, meaningless labels). "
                             "Default: the embedded default weights if present, else 'random'")
    parser.add_argument("--architectures", type=_architectures, default=None, metavar="LIST",
                        help="with --weights random: the networks to build, comma-separated from "
                             f"{','.join(ARCHITECTURES)} (default: bisenetv2); several need --compare")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="auto (default: what the Segmenter picks on this machine, logged), fp32, fp16, bf16, int8")
    default = "x".join(map(str, DEFAULT_INPUT_SIZE))
    add_size(parser, "--input-size", "input_size", old_sides=("--height", "--width"),
             help=f"network input size, e.g. 360x480 (default: the checkpoint's, else {default})")
    add_size(parser, "--frame-size", "frame_size", old_width_by_height="--source-size",
             help="camera frame size, e.g. 720x1280 (default: the network input size)")
    parser.add_argument("--batch", type=batch_int, default=1, help="frames per call (e.g. several cameras)")
    parser.add_argument("--iters", type=positive_int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed iterations first (compilation happens here)")
    parser.add_argument("--compile", choices=("off", "inductor", "script"), default=None,
                        help="torch backend compile mode (default: off; --compare tries all)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, repeatable, e.g. --option dynamic=false (onnxruntime fixed-shape graphs)")
    parser.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb")
    parser.add_argument("--confidence", action="store_true",
                        help="also time end to end with the confidence output, interleaved with the labels-only run")
    parser.add_argument("--engine-cache", default=None, help="cache folder of TensorRT engines and int8 graphs")
    parser.add_argument("--calibration-images", default=None, help="folder of images for int8 calibration")
    parser.add_argument("--compare", action="store_true",
                        help="eager torch fp32 vs optimised torch CPU vs onnxruntime fp32 vs the reduced-precision "
                             "paths this CPU runs (onnxruntime int8, torch bf16), interleaved, with ratios")
    parser.add_argument("--background-load", type=non_negative_int, default=0, metavar="N",
                        help="time while N competing busy processes run (started and stopped by the benchmark): "
                             "a robot's CPU is shared with drivers, localisation and planning")
    parser.add_argument("--memory-frames", type=non_negative_int, default=0, metavar="N",
                        help="also run N frames end to end and report RSS at the start and the end")
    parser.add_argument("--breakdown", action="store_true", help="per-stage times (convert, resize, network, upsample "
                        "+ argmax, confidence, colour, overlay, message) at --frame-size, else at 480x640 .. 2160x3840")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..inference.segmenter import Segmenter

    weights, note = benchmark_weights(args.weights)
    architectures = args.architectures or ["bisenetv2"]
    if args.architectures and weights is not None:
        raise SystemExit("--architectures builds random models: use it with --weights random "
                         "(a checkpoint names its own architecture)")
    if len(architectures) > 1 and not args.compare:
        raise SystemExit("several --architectures are compared side by side: add --compare")
    if weights is None and architectures != ["bisenetv2"]:
        note = f"random default-config {', '.join(architectures)}, timing only"
    with tempfile.TemporaryDirectory() as scratch:
        if weights is None:
            checkpoints = {name: random_default_checkpoint(Path(scratch), name) for name in architectures}
        else:
            checkpoints = {"": weights}
        model_size = complete(args.input_size, None, "--input-size")
        if args.compare:
            result = _compare(args, checkpoints, model_size)
        else:
            options: dict[str, Any] = {}
            if args.compile:
                options["compile"] = args.compile
            for item in args.option:
                key, _, value = item.partition("=")
                options[key] = {"true": True, "false": False}.get(value.lower(), value)
            if args.calibration_images:
                options["calibration_images"] = args.calibration_images
            seg = Segmenter(next(iter(checkpoints.values())), backend=args.backend, device=args.device, precision=args.precision,
                            input_size=model_size, engine_cache_dir=args.engine_cache, backend_options=options,
                            frame_size=args.frame_size, batch=args.batch)
            result = _single(args, seg)
            weights_used = next(iter(checkpoints.values()))  # limit: this network's MACs at the chosen precision
            result["arithmetic_limit"] = arithmetic_limit(weights_used, seg, result["end_to_end"]["p50_ms"], args.batch)
            if args.breakdown:
                result["breakdown"] = run_breakdown(weights_used, seg, args.frame_size and [args.frame_size],
                                                    args.iters, args.warmup)
            if seg.auto_decision is not None:  # the table auto measured (or read from its cache) on this machine
                result["auto"] = {"table": seg.auto_decision.table_lines(), "rows": seg.auto_decision.rows,
                                  "measured_at": seg.auto_decision.measured_at}
    result["weights"] = str(args.weights or "default") + (f" ({note})" if note else "")
    result["background_load"] = args.background_load
    result["machine"] = machine_info()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def _single(args, seg) -> dict[str, Any]:
    backend = seg.backend
    frames = random_frames(args, seg.input_size)
    timed = timer(seg.device)
    rss_start = rss_mib()
    if seg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    results: dict[str, Any] = {
        "backend": seg.backend_name, "device": seg.device, "precision": seg.precision,
        "model_input_hxw": list(seg.input_size), "frame_hxw": list(frames.shape[1:3]), "batch": args.batch,
        "iters": args.iters, "warmup": args.warmup,
    }
    if hasattr(backend, "compile_mode"):
        results["compile"] = backend.compile_mode
    run_model = getattr(backend, "run_model", None) if seg.precision != "int8" else None
    model_call = None
    if run_model is not None:
        x = torch.randn(args.batch, 3, *seg.input_size)
        x_in = x.numpy() if seg.backend_name == "onnxruntime" else x.to(seg.device)
        model_call = lambda: run_model(x_in)  # noqa: E731
    for _ in range(args.warmup):
        if model_call:
            model_call()
        seg.segment_batch(frames, args.channel_order)
        if getattr(args, "confidence", False):
            seg.segment_batch(frames, args.channel_order, confidence=True)
    # Model-only and end-to-end alternate, so that load from other processes hits both alike.
    # End to end is wall time on every device: it includes the host<->device copies a node pays.
    model_times, e2e, with_confidence = [], [], []
    with BackgroundLoad(args.background_load):
        for _ in range(args.iters):
            if model_call:
                model_times.append(timed(model_call))
            start = time.perf_counter()
            seg.segment_batch(frames, args.channel_order)
            e2e.append((time.perf_counter() - start) * 1000.0)
            if getattr(args, "confidence", False):
                with_confidence.append(timed(lambda: seg.segment_batch(frames, args.channel_order, confidence=True)))
    results["model_only"] = (latency_stats(model_times, args.batch) if model_call else
                             "not measured for this backend (its engine or quantised graph holds the whole pipeline)")
    results["end_to_end"] = latency_stats(e2e, args.batch)
    if with_confidence:
        results["end_to_end_with_confidence"] = latency_stats(with_confidence, args.batch)
        results["confidence_cost"] = round(results["end_to_end_with_confidence"]["p50_ms"] / results["end_to_end"]["p50_ms"] - 1, 3)
        # each iteration ran both: the median of the per-iteration differences shrugs off load drifts
        results["confidence_paired_ms"] = round(float(np.median(np.subtract(with_confidence, e2e))), 2)
    if isinstance(results["model_only"], dict):
        results["end_to_end_over_model_only"] = round(results["end_to_end"]["p50_ms"] / results["model_only"]["p50_ms"], 3)
    results["rss_mib"] = {"after_setup": round(rss_start, 1), "after_timing": round(rss_mib(), 1),
                          "peak": round(peak_rss_mib(), 1)}
    if seg.device.startswith("cuda"):
        results["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if args.memory_frames:
        start = rss_mib()
        marks = []
        for i in range(args.memory_frames):
            seg.segment_batch(frames, args.channel_order)
            if (i + 1) % max(1, args.memory_frames // 4) == 0:
                marks.append(round(rss_mib(), 1))
        results["rss_over_frames"] = {"frames": args.memory_frames, "start_mib": round(start, 1),
                                      "quarters_mib": marks, "end_mib": round(rss_mib(), 1)}
    return results


def _compare(args, checkpoints: dict[str, Any], model_size) -> dict[str, Any]:
    """Interleaved end-to-end timing (frame in, labels out) of the CPU variants at one size: fp32 ones
    and the reduced-precision paths this CPU runs.

    ``checkpoints``: {label: weights}; with several (e.g. one per architecture) every variant of every
    model joins the same interleaved loop and is named "<label> <variant>".
    """
    from ..inference.cpu import cpu_info, native_bf16
    from ..inference.onnxruntime_backend import OnnxRuntimeBackend
    from ..inference.torch_backend import TorchBackend
    from ..weights.known_weights import load_model

    variants: dict[str, Callable[[], np.ndarray]] = {}
    eager_of: dict[str, str] = {}  # variant -> the eager variant of the same model
    ort_of: dict[str, str] = {}    # variant -> the ONNX Runtime fp32 variant of the same model
    build_s: dict[str, float] = {}
    agreement: dict[str, float] = {}
    calibration_notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    threads: dict[str, int] = {"torch": torch.get_num_threads()}
    bf16 = native_bf16(cpu_info().flags)
    input_size = frames = None
    for label, weights in checkpoints.items():
        prefix = f"{label} " if label else ""
        model, info = load_model(weights)
        if input_size is None:
            input_size = tuple(model_size or info.train_resolution or DEFAULT_INPUT_SIZE)
            frames = random_frames(args, input_size)
        tensor = torch.from_numpy(frames)
        eager = FusedSegmentation(model, info.normalization, input_size, args.channel_order)

        def eager_run(eager=eager, tensor=tensor):
            with torch.inference_mode():
                return eager(tensor).numpy()

        calls: dict[str, Callable[[], np.ndarray]] = {prefix + "torch eager fp32": eager_run}
        modes = [args.compile] if args.compile else ["off", "script", "inductor"]
        backends = {f"torch {m}": TorchBackend(model, info.normalization, input_size, "cpu", "fp32", compile=m)
                    for m in modes}
        backends["onnxruntime"] = OnnxRuntimeBackend(model, info.normalization, input_size, "cpu")
        calibration, note = _calibration_options(args, info, input_size)
        calibration_notes[prefix + "onnxruntime int8"] = note
        backends["onnxruntime int8"] = OnnxRuntimeBackend(model, info.normalization, input_size, "cpu", "int8",
                                                          cache_dir=args.engine_cache, **calibration)
        if bf16:
            backends["torch bf16"] = TorchBackend(model, info.normalization, input_size, "cpu", "bf16",
                                                  compile=args.compile or "off")
        else:
            skipped[prefix + "torch bf16"] = "no native bf16 on this CPU (amx_bf16 / avx512_bf16)"
        backends.update(_openvino_variants(args, model, info, input_size, calibration, bf16, prefix, skipped))
        threads["onnxruntime"] = backends["onnxruntime"].threads or cpu_cores()
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.run(frames, args.channel_order)  # export / quantise / trace / compile happens on the first frame
            build_s[prefix + name] = round(time.perf_counter() - start, 1)
            calls[prefix + name] = (lambda b: lambda: b.run(frames, args.channel_order))(backend)
        reference = eager_run()
        for name, call in calls.items():
            agreement[name] = round(float((call() == reference).mean()), 5)
            eager_of[name], ort_of[name] = prefix + "torch eager fp32", prefix + "onnxruntime"
        variants.update(calls)
    for _ in range(args.warmup):
        for call in variants.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    with BackgroundLoad(args.background_load):
        for _ in range(args.iters):
            for name, call in variants.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000.0)
    stats = {name: latency_stats(t, args.batch) for name, t in times.items()}

    def ratio(reference: str, name: str) -> float:
        return round(stats[reference]["p50_ms"] / stats[name]["p50_ms"], 2)

    return {"mode": "compare (end to end, interleaved)", "model_input_hxw": list(input_size),
            "frame_hxw": list(frames.shape[1:3]), "batch": args.batch, "iters": args.iters,
            "threads": threads, "models": [label for label in checkpoints if label],
            "int8_calibration": calibration_notes, "not_run": skipped,
            "variants": {name: {**stats[name], "speedup_vs_eager": ratio(eager_of[name], name),
                                "speedup_vs_onnxruntime_fp32": ratio(ort_of[name], name),
                                "labels_equal_to_eager": agreement[name], "first_frame_s": build_s.get(name)}
                         for name in variants},
            "peak_rss_mib": round(peak_rss_mib(), 1)}

def _openvino_variants(args, model, info, input_size, calibration, bf16: bool, prefix: str,
                       skipped: dict[str, str]) -> dict[str, Any]:
    """The OpenVINO paths for --compare (fp32, int8 from the same calibration, bf16 where native)."""
    from ..inference.backends import openvino_importable

    names = ["openvino", "openvino int8"] + (["openvino bf16"] if bf16 else [])
    if not openvino_importable():
        skipped.update({prefix + name: "openvino is not installed (pip install openvino)" for name in names})
        return {}
    from ..inference.openvino_backend import OpenVinoBackend

    if not bf16:
        skipped[prefix + "openvino bf16"] = "no native bf16 on this CPU (amx_bf16 / avx512_bf16)"
    precisions = {"openvino": "fp32", "openvino int8": "int8", "openvino bf16": "bf16"}
    return {name: OpenVinoBackend(model, info.normalization, input_size, "cpu", precisions[name],
                                  cache_dir=args.engine_cache, **(calibration if name.endswith("int8") else {}))
            for name in names}


def _calibration_options(args, info, input_size) -> tuple[dict[str, Any], str]:
    """int8 calibration for --compare: the given folder, else the table the weights carry, else their
    training frames, else random frames (said so in the output: fine for timing, not for labels)."""
    from ..inference.int8 import default_calibration_folder

    if args.calibration_images is None and info.calibration is not None:
        return {"calibration_table": info.calibration}, "the calibration table the weights carry"
    folder = args.calibration_images or default_calibration_folder(info.dataset)
    if folder is not None:
        return {"calibration_images": str(folder)}, f"images from {folder}"
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, *input_size, 3), dtype=np.uint8)
    return {"calibration_frames": frames}, "4 random frames (no calibration folder known: timing only)"


def _print_table(result: dict[str, Any]) -> None:
    print(f"weights: {result['weights']}")
    cpu = result["machine"]["cpu"]
    print(f"CPU: {cpu['model']}; instruction sets: {' '.join(cpu['isa_flags']) or 'none reported'}; "
          f"torch kernels: {cpu['torch_capability']}")
    print(f"machine: {result['machine']}")
    if result.get("background_load"):
        print(f"timed with {result['background_load']} competing busy process(es) running")
    if "variants" in result:
        print(f"{result['mode']}: model {result['model_input_hxw']} (HxW), frame {result['frame_hxw']} (HxW), "
              f"batch {result['batch']}, {result['iters']} iterations, threads {result['threads']}")
        print(f"{'variant':<30}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'FPS':>8}{'x eager':>9}{'x ORT':>7}"
              f"{'equal':>9}{'1st s':>8}")
        for name, s in result["variants"].items():
            print(f"{name:<30}{s['p50_ms']:>10.1f}{s['p90_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['fps']:>8.2f}"
                  f"{s['speedup_vs_eager']:>9.2f}{s['speedup_vs_onnxruntime_fp32']:>7.2f}"
                  f"{s['labels_equal_to_eager']:>9.4f}{s['first_frame_s'] or 0:>8.1f}")
        for name, note in result["int8_calibration"].items():
            print(f"{name} calibration: {note}")
        for name, why in result["not_run"].items():
            print(f"not run: {name} ({why})")
        print(f"peak RSS {result['peak_rss_mib']} MiB")
        return
    print(f"backend {result['backend']} on {result['device']}, {result['precision']}"
          + (f", compile {result['compile']}" if "compile" in result else "")
          + f"; model {result['model_input_hxw']} (HxW), frame {result['frame_hxw']} (HxW), batch {result['batch']}")
    for part in ("model_only", "end_to_end", "end_to_end_with_confidence"):
        s = result.get(part)
        if s is None:
            continue
        if isinstance(s, dict):
            print(f"  {part:<12} p50 {s['p50_ms']:8.1f} ms  p90 {s['p90_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  "
                  f"{s['fps']:7.2f} FPS")
        else:
            print(f"  {part:<12} {s}")
    if "confidence_cost" in result:
        print(f"  confidence costs {100 * result['confidence_cost']:+.1f} % end to end (median paired difference "
              f"{result['confidence_paired_ms']:+.2f} ms)")
    if "end_to_end_over_model_only" in result:
        print(f"  end to end / model only: {result['end_to_end_over_model_only']:.3f}")
    print(f"  RSS MiB: {result['rss_mib']}" + (f"; GPU peak {result['gpu_peak_allocated_mib']} MiB"
                                               if "gpu_peak_allocated_mib" in result else ""))
    if "rss_over_frames" in result:
        print(f"  RSS over frames: {result['rss_over_frames']}")
    if "auto" in result:
        print("\n".join(result["auto"]["table"]))
    if result.get("arithmetic_limit"):
        print(limit_line(result["arithmetic_limit"]))
    if "breakdown" in result:
        print_breakdown(result["breakdown"])


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="bisenetv2 benchmark", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
