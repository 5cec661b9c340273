"""Per-frame overhead of the node outside the network: `bisenetv2 benchmark-messages`.

Times, with a synthetic frame and synthetic labels (no model), the steps the node runs for each
frame besides inference and the middleware: Image -> frame view, colorize, labels / color / overlay
Image messages, class fractions and the info message. Message data is filled two ways:
rosbags dataclasses (numpy views, what the CLI writes to bags) and ``bytes`` (``tobytes()``, what
rclpy messages get). Prints the median (and minimum) of each step in milliseconds.

    python -m bisenetv2_ros.benchmarks.messages_benchmark --frame-size 1080x1920 --encoding bgr8

``--all-encodings``: the decode step of every input encoding instead (``encodings_benchmark``);
``--compare-bayer DIR``: demosaic against 2x2 binning on real frames, cost and label agreement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..classes import CAMVID, colorize
from ..cli.arguments import add_size, positive_int, script_main
from ..ros import messages
from ..weights.known_weights import DEFAULT_WEIGHTS
from . import encodings_benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size(parser, "--frame-size", "frame_size", default=(1080, 1920), old_sides=("--height", "--width"),
             help="frame size (default 1080x1920)")
    parser.add_argument("--encoding", default="bgr8", choices=messages.SUPPORTED_ENCODINGS,
                        help="input encoding (default bgr8)")
    parser.add_argument("--repeats", type=positive_int, default=30, help="timed repetitions per step (default 30)")
    parser.add_argument("--no-overlay", action="store_true", help="leave the overlay out of the total")
    parser.add_argument("--all-encodings", action="store_true",
                        help="time Image -> frame for every supported encoding (interleaved) and its memory peak")
    parser.add_argument("--compare-bayer", type=Path, default=None, metavar="DIR",
                        help="folder of real RGB frames: compare Bayer demosaicing with 2x2 binning (cost, label "
                             "agreement with the 8-bit frame's labels; loads --weights on the CPU)")
    parser.add_argument("--frames", type=positive_int, default=10, help="--compare-bayer: frames used (default 10)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="--compare-bayer: the model (default: camvid)")


def _times_ms(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, minimum) in ms; the minimum shows the cost without interference from other processes."""
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times), min(times)


def run(args: argparse.Namespace) -> int:
    if args.all_encodings:
        encodings_benchmark.print_encoding_costs(*args.frame_size, args.repeats)
        return 0
    if args.compare_bayer is not None:
        from ..inference.segmenter import Segmenter

        segmenter = Segmenter(weights=args.weights, backend="torch", device="cpu", precision="fp32")
        encodings_benchmark.compare_bayer(segmenter, args.compare_bayer, args.frames, args.repeats)
        return 0
    from rosbags.typesys import Stores, get_typestore

    types = messages.register_rosbags_types(get_typestore(Stores.ROS2_JAZZY)).types
    Image = types["sensor_msgs/msg/Image"]
    Info = types["bisenetv2_ros/msg/SegmentationInfo"]
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                          frame_id="camera")
    info = messages.encoding_info(args.encoding)
    rng = np.random.default_rng(0)
    height, width = args.frame_size
    raw = rng.integers(0, 256, height * width * info.bytes_per_pixel, dtype=np.uint8)
    msg = Image(header=header, height=height, width=width, encoding=args.encoding, is_bigendian=0,
                step=width * info.bytes_per_pixel, data=raw)
    table = CAMVID.lookup_table()
    labels = rng.integers(0, len(CAMVID), (height, width)).astype(np.uint8)
    frame, order = messages.image_to_frame(msg)
    colors = colorize(labels, table)
    repeats = args.repeats

    steps: dict[str, Callable[[], object]] = {
        "decode (Image -> frame)": lambda: messages.image_to_frame(msg),
        "colorize (palette lookup)": lambda: colorize(labels, table),
        "class fractions + info message": lambda: messages.info_message(
            Info, header, model="m", backend="b", device="d", inference_ms=0, latency_ms=0, frames_received=1,
            frames_processed=1, frames_dropped=0, fractions=messages.class_fractions(labels, len(CAMVID))),
    }
    overlay_step = lambda: messages.blend(messages.to_rgb(frame, order), colors, 0.5)  # noqa: E731
    if not args.no_overlay:
        steps["overlay blend (to rgb + addWeighted)"] = overlay_step
    for kind, msg_type in (("rosbags", Image), ("bytes/rclpy", SimpleNamespace)):
        steps[f"labels message [{kind}]"] = lambda t=msg_type: messages.labels_to_image(t, labels, header)
        steps[f"color message [{kind}]"] = lambda t=msg_type: messages.array_to_image(t, header, colors, "rgb8")
        if not args.no_overlay:
            overlay = overlay_step()
            steps[f"overlay message [{kind}]"] = lambda t=msg_type, o=overlay: messages.array_to_image(
                t, header, o, "rgb8")

    print(f"per-frame message overhead, {height}x{width} (HxW) {args.encoding}, {repeats} runs (ms):")
    print(f"  {'step':44s} {'median':>8s} {'min':>8s}")
    results = {name: _times_ms(step, repeats) for name, step in steps.items()}
    for name, (median, fastest) in results.items():
        print(f"  {name:44s} {median:8.2f} {fastest:8.2f}")
    for kind in ("rosbags", "bytes/rclpy"):
        chosen = [v for n, v in results.items() if "[" not in n or f"[{kind}]" in n]
        print(f"  {'sum of steps, ' + kind + ' messages':44s} {sum(v[0] for v in chosen):8.2f} "
              f"{sum(v[1] for v in chosen):8.2f}")

    def whole_frame(msg_type):
        frame_, order_ = messages.image_to_frame(msg)
        colors_ = colorize(labels, table)
        out = [messages.labels_to_image(msg_type, labels, header),
               messages.array_to_image(msg_type, header, colors_, "rgb8")]
        if not args.no_overlay:
            overlay_ = messages.blend(messages.to_rgb(frame_, order_), colors_, 0.5)
            out.append(messages.array_to_image(msg_type, header, overlay_, "rgb8"))
        out.append(messages.info_message(Info, header, model="m", backend="b", device="d", inference_ms=0,
                                         latency_ms=0, frames_received=1, frames_processed=1, frames_dropped=0,
                                         fractions=messages.class_fractions(labels, len(CAMVID))))
        return out

    for kind, msg_type in (("rosbags", Image), ("bytes/rclpy", SimpleNamespace)):
        median, fastest = _times_ms(lambda: whole_frame(msg_type), repeats)
        print(f"  {'whole frame in one go, ' + kind:44s} {median:8.2f} {fastest:8.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, "python -m bisenetv2_ros.benchmarks.messages_benchmark", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
