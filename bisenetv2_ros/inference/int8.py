"""Static int8 quantisation of the fused ONNX graph for ONNX Runtime's CPU provider, cached on disk.

Only the network is quantised: QDQ format, int8 weights per output channel, uint8 activations with
ranges calibrated on real frames. The uint8 pre-processing (cast, resize, normalise) and the labels
tail (the classifier convolution, the logits upsampling and the argmax) stay float, so the class
scores are never rounded to 256 levels before the argmax (rounded scores tie, and ties flip labels).

Calibration comes from, in order: ``calibration_frames`` (an array, for tests and timing runs),
``calibration_images`` (a folder the user gives), the activation ranges the checkpoint carries
(``calibration_table.py``: measured on its training frames when it was promoted or exported, so no
dataset is needed), the frames the checkpoint was trained on when we know where they are
(``default_calibration_folder``), else a clear error. A quantised graph
is cached like a TensorRT engine (``engine_cache.EngineCache``): keyed by the source ONNX hash, the
ONNX Runtime version, the precision, the quantiser settings and the calibration set's fingerprint,
written atomically; a stale or corrupt file is rebuilt with a log line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..fileio import writing
from .backend_base import BackendError
from .calibration_frames import (  # noqa: F401 - also the names callers take from int8
    DEFAULT_CALIBRATION_FRAMES,
    KNOWN_TRAINING_FRAMES,
    NO_CALIBRATION_HELP,
    REPOSITORY_ROOT,
    SPLIT_FRAMES,
    calibration_files,
    default_calibration_folder,
    files_fingerprint,
    frames_fingerprint,
    load_calibration_frames,
    training_frame_prefixes,
)

LOGGER = logging.getLogger("bisenetv2_ros")
QUANT_FORMATS = ("QDQ", "QOperator")
# Bumped whenever the quantiser's code changes, so that old cache files read as stale (the
# settings themselves are part of the cache key too).
QUANTIZER_VERSION = 1
# Network parts left in float: the Semantic Branch and the aggregation hold 12 % of the default
# network's MACs (3.1 of 24.6 G) in many small layers where quantise/dequantise steps cost about
# what int8 saves, and the BGA's sigmoid gates multiply two quantised tensors. Keeping them float
# raised the embedded model's label agreement with fp32 from 99.18 % to 99.57 % (25 CamVid val
# frames) at the same speed within noise (1.38x vs 1.43x over fp32 at 1024x512, one loaded run).
KEEP_FLOAT = ("/model/semantic", "/model/bga")


class IncompleteCalibrationTable(BackendError):
    """A checkpoint's table lacks ranges the graph needs (``quantize_with`` then calibrates on frames when it can)."""


class CalibrationSet:
    """What to calibrate on: frames resolved lazily (reading images only when a graph is built), or
    the activation ranges a checkpoint carries (``table``, already checked against the weights by
    ``calibration_table.table_problem``; used when neither frames nor a folder are given)."""

    def __init__(self, frames: np.ndarray | None = None, folder: str | os.PathLike | None = None,
                 dataset: str = "unknown", limit: int = DEFAULT_CALIBRATION_FRAMES,
                 table: Mapping[str, Any] | None = None, prefixes: tuple[str, ...] = ()) -> None:
        self.table, self.dataset, self.limit = None, dataset, limit
        if frames is None and folder is None and table is not None:
            self.frames, self.files, self.table = None, None, table
            self.source = (f"the activation ranges the weights carry ({table['frames']} frames of {table['source']}, "
                           f"{len(table['tensors'])} tensors)")
            return
        if frames is not None:
            frames = np.asarray(frames)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
                raise BackendError(f"calibration_frames must be uint8 (N, H, W, 3) with N >= 1, got "
                                   f"{frames.dtype} {frames.shape}")
            self.frames, self.files, self.source = frames, None, f"{len(frames)} given frames"
            return
        if folder is None:
            folder, prefixes = default_calibration_folder(dataset), training_frame_prefixes(dataset)
            if folder is None:
                raise BackendError(f"precision 'int8' needs calibration frames and none are known for weights "
                                   f"trained on {dataset!r}; {NO_CALIBRATION_HELP}")
            LOGGER.info("int8: calibrating on the checkpoint's training frames in %s", folder)
        self.frames = None
        self.files = calibration_files(folder, limit, prefixes)
        self.source = f"{len(self.files)} images from {folder}"

    def fingerprint(self) -> str:
        if self.table is not None:
            from .calibration_table import table_fingerprint

            return "table:" + table_fingerprint(self.table)
        return frames_fingerprint(self.frames) if self.frames is not None else files_fingerprint(self.files)

    def frames_at(self, size: tuple[int, int], channel_order: str) -> np.ndarray:
        if self.frames is not None:
            if tuple(self.frames.shape[1:3]) == tuple(size):
                return self.frames
            import cv2

            return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in self.frames])
        return load_calibration_frames(self.files, size, channel_order)


