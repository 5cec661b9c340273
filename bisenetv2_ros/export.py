"""Export of the fused pipeline (uint8 frames in, uint8 labels out) to ONNX, and TensorRT engines.

    export_onnx(weights, "model.onnx", input_size=(512, 1024), frame_size="dynamic")
    build_tensorrt_engine("model.onnx", cache_dir="engines", precision="fp16", frame_shape=(1, 720, 1280))

Command line: ``python -m bisenetv2_ros.export WEIGHTS OUT.onnx [--input-size HxW] [--frame-size HxW|dynamic]
[--channel-order rgb|bgr] [--tensorrt {fp32,fp16,int8} --engine-cache DIR --batch N]`` (the last
prebuilds a TensorRT engine without running it: the build-only mode).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import CheckpointInfo, Normalization
from .known_weights import DEFAULT_WEIGHTS, load_model
from .backends.fused import FusedSegmentation, fold_batchnorm
from .fileio import write_atomic
from .architectures import SegmentationModel

LOGGER = logging.getLogger("bisenetv2_ros")
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "frames", "labels"
EXPORTERS = ("legacy", "dynamo")


def fused_onnx_bytes(model: SegmentationModel, normalization: Normalization, input_size: tuple[int, int],
                     frame_size: tuple[int, int] | str | None = "dynamic", channel_order: str = "rgb",
                     batch: int | None = None, opset: int = MIN_OPSET, exporter: str = "legacy",
                     fold_bn: bool = True, channels_last_tail: bool = False) -> bytes:
    """The fused pipeline as a serialized ONNX model.

    Input ``frames`` uint8 (N, H, W, 3), output ``labels`` uint8 (N, H, W). frame_size: (H, W) for a
    fixed frame size, or "dynamic" (or None) for any size. batch: a fixed N, or None for a dynamic N.
    exporter: "legacy" (TorchScript-based; about 40x quicker to export here, same graph speed) or
    "dynamo" (torch.export-based). channels_last_tail: rewrite the logits upsampling and argmax to
    run channels-last (see ``channels_last_tail_onnx``); faster on ONNX Runtime's CPU provider.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the fused graph uses opset-17 operators), got {opset}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    dynamic = frame_size in (None, "dynamic")
    if not dynamic and (len(frame_size) != 2 or min(frame_size) < 1):  # type: ignore[arg-type]
        raise ValueError(f"frame_size must be (height, width) or 'dynamic', got {frame_size!r}")
    network = fold_batchnorm(model) if fold_bn else model.eval()
    fused = FusedSegmentation(network, normalization, input_size, channel_order)
    fused.always_resize = dynamic
    example_size = tuple(input_size) if dynamic else tuple(frame_size)  # type: ignore[arg-type]
    example = torch.zeros((batch or 1, *example_size, 3), dtype=torch.uint8)
    dims = {} if batch else {0: "batch"}
    if dynamic:
        dims.update({1: "height", 2: "width"})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the checker below is the judge
        if exporter == "legacy":
            buffer = io.BytesIO()
            torch.onnx.export(fused, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims} if dims else None,
                              do_constant_folding=True)
            data = buffer.getvalue()
        else:
            shapes = ({axis: torch.export.Dim.DYNAMIC for axis in dims},) if dims else None
            program = torch.onnx.export(fused, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=shapes, optimize=True, verbose=False)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.onnx"
                program.save(str(path))
                data = path.read_bytes()
    if channels_last_tail:
        data = channels_last_tail_onnx(data)
    check_onnx(data)
    return data


def channels_last_tail_onnx(data: bytes) -> bytes:
    """Rewrites ``Resize(logits) -> ArgMax(axis=1)`` to ``Transpose -> Resize -> ArgMax(axis=3)``.

    Same labels, computed channels-last: only the small 1/8 logits are transposed, and ONNX Runtime's
    CPU Resize and ArgMax are both faster with the classes innermost (about 16 ms instead of 32 ms
    for 19 classes at 1024x512 on a 2-core x86 box). The Resize keeps its attributes; its target
    sizes are permuted to NHWC by a Gather, so dynamic frame sizes keep working. TensorRT gets the
    plain graph: this is a CPU layout choice.
    """
    from collections import Counter

    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers = Counter(name for node in graph.node for name in node.input)
    argmaxes = [node for node in graph.node if node.op_type == "ArgMax"]
    argmax = argmaxes[0] if len(argmaxes) == 1 else None
    resize = producers.get(argmax.input[0]) if argmax is not None else None
    attributes = {a.name: helper.get_attribute_value(a) for a in argmax.attribute} if argmax is not None else {}
    if (resize is None or resize.op_type != "Resize" or consumers.get(resize.output[0]) != 1
            or attributes.get("axis") != 1 or len(resize.input) != 4 or not resize.input[3]):
        raise ValueError("channels_last_tail_onnx: the graph does not end in Resize(sizes) -> ArgMax(axis=1)")
    nodes = list(graph.node)
    position = nodes.index(resize)
    logits, sizes = resize.input[0], resize.input[3]
    permutation = "channels_last_tail_permutation"
    graph.initializer.append(numpy_helper.from_array(np.array([0, 2, 3, 1], dtype=np.int64), permutation))
    transpose = helper.make_node("Transpose", [logits], [logits + "_nhwc"], perm=[0, 2, 3, 1],
                                 name="channels_last_tail/Transpose")
    gather = helper.make_node("Gather", [sizes, permutation], [sizes + "_nhwc"], axis=0,
                              name="channels_last_tail/Gather")
    resize.input[0], resize.input[3] = logits + "_nhwc", sizes + "_nhwc"
    for attribute in argmax.attribute:
        if attribute.name == "axis":
            attribute.i = 3
    del graph.node[:]
    graph.node.extend(nodes[:position] + [transpose, gather] + nodes[position:])
    return model.SerializeToString()


