"""``bisenetv2 benchmark --breakdown``: where the time of one frame goes, stage by stage, at the frame size asked.

The stages are those of the node's path, each timed on its own and interleaved (every iteration runs
all of them in order, so load from other processes hits them alike; medians are quoted):

- convert: a ``bgr8`` sensor_msgs/Image -> the frame view the network gets (``messages.image_to_frame``)
- resize in: uint8 frame -> float, bilinear resize to the model size, normalise (the fused graph's
  pre-processing, torch); beside it ``resize in (cv2 uint8)``, the same resize done on uint8 by OpenCV,
  to show what that option would cost
- network: the network at the model size, 1/8 logits out (torch fp32, batch norm folded, channels_last)
- upsample + argmax: the 1/8 class scores to uint8 labels at the frame size, outside the graph
  (``labels_tail.upsample_argmax``, ONNX Runtime's CPU default); beside it ``(in graph)``, the same
  done by upsampling every class score to the frame first (torch; the graph's tail)
- confidence: softmax top probability at 1/8, upsampled to the frame (``fused.top_class_confidence``)
- colour, overlay: the palette lookup and the alpha blend (OpenCV, as the node does)
- message: the labels and colour Image messages as rclpy receives them (their byte copies; DDS
  serialisation is not counted)

The torch stages are those of the torch backend; the backend the Segmenter chose (``auto``) runs its own
graph, so its end-to-end time is printed beside the sum, and the arithmetic limit of the network for the
chosen precision (``inference/arithmetic_limit.py``) beside both.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable

import cv2
import numpy as np
import torch

from ..classes import colorize
from ..inference.fused import FusedSegmentation, fold_batchnorm, top_class_confidence
from ..inference.labels_tail import upsample_argmax
from ..ros import messages

STAGES = ("convert", "resize in", "resize in (cv2 uint8)", "network", "upsample + argmax",
          "upsample + argmax (in graph)", "confidence", "colour", "overlay", "message")
ALTERNATIVES = ("resize in (cv2 uint8)", "upsample + argmax (in graph)")
# What the node pays per frame with colour and overlay on (the alternatives are shown, not summed).
PIPELINE_STAGES = tuple(stage for stage in STAGES if stage not in ALTERNATIVES)


def _message(**fields: Any) -> SimpleNamespace:
    """A stand-in for rclpy's message classes: keyword fields, bytes data (what rclpy is given)."""
    return SimpleNamespace(**fields)


