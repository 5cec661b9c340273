"""The ``bisenetv2`` command line: segment images, videos and rosbag2 recordings without ROS, fetch
and inspect weights, convert and export checkpoints, benchmark.

Heavy modules (torch, cv2, rosbags, the subcommands' own modules) are imported inside the
subcommands, so ``bisenetv2 --help`` is instant and a module missing from a build gives one clear line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..conventions import DEFAULT_MAX_INPUT_PIXELS
from .arguments import CliError, add_debug_flag, batch_int, debug_requested, fraction, guarded, pixel_count
from .arguments import positive_int, size_or_comma
from .arguments import progress_bar as _progress_bar
from .weights_commands import cmd_download, cmd_export, cmd_import, cmd_info

PROG = "bisenetv2"

EPILOG = """\
examples:
  bisenetv2 download mmseg-cityscapes                  # fetch public Cityscapes weights
  bisenetv2 segment street.jpg --weights mmseg-cityscapes --input-size 512x1024
  bisenetv2 segment frames/ --output frames_seg/       # a folder of images, recursively
  bisenetv2 segment drive.mp4 --batch 4                # colour and overlay videos
  bisenetv2 segment my_bag/ --topic /camera/image_raw  # a rosbag2 folder (MCAP or sqlite3)
  bisenetv2 segment drive.mp4 --tta                    # offline labels: flip + 3 scales averaged
  bisenetv2 info camvid --json
  bisenetv2 import bisenetv2_cityscapes.pth cityscapes.pt
  bisenetv2 export runs/camvid/latest.pt --output camvid_deploy.pt --half --onnx camvid.onnx
  bisenetv2 benchmark --help                           # speed of the backends on this machine

