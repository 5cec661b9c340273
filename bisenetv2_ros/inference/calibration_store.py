"""Measures a checkpoint's int8 calibration table (``calibration_table.py``) and stores it in the file.

Used by ``bisenetv2 export`` (deploy checkpoints) and ``training/promote.py`` (the embedded default):
the ranges are measured on the checkpoint's training frames (or a folder the user gives), on the
weights exactly as stored, so ``int8`` later needs no frames at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .calibration_table import (
    CALIBRATION_PART,
    float_tensors_of,
    network_fingerprint,
    register_part_check,
    summary,
    table_from_ranges,
    table_problem,
)


def calibration_graph(model, normalization, input_size: tuple[int, int]) -> bytes:
    """The graph a table is measured on: the dynamic fused graph in the weights' channel order. Every
    int8 graph the backends build quantises a subset of its network nodes' activations."""
    from .onnx_graph import fused_onnx_bytes

    return fused_onnx_bytes(model, normalization, tuple(input_size), "dynamic", normalization.channel_order, None,
                            channels_last_tail=True)


def coverage_problem(table: Mapping[str, Any], model, normalization) -> str | None:
    """Why a well-formed table does not cover the int8 graphs the backends build for ``model`` (tensors of
    the nodes they quantise that it has no range for), or None."""
    import onnx

    from ..weights.checkpoint_parts import preview
    from .int8 import KEEP_FLOAT, inline_shared_initializers, network_nodes

    graph = onnx.load_from_string(calibration_graph(model, normalization, table["input_size"]))
    inline_shared_initializers(graph)  # as int8.quantize_fused_onnx reads the graph
    quantised = [name for name in network_nodes(graph)[0] if not name.startswith(KEEP_FLOAT)]  # quantizer_settings'
    needed = float_tensors_of(graph, quantised)
    missing = sorted(needed - set(table["tensors"]))
    return (f"it has ranges for {len(needed) - len(missing)} of the {len(needed)} tensors the int8 graph needs "
            f"(missing: {preview(missing, 3)})" if missing else None)


def measure_calibration_table(model, normalization, input_size: tuple[int, int], calibration, source: str) -> dict:
    """The table of ``model`` calibrated on ``calibration`` (an ``int8.CalibrationSet`` of frames).

    Measured on the dynamic fused graph in the checkpoint's channel order, with every network node
    quantised (no ``keep_float``), so the table covers any subset the backends quantise.
    """
    from .int8 import quantize_fused_onnx

    frames = calibration.frames_at(tuple(input_size), normalization.channel_order)
    measured: dict[str, tuple[float, float]] = {}
    quantize_fused_onnx(calibration_graph(model, normalization, input_size), frames, measured=measured)
    return table_from_ranges(measured, network_fingerprint(model, normalization), input_size, len(frames), source)


def embed_calibration_table(path: str | os.PathLike, table: Mapping[str, Any] | None) -> Path:
    """Stores ``table`` in the checkpoint file at ``path`` (atomically; None removes it); every other
    entry, the weights included, is written back exactly as it was read (fp16 stays fp16, bit for bit)."""
    from ..weights.checkpoint import replace_info_entry

    return replace_info_entry(path, "calibration", None if table is None else dict(table))


def calibrate_checkpoint_file(path: str | os.PathLike, calibration, source: str) -> dict[str, Any]:
    """Measures the table of the checkpoint at ``path`` (weights exactly as stored) on ``calibration``
    (an ``int8.CalibrationSet`` of frames) at its training resolution, and stores it there."""
    from ..conventions import DEFAULT_INPUT_SIZE
    from ..weights.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    size = tuple(checkpoint.info.train_resolution or DEFAULT_INPUT_SIZE)
    table = measure_calibration_table(checkpoint.build_model(), checkpoint.info.normalization, size, calibration,
                                      source)
    embed_calibration_table(path, table)
    return table


def deploy_calibration(path: str | os.PathLike, images: str | os.PathLike | None = None) -> str | None:
    """Gives the deploy checkpoint at ``path`` the table int8 needs, measured on ``images`` (a folder)
    or on its training frames where they are known; without frames it keeps a table that fits the
    stored weights and removes one that does not. Returns a line for the user (None: nothing to say)."""
    from ..weights.checkpoint import load_checkpoint
    from .int8 import CalibrationSet, default_calibration_folder, training_calibration

    checkpoint = load_checkpoint(path)
    info = checkpoint.info
    if images is not None:
        table = calibrate_checkpoint_file(path, CalibrationSet(folder=images), Path(images).name)
    elif default_calibration_folder(info.dataset) is not None:
        table = calibrate_checkpoint_file(path, training_calibration(info.dataset), info.dataset)
    elif info.calibration is None:
        return None
    else:
        return _keep_or_remove(path, checkpoint)
    return "measured: " + summary(table)


def _keep_or_remove(path, checkpoint) -> str:
    """Keeps a table that fits the stored weights; removes one that does not, saying why."""
    info, model = checkpoint.info, checkpoint.build_model()
    problem = table_problem(info.calibration, network_fingerprint(model, info.normalization))
    incomplete = None if problem else coverage_problem(info.calibration, model, info.normalization)
    problem = problem or (incomplete and f"the calibration table is incomplete: {incomplete}")
    if problem is None:
        return "kept: " + summary(info.calibration)
    embed_calibration_table(path, None)
    return f"removed ({problem}; no calibration frames to measure again: give --calibration-images DIR)"


def _covers_the_graph(checkpoint) -> str | None:
    """Runs after calibration_table's checks (a malformed table or one of other weights is reported by them)."""
    try:
        return coverage_problem(checkpoint.info.calibration, checkpoint.build_model(), checkpoint.info.normalization)
    except Exception as error:  # noqa: BLE001 - an exporter's failure: the part is reported, `info` goes on
        return f"the int8 graph it is for cannot be built here ({type(error).__name__}: {str(error).splitlines()[0]})"


# after calibration_table's checks (imported above): well formed, of these weights, then covering the graph
register_part_check(CALIBRATION_PART, lambda checkpoint: checkpoint.info.calibration is not None, _covers_the_graph)