def quantizer_settings(flags: frozenset[str] | set[str]) -> dict[str, Any]:
    """Quantiser settings for a CPU with these instruction-set flags.

    Without an int8 dot product (VNNI / AMX), ONNX Runtime's x86 kernels multiply uint8 activations
    by int8 weights with vpmaddubsw, which adds pairs of products into int16 and saturates: on the
    embedded model that flipped 2.7 % of the labels. 7-bit weights (reduce_range) keep every pair
    sum below 2^15 (255 * 63 * 2 = 32130); measured 99.2 % agreement instead of 97.3 %.
    keep_float: see KEEP_FLOAT.
    """
    from .cpu import INT8_DOT_FLAGS

    return {"reduce_range": not any(flag in flags for flag in INT8_DOT_FLAGS), "keep_float": list(KEEP_FLOAT)}


def network_nodes(model) -> tuple[list[str], list[str]]:
    """(names of the nodes to quantise, names of the nodes kept float) of a fused ONNX ModelProto.

    The network is everything the exporter names ``/model/...`` (``FusedSegmentation.model``);
    of it, the classifier convolution that produces the logits, and the tail after it (logits
    resize, argmax), stay float. Everything outside ``/model/`` is pre- or post-processing.
    """
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    argmax = [node for node in graph.node if node.op_type == "ArgMax"]
    if not argmax and len(graph.output) == 1:  # a graph that ends at the class scores (labels tail outside)
        argmax = [producers[graph.output[0].name]]
    if len(argmax) != 1:
        raise ValueError("int8 quantisation: the graph must end in exactly one ArgMax, or in the class scores")
    # Walk back from the argmax (or the scores) through the tail (Resize, Transpose, ...) to the classifier Conv.
    tail, node = set(), argmax[0]
    while node is not None and node.op_type != "Conv":
        tail.add(node.name)
        node = producers.get(node.input[0])
    if node is None:
        raise ValueError("int8 quantisation: no convolution feeds the argmax")
    tail.add(node.name)
    quantised = [n.name for n in graph.node if n.name.startswith("/model/") and n.name not in tail]
    kept = [n.name for n in graph.node if n.name not in set(quantised)]
    return quantised, kept