def stage_calls(model: torch.nn.Module, normalization: Any, input_size: tuple[int, int], frame: np.ndarray,
                lookup_table: np.ndarray) -> dict[str, Callable[[], Any]]:
    """One callable per stage, each taking its input from the stage before (computed once here)."""
    height, width = frame.shape[:2]
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="camera")
    msg = _message(header=header, height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3,
                   data=np.ascontiguousarray(frame).tobytes())
    network = fold_batchnorm(model).eval().to(memory_format=torch.channels_last)
    fused = FusedSegmentation(network, normalization, input_size, "bgr")
    frames = torch.from_numpy(np.ascontiguousarray(frame)[None])
    with torch.inference_mode():
        x = fused.preprocess(frames).contiguous(memory_format=torch.channels_last)
        small = network(x, upsample=False)
        labels = network.upsample_logits(small, (height, width)).argmax(dim=1).to(torch.uint8)[0].numpy()
    colors = colorize(labels, lookup_table)
    rgb = messages.to_rgb(frame, "bgr")
    align = bool(getattr(network.config, "align_corners", False))
    small_scores = network.head_class_logits(small).numpy()

    def inference(call: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            with torch.inference_mode():
                return call()
        return run

    return {
        "convert": lambda: messages.image_to_frame(msg),
        "resize in": inference(lambda: fused.preprocess(frames)),
        "resize in (cv2 uint8)": lambda: cv2.resize(frame, input_size[::-1], interpolation=cv2.INTER_LINEAR),
        "network": inference(lambda: network(x, upsample=False)),
        "upsample + argmax": lambda: upsample_argmax(small_scores, (height, width), align),
        "upsample + argmax (in graph)": inference(
            lambda: network.upsample_logits(small, (height, width)).argmax(dim=1).to(torch.uint8)),
        "confidence": inference(lambda: top_class_confidence(network.head_class_logits(small), (height, width), align)),
        "colour": lambda: colorize(labels, lookup_table),
        "overlay": lambda: messages.blend(rgb, colors, 0.5),
        "message": lambda: (messages.labels_to_image(_message, labels, header),
                            messages.array_to_image(_message, header, colors, "rgb8")),
    }


def time_stages(calls: dict[str, Callable[[], Any]], iters: int, warmup: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Milliseconds of each call per iteration, all calls interleaved in every iteration."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append((clock() - start) * 1000.0)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """Median ms per stage, their sum over the node's stages, and each stage's share of that sum."""
    medians = {name: round(float(np.median(values)), 3) for name, values in times.items()}
    total = sum(medians[name] for name in PIPELINE_STAGES if name in medians)
    return {"p50_ms": medians, "sum_p50_ms": round(total, 3),
            "share": {name: round(medians[name] / total, 3) for name in PIPELINE_STAGES if name in medians and total}}


def frame_size_work(summary: dict[str, Any]) -> float:
    """The share of the sum spent at the frame size (everything but the network and its input)."""
    share = summary["share"]
    return round(sum(value for name, value in share.items() if name not in ("network",)), 3)


def print_breakdown(result: dict[str, Any]) -> None:
    for size in result["sizes"]:
        stages = size["stages"]
        print(f"frame {size['frame_hxw'][0]}x{size['frame_hxw'][1]}, model {size['model_input_hxw'][0]}x"
              f"{size['model_input_hxw'][1]}: per-stage p50 ms (torch fp32 stages, interleaved, "
              f"{size['iters']} iterations)")
        for name in STAGES:
            share = stages["share"].get(name)
            print(f"  {name:<30}{stages['p50_ms'][name]:>10.2f}" + (f"{100 * share:>8.1f} %" if share is not None else
                                                                  "   (alternative)"))
        print(f"  {'sum of the stages':<30}{stages['sum_p50_ms']:>10.2f}   outside the network: "
              f"{100 * size['outside_network_share']:.1f} %")
        chosen = size.get("chosen_end_to_end")
        if chosen:
            print(f"  chosen path {chosen['path']}: end to end (labels) p50 {chosen['p50_ms']:.2f} ms"
                  + (f", {size['chosen_over_first_size']:.2f} x the first size" if "chosen_over_first_size" in size else ""))
        if size.get("arithmetic_limit"):
            print(limit_line(size["arithmetic_limit"]))


def limit_line(limit: dict[str, Any]) -> str:
    """One line: the network's MACs, the time the CPU's arithmetic allows for them, the measured multiple."""
    return (f"  arithmetic limit ({limit['precision']}, {limit['instructions']}, {limit['cores']} cores x "
            f"{limit['clock_ghz']} GHz): {limit['network_gmacs']} GMACs in {limit['limit_ms']:.2f} ms; "
            f"end to end = {limit.get('end_to_end_over_limit', float('nan')):.2f} x the limit")


# The camera sizes the breakdown runs at when no --frame-size is given (HxW): VGA, 720p, 1080p, 4K.
CAMERA_SIZES = ((480, 640), (720, 1280), (1080, 1920), (2160, 3840))


def network_macs(weights: Any, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of the network of ``weights`` for one frame at ``input_size`` (``cli/report``)."""
    from ..cli.report import count_macs
    from ..weights.known_weights import load_model

    model, _ = load_model(weights)
    return int(count_macs(model, *input_size))


def arithmetic_limit(weights: Any, segmenter: Any, end_to_end_ms: float | None, batch: int = 1) -> dict[str, Any] | None:
    """The chosen precision's arithmetic limit for ``batch`` frames and the measured time over it; None on a
    GPU (no CPU limit applies) or where the clock is unknown."""
    from ..inference.arithmetic_limit import limit_report

    if not str(segmenter.device).startswith("cpu"):
        return None
    report = limit_report(network_macs(weights, segmenter.input_size) * batch, segmenter.precision)
    return None if report is None else report.to_dict(end_to_end_ms)


def run_breakdown(weights: Any, segmenter: Any, frame_sizes: list[tuple[int, int]] | None, iters: int,
                  warmup: int) -> dict[str, Any]:
    """Per-stage medians at each frame size, with the chosen path's end to end timed in the same loop."""
    from ..weights.known_weights import load_model

    model, info = load_model(weights)
    rng = np.random.default_rng(0)
    sizes = []
    for height, width in frame_sizes or CAMERA_SIZES:
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        calls = stage_calls(model, info.normalization, segmenter.input_size, frame, segmenter.classes.lookup_table())
        calls["chosen end to end"] = lambda frame=frame: segmenter.segment_batch(frame[None], "bgr")
        times = time_stages(calls, iters, warmup)
        chosen = times.pop("chosen end to end")
        stages = summarise(times)
        chosen_ms = float(np.median(chosen))
        sizes.append({
            "frame_hxw": [height, width], "model_input_hxw": list(segmenter.input_size), "iters": iters,
            "stages": stages, "outside_network_share": frame_size_work(stages),
            "chosen_end_to_end": {"path": f"{segmenter.backend_name} {segmenter.precision}",
                                  "p50_ms": round(chosen_ms, 3)},
            "arithmetic_limit": arithmetic_limit(weights, segmenter, chosen_ms)})
    if len(sizes) > 1:
        base = sizes[0]["chosen_end_to_end"]["p50_ms"]
        for size in sizes:
            size["chosen_over_first_size"] = round(size["chosen_end_to_end"]["p50_ms"] / base, 3)
    return {"sizes": sizes}
