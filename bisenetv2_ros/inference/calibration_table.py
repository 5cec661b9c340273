"""The int8 calibration a checkpoint carries: activation ranges of its fused graph, not frames.

A table is a dict of plain containers (so ``torch.load(weights_only=True)`` reads it), stored as
``CheckpointInfo.calibration``::

    {"version": 1, "method": "MinMax", "network_sha256": "...", "input_size": [h, w],
     "frames": 32, "source": "camvid:drive_train", "onnxruntime": "1.32.0",
     "tensors": {"/model/detail/s1/s1.0/s1.0.2/Relu_output_0": [lowest, highest], ...}}

The ranges are those ONNX Runtime's MinMax calibrator measures on the fused graph (``int8.py``),
named by the graph's tensor names, which follow the network's module names. ``network_sha256``
(the weights and the normalisation) keys the table: ranges of other weights are never used. A
graph that needs a tensor the table lacks (an exporter that names tensors differently) is reported
by ``missing_tensors`` (``calibration_store.coverage_problem`` for ``bisenetv2 info`` and ``export``),
and the table is then not used. The table holds numbers only, never frames:
shipped weights carry no training images.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..weights.checkpoint_parts import (  # noqa: F401 - the table's format lives with the checkpoint's parts
    CALIBRATION_PART,
    CALIBRATION_TABLE_VERSION,
    TABLE_METHOD,
    calibration_data_problem,
    register_part_check,
)


def network_fingerprint(model, normalization) -> str:
    """SHA-256 of a network's weights (as loaded, float32) and its input normalisation.

    Ranges measured on one network hold for it only; this is what a table is keyed by.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}\0".encode())
        digest.update(value.contiguous().numpy().tobytes())
    digest.update(json.dumps([list(map(float, normalization.mean)), list(map(float, normalization.std)),
                              normalization.channel_order]).encode())
    return digest.hexdigest()


def table_from_ranges(ranges: Mapping[str, tuple[float, float]], network_sha256: str, input_size: tuple[int, int],
                      frames: int, source: str) -> dict[str, Any]:
    import onnxruntime

    return {"version": CALIBRATION_TABLE_VERSION, "method": TABLE_METHOD, "network_sha256": network_sha256,
            "input_size": [int(input_size[0]), int(input_size[1])], "frames": int(frames), "source": str(source),
            "onnxruntime": onnxruntime.__version__,
            "tensors": {name: [float(low), float(high)] for name, (low, high) in sorted(ranges.items())}}


def table_problem(table: Any, network_sha256: str) -> str | None:
    """Why ``table`` cannot calibrate the network with this fingerprint, or None when it can."""
    problem = calibration_data_problem(table)
    if problem:
        return f"the calibration table is malformed: {problem}"
    if table.get("network_sha256") != network_sha256:
        return "the calibration table was measured on other weights (its network_sha256 differs)"
    return None


def table_fingerprint(table: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def float_tensors_of(model, node_names: Iterable[str]) -> set[str]:
    """Names of the float activations that the nodes ``node_names`` of an ONNX model read or write."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    wanted = set(node_names)
    return {name for node in graph.node if node.name in wanted for name in (*node.input, *node.output)
            if name and name not in constants and types.get(name) == TensorProto.FLOAT}


def missing_tensors(model, node_names: Iterable[str], table: Mapping[str, Any]) -> list[str]:
    """Float activations of these nodes that the table has no range for (sorted)."""
    return sorted(float_tensors_of(model, node_names) - set(table["tensors"]))


def write_ort_calibration_cache(table: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The table as ONNX Runtime's calibration cache (``quantize_static(calibration_cache_path=)``)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {name: TensorData(lowest=np.array([low], np.float32), highest=np.array([high], np.float32))
            for name, (low, high) in table["tensors"].items()}
    save_tensors_data(TensorsData(getattr(CalibrationMethod, TABLE_METHOD), data), path)
    return Path(path)


def read_ort_calibration_cache(path: str | os.PathLike) -> dict[str, tuple[float, float]]:
    """{tensor: (lowest, highest)} from ONNX Runtime's calibration cache file."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(path)
    if str(ranges.calibration_method).split(".")[-1] != TABLE_METHOD:
        raise ValueError(f"calibration cache {path} holds {ranges.calibration_method}, not {TABLE_METHOD}")
    return {name: (float(np.asarray(value.lowest).reshape(-1)[0]), float(np.asarray(value.highest).reshape(-1)[0]))
            for name, value in ranges.items()}


def summary(table: Mapping[str, Any] | None) -> str:
    """One line for `bisenetv2 info`."""
    if table is None:
        return "none (int8 calibrates on frames: --calibration-images or the training frames beside the checkout)"
    problem = calibration_data_problem(table)
    if problem:
        return f"NOT usable, malformed: {problem} (int8 ignores it; `bisenetv2 export` removes it)"
    return (f"int8 activation ranges of {len(table.get('tensors', {}))} tensors from {table.get('frames')} frames "
            f"of {table.get('source')} at {'x'.join(map(str, table.get('input_size', [])))} (version {table.get('version')})")


def usable_table(table: Any, model, normalization) -> Mapping[str, Any] | None:
    """``table`` when it fits these weights, else None (with a warning saying why)."""
    import logging

    if table is None:
        return None
    problem = table_problem(table, network_fingerprint(model, normalization))
    if problem:
        logging.getLogger("bisenetv2_ros").warning("int8: the weights' calibration table is not used: %s", problem)
        return None
    return table


def _measured_on_these_weights(checkpoint) -> str | None:
    if calibration_data_problem(checkpoint.info.calibration) is not None:
        return None  # the data check (registered first) reports it
    fingerprint = network_fingerprint(checkpoint.build_model(), checkpoint.info.normalization)
    return table_problem(checkpoint.info.calibration, fingerprint)


register_part_check(CALIBRATION_PART, lambda checkpoint: checkpoint.info.calibration is not None,
                    _measured_on_these_weights)