def inline_shared_initializers(model) -> None:
    """Replaces ``Identity(initializer)`` nodes by copies of the initializer, in place.

    The exporter de-duplicates equal tensors (e.g. two all-zero biases) and reaches the copies
    through Identity nodes; the quantiser needs each bias to be an initializer of its own.
    """
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            array = numpy_helper.to_array(initializers[node.input[0]])
            model.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def quantize_fused_onnx(onnx_bytes: bytes, frames: np.ndarray | None, batch: int = 1, per_channel: bool = True,
                        quant_format: str = "QDQ", activation_type: str = "QUInt8",
                        calibrate_method: str = "MinMax", extra_options: dict[str, Any] | None = None,
                        reduce_range: bool = False, weight_type: str = "QInt8",
                        keep_float: Sequence[str] = (), ranges: Mapping[str, Sequence[float]] | None = None,
                        measured: dict[str, tuple[float, float]] | None = None) -> bytes:
    """Statically quantised copy of a fused graph (uint8 ``frames`` input), calibrated on ``frames``.

    batch: the graph's fixed batch size (1 for a dynamic batch); frames are fed in groups of it.
    ranges: {tensor: (lowest, highest)} measured before (a checkpoint's calibration table, see
    ``calibration_table.py``), used instead of ``frames`` (pass None); every float activation of the
    quantised nodes must have one. measured: a dict that receives the ranges used, by tensor name.
    """
    import onnx
    from onnxruntime import quantization as q

    model = onnx.load_from_string(onnx_bytes)
    inline_shared_initializers(model)
    quantised, kept = network_nodes(model)
    if keep_float:  # name prefixes of network parts that stay float
        kept += [n for n in quantised if n.startswith(tuple(keep_float))]
        quantised = [n for n in quantised if not n.startswith(tuple(keep_float))]
    input_name = model.graph.input[0].name
    if ranges is not None or measured is not None:
        if not stored_ranges_supported():
            raise BackendError(f"int8 from stored activation ranges needs onnxruntime's quantize_static("
                               f"calibration_cache_path=), which onnxruntime {_ort_version()} lacks; upgrade onnxruntime "
                               f"(1.32 has it) or give calibration frames (calibration_images)")
    if ranges is not None:
        from .calibration_table import missing_tensors

        missing = missing_tensors(model, quantised, {"tensors": ranges})
        if missing:
            raise IncompleteCalibrationTable(f"the calibration table has no range for {len(missing)} tensors of this "
                                             f"graph ({', '.join(missing[:3])}, ...): it was made for a graph exported "
                                             f"differently; {NO_CALIBRATION_HELP}")
    elif frames is None:
        raise ValueError("quantize_fused_onnx needs calibration frames or ranges")

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            count = max(batch, len(frames) - len(frames) % batch)
            groups = np.resize(frames, (count, *frames.shape[1:])).reshape(-1, batch, *frames.shape[1:])
            self._groups = iter(groups)

        def get_next(self):
            group = next(self._groups, None)
            return None if group is None else {input_name: np.ascontiguousarray(group)}

    options = {"ActivationSymmetric": False, "WeightSymmetric": True}
    options.update(extra_options or {})
    root = logging.getLogger()
    root.addFilter(_quiet_quantizer)  # its advice goes to the root logger as warnings, per bias
    try:
        return _quantize(q, model, Reader() if ranges is None else None, quantised, kept, per_channel, quant_format,
                         activation_type, calibrate_method, options, reduce_range, weight_type, ranges, measured)
    finally:
        root.removeFilter(_quiet_quantizer)


def stored_ranges_supported() -> bool:
    """Whether this onnxruntime's quantize_static takes precomputed ranges (``calibration_cache_path``,
    added in 2026: onnxruntime pull request 28221)."""
    import inspect

    from onnxruntime import quantization as q

    return "calibration_cache_path" in inspect.signature(q.quantize_static).parameters


def _ort_version() -> str:
    return __import__("onnxruntime").__version__


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    return "/onnxruntime/quantization/" not in record.pathname.replace("\\", "/")


def _quantize(q, model, reader, quantised, kept, per_channel, quant_format, activation_type, calibrate_method,
              options, reduce_range, weight_type, ranges, measured) -> bytes:
    import onnx

    from .calibration_table import read_ort_calibration_cache, write_ort_calibration_cache

    with tempfile.TemporaryDirectory(prefix="bisenetv2_int8_") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        # ONNX Runtime's calibration cache: read instead of calibrating when it exists (ranges
        # given), written after calibrating otherwise (ranges wanted).
        cache = Path(folder) / "ranges.json"
        if ranges is not None:
            write_ort_calibration_cache({"tensors": ranges}, cache)
        use_cache = {"calibration_cache_path": str(cache)} if ranges is not None or measured is not None else {}
        # No q.quant_pre_process: the graph is constant-folded, batch norms in the convolutions; shapes inferred
        with writing(source, "int8's temporary file"):  # under $TMPDIR: a full /tmp says so
            onnx.save(model, str(source))
        q.quantize_static(str(source), str(target), reader, quant_format=getattr(q.QuantFormat, quant_format),
                          per_channel=per_channel, activation_type=getattr(q.QuantType, activation_type),
                          weight_type=getattr(q.QuantType, weight_type), reduce_range=reduce_range,
                          nodes_to_quantize=quantised, nodes_to_exclude=kept,
                          calibrate_method=getattr(q.CalibrationMethod, calibrate_method), extra_options=options,
                          **use_cache)
        if measured is not None:
            measured.update(read_ort_calibration_cache(cache))
        return target.read_bytes()


