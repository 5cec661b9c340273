"""Builds the ONNX graphs the backends run (and export writes): the fused pipeline, the bare network.

The fused graph takes uint8 frames (N, H, W, 3) named ``frames`` and gives uint8 labels (N, H, W)
named ``labels`` (and, built with ``confidence=True``, uint8 (N, H, W) ``confidence``);
``channels_last_tail_onnx`` rewrites its tail for ONNX Runtime's CPU provider.
Everything here returns bytes: writing files is ``bisenetv2_ros.cli.export``'s job. torch is imported
when a graph is built, so the names (and the command-line flags made from them) load instantly.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import writing

if TYPE_CHECKING:
    import torch

    from ..models.architectures import SegmentationModel
    from ..weights.checkpoint import Normalization

MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME, CONFIDENCE_NAME = "frames", "labels", "confidence"
EXPORTERS = ("legacy", "dynamo")


def fused_onnx_bytes(model: SegmentationModel, normalization: Normalization, input_size: tuple[int, int],
                     frame_size: tuple[int, int] | str | None = "dynamic", channel_order: str = "rgb",
                     batch: int | None = None, opset: int = MIN_OPSET, exporter: str = "legacy",
                     fold_bn: bool = True, channels_last_tail: bool = False, confidence: bool = False,
                     small_logits: bool = False) -> bytes:
    """The fused pipeline as a serialized ONNX model.

    Input ``frames`` uint8 (N, H, W, 3), output ``labels`` uint8 (N, H, W). frame_size: (H, W) for a
    fixed frame size, or "dynamic" (or None) for any size. batch: a fixed N, or None for a dynamic N.
    exporter: "legacy" (TorchScript-based; about 40x quicker to export here, same graph speed) or
    "dynamo" (torch.export-based). channels_last_tail: rewrite the logits upsampling and argmax to
    run channels-last (see ``channels_last_tail_onnx``); faster on ONNX Runtime's CPU provider.
    confidence: a second output ``confidence`` (``fused.top_class_confidence``); the labels tail is
    the same either way. small_logits: the graph ends at the 1/8 class scores, output ``small_logits``
    float32 (N, C, h, w), for the labels tail outside it (``labels_tail``); legacy exporter, no confidence.
    """
    if small_logits and (confidence or exporter != "legacy"):
        raise ValueError("small_logits graphs have one output and use the legacy exporter")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the fused graph uses opset-17 operators), got {opset}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    dynamic = frame_size in (None, "dynamic")
    if not dynamic and (len(frame_size) != 2 or min(frame_size) < 1):  # type: ignore[arg-type]
        raise ValueError(f"frame_size must be (height, width) or 'dynamic', got {frame_size!r}")
    import torch

    from .fused import FusedSegmentation, fold_batchnorm

    network = fold_batchnorm(model) if fold_bn else model.eval()
    fused = FusedSegmentation(network, normalization, input_size, channel_order, confidence)
    fused.always_resize = dynamic
    fused.small_logits_out = small_logits
    example_size = tuple(input_size) if dynamic else tuple(frame_size)  # type: ignore[arg-type]
    example = torch.zeros((batch or 1, *example_size, 3), dtype=torch.uint8)
    dims = {} if batch else {0: "batch"}
    if dynamic:
        dims.update({1: "height", 2: "width"})
    outputs = [OUTPUT_NAME, CONFIDENCE_NAME] if confidence else ["small_logits" if small_logits else OUTPUT_NAME]
    if exporter == "legacy":
        data = _legacy_onnx_bytes(fused, example, INPUT_NAME, outputs, dims, opset,
                                  output_dims=({} if batch else {0: "batch"}) if small_logits else None)
    else:
        data = _dynamo_onnx_bytes(fused, example, outputs, dims, opset)
    if channels_last_tail and not small_logits:
        data = channels_last_tail_onnx(data)
    check_onnx(data)
    return data


def network_onnx_bytes(model: SegmentationModel, input_size: tuple[int, int], opset: int = MIN_OPSET) -> bytes:
    """The network alone (BN folded): float32 NCHW ``input`` at ``input_size`` -> ``logits``, any batch.

    For benchmarks that time the network without the pre- and post-processing.
    """
    import torch

    from .fused import fold_batchnorm

    example = torch.zeros(1, 3, *input_size)
    return _legacy_onnx_bytes(fold_batchnorm(model), example, "input", ["logits"], {0: "batch"}, opset)


def _legacy_onnx_bytes(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
                       dims: dict[int, str], opset: int, output_dims: dict[int, str] | None = None) -> bytes:
    """The TorchScript-based exporter's graph of ``module`` run on ``example``; ``dims`` are dynamic (of the
    outputs too, unless ``output_dims`` names theirs)."""
    import torch

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; check_onnx is the judge
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=output_names,
                          dynamic_axes={name: output_dims if output_dims is not None and name != input_name else dims
                                        for name in [input_name, *output_names]} if dims else None,
                          do_constant_folding=True)
    return buffer.getvalue()


def _dynamo_onnx_bytes(module: torch.nn.Module, example: torch.Tensor, output_names: list[str],
                       dims: dict[int, str], opset: int) -> bytes:
    """The torch.export-based exporter's graph of the fused pipeline."""
    import torch

    shapes = ({axis: torch.export.Dim.DYNAMIC for axis in dims},) if dims else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=output_names,
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
        with tempfile.TemporaryDirectory() as folder:  # the program saves to a path only
            path = Path(folder) / "model.onnx"
            with writing(path, "the ONNX exporter's temporary file"):
                program.save(str(path))
            return path.read_bytes()


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
    """onnx.checker plus our own requirement: opset >= MIN_OPSET. Raises on a bad model."""
    import onnx

    model = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(str(data))
    onnx.checker.check_model(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX model has opset {opset}, need >= {MIN_OPSET}")