def check_onnx(data: bytes | os.PathLike | str) -> None:
    """onnx.checker plus our own requirements (opset, uint8 in and out)."""
    import onnx

    model = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(str(data))
    onnx.checker.check_model(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX model has opset {opset}, need >= {MIN_OPSET}")


def export_onnx(weights: str | os.PathLike | torch.nn.Module = DEFAULT_WEIGHTS, out_path: str | os.PathLike = "bisenetv2.onnx",
                input_size: tuple[int, int] | None = None, frame_size: tuple[int, int] | str | None = "dynamic",
                opset: int = MIN_OPSET, channel_order: str = "rgb", batch: int | None = None,
                exporter: str = "legacy", info: CheckpointInfo | None = None, channels_last_tail: bool = False) -> Path:
    """Writes the fused pipeline of a checkpoint (path or known name; or a model plus ``info``) as ONNX.

    input_size: the network resolution (default: the checkpoint's training resolution, else 512x1024).
    channels_last_tail: faster on ONNX Runtime's CPU provider (see ``channels_last_tail_onnx``).
    Returns the path. The file is written atomically and passes ``onnx.checker``.
    """
    if isinstance(weights, torch.nn.Module):
        if info is None:
            raise ValueError("export_onnx(model, ...) needs info= (normalization and classes) with a bare model")
        model = weights
    else:
        model, info = load_model(weights)
    size = tuple(input_size or info.train_resolution or (512, 1024))
    data = fused_onnx_bytes(model.eval(), info.normalization, size, frame_size, channel_order, batch, opset, exporter,
                            channels_last_tail=channels_last_tail)
    return write_atomic(Path(out_path), data)


def build_tensorrt_engine(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, precision: str = "fp16",
                          frame_shape: tuple[int, int, int] = (1, 512, 1024), workspace_gib: float = 2.0,
                          calibration_images: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Builds (or finds up to date in the cache) the TensorRT engine of an exported ONNX file.

    frame_shape: (batch, height, width) of the uint8 frames the engine is built for. Returns the
    engine cache file. Needs TensorRT and a GPU; int8 needs ``calibration_images`` (a folder).
    """
    from .backends.tensorrt_backend import build_engine_cached

    return build_engine_cached(Path(onnx_path).read_bytes(), Path(cache_dir), precision, tuple(frame_shape),
                               workspace_gib=workspace_gib, calibration_images=calibration_images,
                               name=name or Path(onnx_path).stem)


def _size(text: str) -> tuple[int, int] | str:
    if text == "dynamic":
        return text
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 512x1024) or 'dynamic', got {text!r}") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bisenetv2_ros.export", description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="checkpoint path or known weights name")
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--input-size", type=_size, default=None, help="network HEIGHTxWIDTH (default: checkpoint's)")
    parser.add_argument("--frame-size", type=_size, default="dynamic", help="frame HEIGHTxWIDTH or 'dynamic'")
    parser.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb")
    parser.add_argument("--batch", type=int, default=None, help="fixed batch size (default: dynamic)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET)
    parser.add_argument("--exporter", choices=EXPORTERS, default="legacy")
    parser.add_argument("--channels-last-tail", action="store_true",
                        help="upsample and argmax channels-last: faster on ONNX Runtime CPU (leave off for TensorRT)")
    parser.add_argument("--tensorrt", choices=("fp32", "fp16", "int8"), default=None,
                        help="also prebuild a TensorRT engine of this precision (build only, nothing is run)")
    parser.add_argument("--engine-cache", default="engines", help="engine cache folder for --tensorrt")
    parser.add_argument("--calibration-images", default=None, help="folder of images for int8 calibration")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = export_onnx(args.weights, args.out, args.input_size, args.frame_size, args.opset, args.channel_order,
                       args.batch, args.exporter, channels_last_tail=args.channels_last_tail)
    print(f"wrote {path}")
    if args.tensorrt:
        if args.channels_last_tail:
            parser.error("--channels-last-tail is a CPU layout; build TensorRT engines from the plain graph")
        if args.frame_size == "dynamic":
            parser.error("--tensorrt needs a fixed --frame-size HxW (engines are built for one shape)")
        engine = build_tensorrt_engine(path, args.engine_cache, args.tensorrt, (args.batch or 1, *args.frame_size),
                                       calibration_images=args.calibration_images)
        print(f"engine {engine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