def training_calibration(dataset: str, dataset_root: str | os.PathLike | None = None,
                         limit: int = DEFAULT_CALIBRATION_FRAMES) -> CalibrationSet:
    """The frames a checkpoint trained on ``dataset`` ("camvid:drive_train") learnt from: under
    ``dataset_root`` (the folder holding the dataset's splits) when given, else where the workplace
    keeps them (``default_calibration_folder``); a clear error when unknown."""
    if dataset_root is None:
        return CalibrationSet(dataset=dataset, limit=limit)
    name, _, split = str(dataset).lower().partition(":")
    folder, prefixes = SPLIT_FRAMES.get((name, split), (split or "train", ()))
    return CalibrationSet(folder=Path(dataset_root) / folder, limit=limit, prefixes=prefixes)


def calibration_for(model, normalization, frames: np.ndarray | None = None, images: str | os.PathLike | None = None,
                    dataset: str = "unknown", limit: int | None = None, table: Any = None) -> CalibrationSet:
    """The CalibrationSet a backend's int8 graphs use: given frames or folder, else the weights' table
    (when it fits them, ``calibration_table.usable_table``), else the training frames, else an error."""
    from .calibration_table import usable_table

    if frames is None and images is None:
        table = usable_table(table, model, normalization)
        if table is not None and not stored_ranges_supported():
            LOGGER.warning("int8: onnxruntime %s cannot quantise from the weights' calibration table (its "
                           "quantize_static has no calibration_cache_path); calibrating on frames instead",
                           _ort_version())
            table = None
    return CalibrationSet(frames, images, dataset, int(limit or DEFAULT_CALIBRATION_FRAMES), table)


def quantize_with(calibration: CalibrationSet, onnx_bytes: bytes, input_size: tuple[int, int],
                  graph_shape: tuple | None, channel_order: str, settings: Mapping[str, Any],
                  quant_format: str = "QDQ") -> bytes:
    """The int8 graph of ``onnx_bytes`` (a fused graph; ``graph_shape`` its fixed (batch, height, width)
    or None) from ``calibration``: its stored ranges, or its frames at the graph's size."""
    if calibration.table is not None:
        try:
            return quantize_fused_onnx(onnx_bytes, None, quant_format=quant_format, ranges=calibration.table["tensors"],
                                       **settings)
        except IncompleteCalibrationTable as error:  # an optional part that cannot serve: not used, said once
            if default_calibration_folder(calibration.dataset) is None:
                raise
            LOGGER.warning("int8: the weights' calibration table is not used (%s); calibrating on their training "
                           "frames instead", str(error).split(": it was made")[0])
            calibration = CalibrationSet(dataset=calibration.dataset, limit=calibration.limit)
    # Frames at the graph's fixed size when it has one, else at the model size (no resize needed).
    fixed = graph_shape is not None and graph_shape[1] is not None
    frames = calibration.frames_at(tuple(graph_shape[1:]) if fixed else tuple(input_size), channel_order)
    batch = graph_shape[0] if graph_shape is not None and graph_shape[0] else 1
    return quantize_fused_onnx(onnx_bytes, frames, batch=batch, quant_format=quant_format, **settings)


def int8_cache_key(onnx_bytes: bytes, calibration: CalibrationSet, input_size: tuple[int, int],
                   settings: Mapping[str, Any], quant_format: str = "QDQ") -> dict[str, Any]:
    """What a cached int8 graph depends on (besides the runtime that runs it)."""
    import onnxruntime as ort

    return {"onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "onnxruntime": ort.__version__, "precision": "int8",
            "quantizer": {"version": QUANTIZER_VERSION, "format": quant_format, **settings},
            "calibration": calibration.fingerprint(), "calibration_size": list(input_size)}
