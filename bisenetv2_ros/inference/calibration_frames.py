"""The frames an int8 graph is calibrated on: a folder the user gives, or the frames the weights were
trained on when the workplace keeps them beside the checkout (``default_calibration_folder``); read
through the one image door (``image_files``), spread evenly over the folder, fingerprinted for the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..conventions import IMAGE_SUFFIXES, is_image_file
from .backend_base import BackendError

DEFAULT_CALIBRATION_FRAMES = 32
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# Where the frames of a checkpoint's training set live, by CheckpointInfo.dataset ("camvid:train").
# Relative to the repository root: the workplace keeps its data beside the checkout.
KNOWN_TRAINING_FRAMES = {"camvid": Path("..") / "shared" / "data" / "camvid"}
# Training splits that are not a folder of their own: (folder, file-name prefixes). CamVid's
# drive-disjoint split (training/datasets.py) is drives 0006R0 + 0016E5; its `train` folder holds both
# (the `val` folder is 0016E5 again) but also drive 0001TP, which must not be calibrated on: it is the
# held-out drive.
SPLIT_FRAMES = {("camvid", "drive_train"): ("train", ("0006R0", "0016E5")),
                # every labelled frame (train + val folders): the train folder already holds all three drives
                ("camvid", "all"): ("train", ())}
NO_CALIBRATION_HELP = ("give a folder of a few dozen representative frames: backend_options="
                       "{'calibration_images': 'folder/'} (CLI: --calibration-images folder/), or use precision 'fp32'")


def default_calibration_folder(dataset: str, root: Path = REPOSITORY_ROOT) -> Path | None:
    """The folder of the frames a checkpoint was trained on, if known and present, else None.

    ``dataset`` is ``CheckpointInfo.dataset``, e.g. "camvid:train" -> ../shared/data/camvid/train.
    """
    name, _, split = str(dataset).lower().partition(":")
    base = KNOWN_TRAINING_FRAMES.get(name)
    if base is None:
        return None
    split, _ = SPLIT_FRAMES.get((name, split), (split or "train", ()))
    folder = (root / base / split).resolve()
    return folder if folder.is_dir() else None


def training_frame_prefixes(dataset: str) -> tuple[str, ...]:
    """File-name prefixes of the training frames in ``default_calibration_folder`` (() = every file)."""
    name, _, split = str(dataset).lower().partition(":")
    return SPLIT_FRAMES.get((name, split), ("", ()))[1]


def calibration_files(folder: str | os.PathLike, limit: int = DEFAULT_CALIBRATION_FRAMES,
                      prefixes: tuple[str, ...] = ()) -> list[Path]:
    """``limit`` image files spread evenly over the sorted folder (recursive), only those whose names
    start with one of ``prefixes`` if given; a clear error if none.

    Evenly spread rather than the first ``limit``: a folder of video frames sorted by name starts
    with one scene, and calibration should see them all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError(f"int8 calibration folder {folder} does not exist; {NO_CALIBRATION_HELP}")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and is_image_file(p) and p.name.startswith(prefixes or ""))
    if not files:
        raise BackendError(f"int8 calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > limit:
        picks = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in picks]
    return files


def load_calibration_frames(files: Sequence[Path], size: tuple[int, int], channel_order: str) -> np.ndarray:
    """(N, H, W, 3) uint8 frames in ``channel_order`` at ``size`` (height, width)."""
    import cv2

    from ..image_files import ImageFileError, read_image_file

    frames = []
    for path in files:
        try:
            image = read_image_file(path, what="int8 calibration image")
        except ImageFileError as error:
            raise BackendError(str(error)) from None
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(image if channel_order == "bgr" else image[..., ::-1])
    return np.ascontiguousarray(np.stack(frames))


def files_fingerprint(files: Sequence[Path]) -> str:
    """SHA-256 over the names and contents of the calibration files (order included)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def frames_fingerprint(frames: np.ndarray) -> str:
    return hashlib.sha256(str(frames.shape).encode() + np.ascontiguousarray(frames).tobytes()).hexdigest()
