"""Measures a checkpoint's out-of-distribution calibration (``ood.py``) on frames and stores it in the file.

One function for every caller: ``bisenetv2 calibrate-ood WEIGHTS FRAMES_DIR`` (user weights, user
cameras), ``training/promote.py`` (the embedded default) and ``bisenetv2 benchmark-ood``. References
are frames the weights trained on; the threshold comes from held-out frames of drives the weights never
saw. The stored calibration names both (split, count, and whether the held-out frames were in fact
seen in training, so such a threshold is reported as such).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from .int8 import KNOWN_TRAINING_FRAMES, REPOSITORY_ROOT, calibration_files, default_calibration_folder
from .int8 import training_frame_prefixes
from .ood import OODCalibration, calibrate, frame_evidence

# Held-out frames by CheckpointInfo.dataset: (folder under the dataset, file-name prefixes, split name).
# CamVid drive_train's held-out drive is 0001TP (training/datasets.py: drive_val).
HELD_OUT_FRAMES = {("camvid", "drive_train"): ("train", ("0001TP",), "drive_val")}
MAX_FRAMES = 200  # held-out frames
REFERENCE_FRAMES = 64  # training frames, spread evenly over the drives: their layouts are the references


class OODCalibrationError(ValueError):
    """Frames that cannot calibrate the score; the message says what to give instead."""


def frames_evidence(segmenter, files: Sequence[Path]) -> list:
    """The ``ood.FrameEvidence`` of each image file, segmented by ``segmenter`` with confidence."""
    evidence = []
    for path in files:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise OODCalibrationError(f"cannot read image {path}")
        labels, confidence = segmenter.segment(frame, channel_order="bgr", confidence=True)
        evidence.append(frame_evidence(labels, confidence, len(segmenter.classes), frame))
    return evidence


def default_frames(dataset: str, root: Path = REPOSITORY_ROOT) -> tuple[list[Path], list[Path], str, str] | None:
    """(reference files, held-out files, reference split, held-out split) for weights trained on a known
    drive-disjoint split whose frames are here, else None."""
    name, _, split = str(dataset).lower().partition(":")
    known = HELD_OUT_FRAMES.get((name, split))
    references = default_calibration_folder(dataset, root)
    if known is None or references is None:
        return None
    folder, prefixes, held_out_split = known
    held_out = calibration_files((root / KNOWN_TRAINING_FRAMES[name] / folder).resolve(), MAX_FRAMES, prefixes)
    return (calibration_files(references, REFERENCE_FRAMES, training_frame_prefixes(dataset)), held_out, split,
            held_out_split)


def measure_ood_calibration(segmenter, references: Sequence[Path], held_out: Sequence[Path], references_split: str,
                            held_out_split: str, seen_in_training: bool = False) -> OODCalibration:
    """The calibration of ``segmenter``'s weights from reference (training) and held-out image files."""
    return calibrate(frames_evidence(segmenter, references), frames_evidence(segmenter, held_out),
                     {"split": references_split, "frames": len(references)},
                     {"split": held_out_split, "seen_in_training": bool(seen_in_training)})


def split_folder(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """A user's folder as (references, held out): alternate frames, sorted by name, up to MAX_FRAMES each."""
    try:
        files = calibration_files(folder, 2 * MAX_FRAMES)
    except ValueError as error:
        raise OODCalibrationError(str(error).replace("int8 calibration", "ood calibration")) from None
    if len(files) < 8:
        raise OODCalibrationError(f"{folder} holds {len(files)} images; ood calibration needs at least 8 frames "
                                  "of the camera (a few hundred over varied scenes are better)")
    return files[0::2], files[1::2]


def embed_ood_calibration(path: str | os.PathLike, calibration: OODCalibration | Mapping[str, Any] | None) -> Path:
    """Stores the calibration in the checkpoint at ``path`` (atomically; None removes it); every other
    entry is written back exactly as it was read."""
    import torch

    from ..fileio import atomic_open
    from ..weights.checkpoint import CheckpointError, is_our_format, read_checkpoint_file

    data = read_checkpoint_file(path)
    if not is_our_format(data):
        raise CheckpointError(f"{path} is not a bisenetv2_ros checkpoint; convert it first (`bisenetv2 import`)")
    if calibration is None:
        data["info"].pop("ood", None)
    else:
        data["info"]["ood"] = calibration.to_dict() if isinstance(calibration, OODCalibration) else dict(calibration)
    with atomic_open(Path(path)) as stream:
        torch.save(data, stream)
    return Path(path)


def calibrate_ood_file(path: str | os.PathLike, frames: str | os.PathLike | None = None,
                       references: str | os.PathLike | None = None, split: str | None = None,
                       seen_in_training: bool = False, backend: str = "torch") -> OODCalibration:
    """Measures and stores the calibration of the checkpoint at ``path`` (fp32, ``backend``).

    frames: held-out frames of the cameras (a folder); references: frames the weights trained on (a
    folder; default: the weights' known training frames, else alternate frames of ``frames``). Without
    ``frames``, the known held-out split of the weights' dataset (CamVid drive_train: drive_val).
    ``split`` names the held-out frames in the stored record (default: the folder's name).
    """
    from .segmenter import Segmenter

    segmenter = Segmenter(str(path), backend=backend, device="cpu", precision="fp32")
    known = default_frames(segmenter.info.dataset)
    if frames is None:
        if known is None:
            raise OODCalibrationError(f"no held-out frames are known for weights trained on {segmenter.info.dataset!r}; "
                                      "give a folder of frames from your cameras")
        reference_files, held_out, references_split, held_out_split = known
    elif references is not None:
        reference_files, held_out = calibration_files(references, REFERENCE_FRAMES), calibration_files(frames, MAX_FRAMES)
        references_split, held_out_split = Path(references).name, Path(frames).name
    elif known is not None:
        reference_files, _, references_split, _ = known
        held_out, held_out_split = calibration_files(frames, MAX_FRAMES), Path(frames).name
    else:
        reference_files, held_out = split_folder(frames)
        references_split = held_out_split = Path(frames).name
    calibration = measure_ood_calibration(segmenter, reference_files, held_out, references_split,
                                          split or held_out_split, seen_in_training)
    embed_ood_calibration(path, calibration)
    return calibration
