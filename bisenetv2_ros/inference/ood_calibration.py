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

from ..image_files import ImageFileError, read_image_file
from .int8 import KNOWN_TRAINING_FRAMES, REPOSITORY_ROOT, calibration_files
from .ood import OODCalibration, calibrate, calibration_problem, frame_evidence

# Frame sets known by name ("dataset:split"): (folder under the dataset, file-name prefixes). CamVid's
# drive-disjoint split (training/datasets.py): drive_train = drives 0006R0 + 0016E5, drive_val = 0001TP,
# all in its `train` folder (its `val` folder is 0016E5 again).
NAMED_FRAMES = {("camvid", "drive_train"): ("train", ("0006R0", "0016E5")), ("camvid", "drive_val"): ("train", ("0001TP",)),
                ("camvid", "train"): ("train", ()), ("camvid", "val"): ("val", ()),
                # every labelled frame: the train folder already holds all three drives (val is 0016E5 again)
                ("camvid", "all"): ("train", ())}
# The held-out split of weights trained on a split (CheckpointInfo.dataset).
HELD_OUT_OF = {"camvid:drive_train": "camvid:drive_val"}
MAX_FRAMES = 200  # held-out frames
REFERENCE_FRAMES = 64  # training frames, spread evenly over the drives: their layouts are the references


class OODCalibrationError(ValueError):
    """Frames that cannot calibrate the score; the message says what to give instead."""


def frame_files(frames: str | os.PathLike, limit: int, dataset_root: str | os.PathLike | None = None) -> list[Path]:
    """The image files of a folder, or of a named frame set ("camvid:drive_val", NAMED_FRAMES) under
    ``dataset_root`` (default: where the workplace keeps the dataset); a clear error when neither."""
    name, _, split = str(frames).lower().partition(":")
    if not Path(frames).exists() and (name, split) in NAMED_FRAMES:
        folder, prefixes = NAMED_FRAMES[(name, split)]
        root = Path(dataset_root) if dataset_root else (REPOSITORY_ROOT / KNOWN_TRAINING_FRAMES[name]).resolve()
        if not (root / folder).is_dir():
            raise OODCalibrationError(f"the frames of {frames} are not here ({root / folder}); give a folder instead")
        return calibration_files(root / folder, limit, prefixes)
    if not Path(frames).is_dir():
        known = ", ".join(f"{n}:{s}" for n, s in NAMED_FRAMES)
        raise OODCalibrationError(f"{frames} is neither a folder of frames nor a known frame set ({known})")
    return calibration_files(frames, limit)


def frames_evidence(segmenter, files: Sequence[Path]) -> list:
    """The ``ood.FrameEvidence`` of each image file, segmented by ``segmenter`` with confidence."""
    evidence = []
    for path in files:
        try:
            frame = read_image_file(path, what="ood calibration frame")
        except ImageFileError as error:
            raise OODCalibrationError(str(error)) from None
        labels, confidence = segmenter.segment(frame, channel_order="bgr", confidence=True)
        evidence.append(frame_evidence(labels, confidence, len(segmenter.classes), frame))
    return evidence


def known_frames(dataset: str, dataset_root: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """(references, held out) frame-set names for weights trained on ``dataset`` when known and here."""
    held_out = HELD_OUT_OF.get(str(dataset).lower())
    if held_out is None:
        return None
    try:
        frame_files(held_out, 1, dataset_root)
    except (OODCalibrationError, ValueError):
        return None
    return str(dataset).lower(), held_out


def measure_ood_calibration(segmenter, references: Sequence[Path], held_out: Sequence[Path], references_split: str,
                            held_out_split: str, seen_in_training: bool = False) -> OODCalibration:
    """The calibration of ``segmenter``'s weights from reference (training) and held-out image files."""
    return calibrate(frames_evidence(segmenter, references), frames_evidence(segmenter, held_out),
                     {"split": references_split, "frames": len(references)},
                     {"split": held_out_split, "seen_in_training": bool(seen_in_training)})


def embed_ood_calibration(path: str | os.PathLike, calibration: OODCalibration | Mapping[str, Any] | None) -> Path:
    """Stores the calibration in the checkpoint at ``path`` (atomically; None removes it); every other
    entry is written back exactly as it was read."""
    from ..weights.checkpoint import replace_info_entry

    if isinstance(calibration, OODCalibration):
        calibration = calibration.to_dict()
    return replace_info_entry(path, "ood", None if calibration is None else dict(calibration))


def calibrate_ood_file(path: str | os.PathLike, frames: str | os.PathLike | None = None,
                       references: str | os.PathLike | None = None, split: str | None = None,
                       seen_in_training: bool = False, dataset_root: str | os.PathLike | None = None,
                       backend: str = "torch") -> OODCalibration:
    """Measures (fp32, ``backend``) and stores the calibration of the checkpoint at ``path``; the one call
    for ``bisenetv2 calibrate-ood``, ``bisenetv2 export`` and ``training/promote.py``.

    frames: held-out frames (a folder, or a frame set such as "camvid:drive_val"; default: the known
    held-out split of the weights' dataset). references: frames the weights trained on (same forms;
    default: the weights' dataset when known, else every other frame of ``frames``). ``split`` names the
    held-out frames in the record (default: ``frames``' name); ``seen_in_training`` records that the
    weights trained on them (the threshold is then optimistic, and says so).
    """
    from .segmenter import Segmenter

    segmenter = Segmenter(str(path), backend=backend, device="cpu", precision="fp32")
    known = known_frames(segmenter.info.dataset, dataset_root)
    if frames is None and known is None:
        raise OODCalibrationError(f"no held-out frames are known for weights trained on {segmenter.info.dataset!r}; "
                                  "give a folder of frames from your cameras")
    frames = frames if frames is not None else known[1]
    held_out = frame_files(frames, MAX_FRAMES, dataset_root)
    if references is None and known is not None:
        references = known[0]
    if references is not None:
        reference_files = frame_files(references, REFERENCE_FRAMES, dataset_root)
    else:
        reference_files, held_out = held_out[0::2], held_out[1::2]
        references = f"{Path(frames).name} (even frames)"
    if len(held_out) < 4 or len(reference_files) < 3:
        raise OODCalibrationError(f"ood calibration needs at least 4 held-out and 3 reference frames; {frames} gave "
                                  f"{len(held_out)} and {len(reference_files)}")
    calibration = measure_ood_calibration(segmenter, reference_files, held_out, Path(str(references)).name,
                                          split or Path(str(frames)).name, seen_in_training)
    embed_ood_calibration(path, calibration)
    return calibration


def deploy_ood_calibration(path: str | os.PathLike) -> str | None:
    """``bisenetv2 export``: measures the deploy checkpoint's calibration afresh (on the weights as stored)
    when its dataset's held-out frames are known and here; else keeps the one it carries. Returns a line
    for the user (None: nothing to say)."""
    from ..weights.checkpoint import load_checkpoint

    info = load_checkpoint(path).info
    if known_frames(info.dataset) is not None:
        return "measured: " + calibrate_ood_file(path).summary()
    if info.ood is None:
        return None
    problem = calibration_problem(info.ood, len(info.classes))
    if problem:
        embed_ood_calibration(path, None)
        return f"removed ({problem}; measure one with `bisenetv2 calibrate-ood`)"
    return "kept: " + OODCalibration.from_dict(info.ood).summary()