Run `bisenetv2 COMMAND --help` for the options of one command.
"""

# Subcommands whose parser and code live in other modules of the package:
# name -> (module, one-line description). Their modules provide add_arguments(parser) and run(args).
DELEGATED = {
    "benchmark": ("bisenetv2_ros.benchmarks.backends_benchmark", "measure segmentation speed of the backends (frames/s, latency)"),
    "tune": ("bisenetv2_ros.cli.tune", "measure and cache what backend/precision auto picks on this machine"),
    "report": ("bisenetv2_ros.cli.report", "parameters and multiply-accumulates (GMACs) of a BiSeNetV2, by part"),
    "benchmark-messages": ("bisenetv2_ros.benchmarks.messages_benchmark",
                           "measure ROS message conversion costs (image decode, label/colour encode)"),
    "benchmark-cameras": ("bisenetv2_ros.benchmarks.cameras_benchmark",
                          "measure several cameras through one batched node pipeline against one pipeline each"),
    "calibrate-ood": ("bisenetv2_ros.cli.calibrate_ood", "measure a checkpoint's out-of-distribution threshold, store it there"),
    "benchmark-ood": ("bisenetv2_ros.benchmarks.ood_benchmark", "measure the out-of-distribution alarm on corrupted frames"),
}


# --------------------------------------------------------------------------------------------
# Parser


# images and videos: labels, color, overlay, confidence; bags: labels, color, confidence, the PNG forms, info
OUTPUT_KINDS = ("labels", "color", "overlay", "confidence", "labels/compressed", "color/compressed", "info")


def _outputs(text: str) -> tuple[str, ...]:
    from_text = tuple(v.strip() for v in text.split(",") if v.strip())
    allowed = OUTPUT_KINDS
    bad = [v for v in from_text if v not in allowed]
    if bad or not from_text:
        raise argparse.ArgumentTypeError(f"outputs are a comma list of {', '.join(allowed)}; got {text!r}")
    return from_text


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (as the node's parameters)")
    group.add_argument("--weights", default=None,
                       help="a known name (see `bisenetv2 download --list`) or a checkpoint path "
                            "(default: the packaged 'camvid' model)")
    group.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, tensorrt or openvino (default: auto)")
    group.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda[:N] (default: auto)")
    group.add_argument("--precision", default="auto",
                       help="auto, fp32, fp16 (GPU), bf16 (CPU with native bf16) or int8 (default: auto: on a CPU "
                            "the fastest path measured here, cached (see `bisenetv2 tune`), on a GPU fp32; logged)")
    group.add_argument("--calibration-images", default=None, metavar="FOLDER",
                       help="int8: folder of representative frames to calibrate on (default: the calibration "
                            "table the weights carry, else the frames they were trained on, when known)")
    group.add_argument("--input-size", type=size_or_comma, default=None, metavar="HxW",
                       help="network input size, e.g. 360x480 (default: the checkpoint's training resolution)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="BiSeNetV2 real-time semantic segmentation: ROS-free tools of bisenetv2_ros.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_debug_flag(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                      epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        add_debug_flag(command)
        return command

    segment = add("segment", "segment an image, a folder of images, a video or a rosbag2 recording",
                  "bisenetv2 segment drive.mp4 --weights mmseg-cityscapes --input-size 512x1024 --batch 4")
    segment.add_argument("input", type=Path, metavar="INPUT",
                         help="an image file, a folder of images, a video file, or a rosbag2 folder (or its .mcap/.db3 file)")
    segment.add_argument("--output", "-o", type=Path, default=None,
                         help="output folder or bag (default: <input>_segmented beside the input)")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace a previous output of `bisenetv2 segment` (never a folder holding inputs or "
                              "files it did not write)")
    _add_model_options(segment)
    segment.add_argument("--batch", type=batch_int, default=1, metavar="N",
                         help="frames per network call (default: 1); larger batches raise throughput")
    segment.add_argument("--outputs", type=_outputs, default=None, metavar="KINDS",
                         help="comma list of labels,color,overlay,confidence (images default: labels,color,overlay; "
                              "videos: color,overlay; labels and confidence write one PNG per frame); bags: "
                              "labels,color,confidence,labels/compressed,color/compressed,info (default: labels,color,info; "
                              "the /compressed ones as lossless PNG CompressedImage; info: SegmentationInfo)")
    segment.add_argument("--max-input-pixels", type=pixel_count, default=DEFAULT_MAX_INPUT_PIXELS, metavar="N",
                         help="largest image or frame (width x height) to read; larger ones are skipped, compressed "
                              f"ones judged by their header before decoding (default: {DEFAULT_MAX_INPUT_PIXELS}, "
                              "4096x4096)")
    segment.add_argument("--alpha", type=fraction, default=0.5, help="overlay opacity of the palette (default: 0.5)")
    segment.add_argument("--skip-bad", action="store_true",
                         help="exit 0 even when some inputs were skipped (images that cannot be read, bag frames "
                              "that cannot be decoded); without it such a run keeps its output, says how many "
                              "were skipped and exits 1")
    bag = segment.add_argument_group("rosbag2 input")
    bag.add_argument("--topic", default=None,
                     help="camera topic (sensor_msgs/Image or CompressedImage); default: the bag's only image topic")
    bag.add_argument("--copy-input", action="store_true", help="also copy every input message into the output bag")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                     help="output bag storage (default: the input's)")
    bag.add_argument("--significant-bits", type=int, choices=range(8, 17), default=16, metavar="{8..16}",
                     help="bits of 16-bit frames (rgb16, mono16, bayer_*16) that carry the value, e.g. 12 for a "
                          "12-bit camera (default: 16, the full range)")
    tta = segment.add_argument_group("test-time augmentation (offline labelling; several times slower)")
    tta.add_argument("--tta", action="store_true",
                     help="average the network's scores over a mirrored copy and several input scales before the "
                          "argmax (needs the torch backend; --backend auto picks it)")
    tta.add_argument("--tta-scales", type=_tta_scales, default=None, metavar="LIST",
                     help="input scales of the TTA views, a comma list of factors of --input-size "
                          "(default: 0.75,1,1.25); implies --tta")
    tta.add_argument("--tta-no-flip", action="store_true", help="TTA without the mirrored views; implies --tta")
    segment.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    segment.set_defaults(handler=cmd_segment)

    download = add("download", "download public BiSeNetV2 weights into the cache and check their SHA-256",
                   "bisenetv2 download mmseg-cityscapes   # then --weights mmseg-cityscapes")
    download.add_argument("name", nargs="?", metavar="NAME", help="weights name (see --list)")
    download.add_argument("--list", action="store_true", help="list the known weights with their metrics")
    download.add_argument("--url", default=None,
                          help="fetch from this URL instead of the published one (a mirror); the checksum "
                               "is still checked. $BISENETV2_DOWNLOAD_BASE replaces the base URL likewise")
    download.add_argument("--force", action="store_true", help="download again even if a verified copy is cached")
    download.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    download.set_defaults(handler=cmd_download)

    info = add("info", "show what a checkpoint or named weights hold: model, classes, normalisation, metrics",
               "bisenetv2 info mmseg-cityscapes --json")
    info.add_argument("weights", metavar="CHECKPOINT_OR_NAME", help="a checkpoint file or a known weights name")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=cmd_info)

    imp = add("import", "convert a public BiSeNetV2 or BiSeNetV1 checkpoint (mmsegmentation, CoinCheung) into this "
                        "package's format", "bisenetv2 import model_final_v2_city.pth coincheung_cityscapes.pt")
    imp.add_argument("source", type=Path, metavar="SRC", help="the public checkpoint (.pth)")
    imp.add_argument("output", type=Path, metavar="OUT", help="where to write the converted checkpoint (.pt)")
    imp.add_argument("--family", choices=("mmsegmentation", "coincheung", "mmsegmentation-bisenetv1",
                                          "coincheung-bisenetv1"), default=None,
                     help="the checkpoint's layout (default: detected from its key names)")
    imp.add_argument("--half", action="store_true", help="store the weights as fp16 (half the file size)")
    imp.add_argument("--overwrite", action="store_true",
                     help="replace an OUT this command wrote before (never SRC or a file it did not write)")
    imp.set_defaults(handler=cmd_import)

    from . import export as export_flags

    export = add("export", "make a deployment checkpoint from a training one; optionally ONNX and TensorRT",
                 "bisenetv2 export runs/camvid/best.pt --output camvid.pt --half --onnx camvid.onnx --engine ~/.cache/bisenetv2_ros/engines")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a training or deploy checkpoint, or a known name")
    export.add_argument("--output", "-o", type=Path, default=None,
                        help="deploy checkpoint to write (no booster heads, no optimizer state)")
    export.add_argument("--half", action="store_true", help="store the deploy checkpoint's weights as fp16")
    export_flags.add_arguments(export)  # --onnx, --engine, sizes, precision: shared with training/export.py
    export.set_defaults(handler=cmd_export)

    for name, (module, summary) in DELEGATED.items():
        delegated = commands.add_parser(name, help=summary, add_help=False)
        delegated.add_argument("rest", nargs=argparse.REMAINDER)
        delegated.set_defaults(handler=None, delegated=name)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bisenetv2_ros")
    except Exception:  # running from a source checkout that is not pip-installed
        return "(source checkout)"


# --------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _run_delegated(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _guarded(args.command, lambda: args.handler(args), args)


def _guarded(command: str, action: Callable[[], int], args: argparse.Namespace | None = None) -> int:
    """A subcommand inside the one error boundary (``arguments.guarded``): known failures are one line."""
    return guarded(f"{PROG} {command}", action, debug=debug_requested(args))


def _run_delegated(name: str, argv: list[str]) -> int:
    module_name, summary = DELEGATED[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=summary[0].upper() + summary[1:] + ".")
    module.add_arguments(parser)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return _guarded(name, lambda: int(module.run(args) or 0), args)


# --------------------------------------------------------------------------------------------
# segment


def _tta_scales(text: str) -> tuple[float, ...]:
    from ..inference.tta import parse_scales

    try:
        return parse_scales(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def tta_settings(args):
    """The TTASettings that --tta / --tta-scales / --tta-no-flip ask for, or None."""
    from ..inference.tta import DEFAULT_TTA_SCALES, TTASettings

    if not (args.tta or args.tta_scales or args.tta_no_flip):
        return None
    return TTASettings(args.tta_scales or DEFAULT_TTA_SCALES, flip=not args.tta_no_flip)


def _make_segmenter(args):
    from ..inference.segmenter import Segmenter

    tta = tta_settings(args)
    # TTA needs logits, which only the torch backend returns: auto means torch then.
    backend = "torch" if tta is not None and args.backend == "auto" else args.backend
    return Segmenter(weights=args.weights, backend=backend, device=args.device,
                     precision=args.precision, input_size=args.input_size, tta=tta,
                     backend_options={"calibration_images": args.calibration_images} if args.calibration_images else None)


SEGMENT = f"{PROG} segment"  # the command named in output records (output_safety)


def cmd_segment(args) -> int:
    from ..conventions import IMAGE_SUFFIXES
    from ..output_safety import check_output
    from . import media
    from .frames_log import FramesLog

    kind = media.input_kind(args.input)
    output = args.output if args.output is not None else media.default_output(args.input)
    check_output(output, SEGMENT, [args.input], args.overwrite)  # before reading anything: nothing lost
    if kind == "bag":
        return _segment_bag(args, output)
    outputs = args.outputs or (media.IMAGE_OUTPUTS if kind in ("image", "folder") else ("color", "overlay"))
    if set(outputs) - set(media.OUTPUT_KINDS):
        raise CliError(f"--outputs {','.join(sorted(set(outputs) - set(media.OUTPUT_KINDS)))} applies to bags; "
                       f"images and videos get {','.join(media.OUTPUT_KINDS)}")
    if kind == "folder":
        # an output folder inside the input folder (a previous run) is not input
        images = [p for p in media.list_images(args.input) if not p.resolve().is_relative_to(output.resolve())]
        if not images:
            raise CliError(f"folder {args.input} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        root = args.input
    elif kind == "image":
        media.read_image(args.input, args.max_input_pixels)  # fail before loading the model when the file is unreadable
        images, root = [args.input], None
    segmenter = _make_segmenter(args)
    missing = 0
    with media.StagedOutput(output, overwrite=args.overwrite, command=SEGMENT, inputs=[args.input]) as staged, \
            FramesLog(staged.path, segmenter) as frames_log:
        if kind == "video":
            capture, info = media.open_video(args.input, args.max_input_pixels)
            capture.release()
            with _progress_bar(info.frame_count, args.quiet) as bar:
                summary = media.segment_video(segmenter, args.input, staged.path, outputs, args.batch,
                                              args.alpha, bar.update, args.max_input_pixels, frames_log)
            missing = max(0, info.frame_count - summary.frames)
            if missing:  # a damaged video: OpenCV stops at the first frame it cannot decode
                summary.skipped.append(f"video {args.input}: read {summary.frames} of the {info.frame_count} "
                                       f"frames its container claims; the other {missing} cannot be decoded")
        else:
            with _progress_bar(len(images), args.quiet, "image") as bar:
                summary = media.segment_images(segmenter, images, root, staged.path, outputs, args.batch,
                                               args.alpha, bar.update, args.max_input_pixels, frames_log)
            if summary.frames == 0:
                raise CliError("no image could be read: " + "; ".join(summary.skipped[:3]))
        frames_log.close()  # complete before the folder moves into place
        final = staged.commit()
    for line in summary.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    noun = "frames" if kind == "video" else "images"
    tta = (f", TTA scales {','.join(f'{s:g}' for s in segmenter.tta.scales)}{' + flip' if segmenter.tta.flip else ''}"
           if segmenter.tta else "")
    print(f"segmented {summary.frames} {noun} ({', '.join(outputs)}) with {segmenter.weights} "
          f"[{segmenter.backend_name} {segmenter.precision}, {segmenter.device}, {segmenter.input_size[0]}x{segmenter.input_size[1]}{tta}] "
          f"-> {final}; {frames_log.summary()}")
    skipped = missing if kind == "video" else len(summary.skipped)
    return _skipped_status(args, skipped, skipped + summary.frames, noun)


def _skipped_status(args, skipped: int, total: int, noun: str) -> int:
    """Exit status of a run that kept its output: 1 when it skipped inputs, unless --skip-bad."""
    if skipped == 0 or args.skip_bad:
        return 0
    print(f"{PROG} {args.command}: error: {skipped} of {total} {noun} were skipped (listed above; "
          "the others are written); pass --skip-bad to accept that", file=sys.stderr)
    return 1


def _reason_lines(skipped) -> str:
    """One indented line 'N x reason' per skip reason, most frequent first (reasons hold ':' and ';')."""
    return "".join(f"\n  {n} x {reason}" for reason, n in skipped.most_common())


def _segment_bag(args, output: Path) -> int:
    from . import bags, media
    from .frames_log import FramesLog

    outputs = args.outputs or bags.DEFAULT_OUTPUTS
    if set(outputs) - set(bags.OUTPUT_TOPICS):
        raise CliError(f"--outputs {','.join(sorted(set(outputs) - set(bags.OUTPUT_TOPICS)))} applies to images and "
                       f"videos; a bag gets {','.join(bags.OUTPUT_TOPICS)}")
    bags.choose_topic(bags.image_topics(args.input), args.topic, args.input)  # fail before loading the model
    segmenter = _make_segmenter(args)
    with media.StagedOutput(output, overwrite=args.overwrite, create=False, command=SEGMENT,
                            inputs=[args.input]) as staged, FramesLog(staged.path, segmenter) as frames_log:
        with _progress_bar(None, args.quiet) as bar:
            def on_topic(topic: str, count: int) -> None:
                bar.reset(total=count or None)
                bar.set_description(topic)

            summary = bags.segment_bag(segmenter, args.input, staged.path, args.topic, args.batch,
                                       args.copy_input, args.storage, bar.update, on_topic,
                                       max_input_pixels=args.max_input_pixels, outputs=tuple(outputs),
                                       significant_bits=args.significant_bits, frames_log=frames_log)
        if summary.frames == 0:
            raise CliError(f"no frame of {summary.topic} could be decoded:{_reason_lines(summary.skipped)}")
        frames_log.close()
        final = staged.commit()
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    skipped = sum(summary.skipped.values())
    if skipped:
        print(f"skipped {skipped} unsupported frame(s) of {summary.topic}:{_reason_lines(summary.skipped)}",
              file=sys.stderr)
    copied = f", copied {summary.copied} input messages" if args.copy_input else ""
    print(f"segmented {summary.frames} frames of {summary.topic} with {segmenter.weights} "
          f"[{segmenter.backend_name}, {segmenter.device}]{copied} -> {final} "
          f"({', '.join(bags.OUTPUT_TOPICS[kind][0] for kind in outputs)}); {frames_log.summary()}")
    return _skipped_status(args, skipped, skipped + summary.frames, f"frames of {summary.topic}")


if __name__ == "__main__":
    sys.exit(main())
