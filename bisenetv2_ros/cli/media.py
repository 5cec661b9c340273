"""Images, image folders and video files in; label PNGs, colour PNGs, overlays and videos out.

Everything written goes through :class:`StagedOutput`: results are built in a hidden folder beside
the final output and renamed into place only when complete, so an interrupted run leaves nothing
half-written. Frames are handled in OpenCV's BGR order end to end (the segmenter is told so).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from ..conventions import DEFAULT_MAX_INPUT_PIXELS, IMAGE_SUFFIXES, is_image_file
from ..fileio import WriteError, special_file_problem, writing
from ..image_files import ImageFileError, read_image_file
from ..output_safety import UnsafeOutput, check_output, distinct_names, record_folder, why_not_own
from ..ros.messages import ImageConversionError, check_frame_size
from .video_output import VideoOutput

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_OUTPUTS = ("labels", "color", "overlay")  # the default for images
# Every kind an image or video run can write; labels and confidence are exact values: PNG per frame.
OUTPUT_KINDS = ("labels", "color", "overlay", "confidence")
PNG_PER_FRAME = ("labels", "confidence")

# (fourcc, extension) OpenCV's bundled FFmpeg can both write and read back without extra codecs.
VIDEO_CODEC = ("mp4v", ".mp4")


class MediaError(ValueError):
    """An input that cannot be read or an output that cannot be written; the message says why."""


def input_kind(path: str | os.PathLike) -> str:
    """'image', 'folder', 'video' or 'bag' for an input path; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"input {path} does not exist")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            special = next(filter(None, (special_file_problem(p, "bag file") for p in path.iterdir())), None)
            if special:
                raise MediaError(special)
            return "bag"
        return "folder"
    special = special_file_problem(path)
    if special:
        raise MediaError(special)
    suffix = path.suffix.lower()
    if is_image_file(path):
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in (".mcap", ".db3"):  # a storage file without its metadata.yaml; rosbags reads it alone
        return "bag"
    raise MediaError(f"cannot tell what {path} is: expected an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                     f"({', '.join(VIDEO_EXTENSIONS)}), a folder of images or a rosbag2 folder")


def default_output(path: str | os.PathLike) -> Path:
    """``<input>_segmented`` beside the input (the suffix dropped: ``clip.mp4`` -> ``clip_segmented``)."""
    path = Path(path).resolve()
    stem = path.name if path.is_dir() else path.stem
    return path.parent / f"{stem}_segmented"


# --------------------------------------------------------------------------------------------
# Atomic outputs


class StagedOutput:
    """A hidden staging folder beside ``final``; ``commit()`` renames its content into place.

    Use as a context manager: leaving it by an exception (KeyboardInterrupt included) or without
    ``commit()`` removes everything staged. ``path`` is where to write: a folder (``is_dir``) or the
    parent of a bag that the bag writer creates itself. ``final`` must pass
    ``output_safety.check_output`` for ``command`` and ``inputs``: with ``overwrite`` an existing
    ``final`` is replaced only when it is an unchanged previous output of ``command``; the committed
    folder carries the record that recognises it next time.
    """

    def __init__(self, final: str | os.PathLike, overwrite: bool = False, create: bool = True,
                 command: str = "bisenetv2 segment", inputs: Sequence[str | os.PathLike] = ()) -> None:
        self.final = check_output(final, command, inputs, overwrite)
        self.command = command
        self.committed = False
        with writing(self.final):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            # the staging name keeps only the start of the final one: a valid name stays valid
            self._stage = Path(tempfile.mkdtemp(prefix=f".{self.final.name[:64]}.partial-", dir=self.final.parent))
        self.path = self._stage / self.final.name
        if create:
            with writing(self.final):
                try:
                    self.path.mkdir()
                except BaseException:
                    self.discard()
                    raise

    def commit(self) -> Path:
        with writing(self.final):
            return self._commit()

    def _commit(self) -> Path:
        record_folder(self.path, self.command)
        if os.path.lexists(self.final):  # only reachable with overwrite, for a previous output of the command
            problem = why_not_own(self.final, self.command)  # again: it may have changed while this ran
            if problem is not None:
                raise UnsafeOutput(f"{self.final} changed while this ran ({problem}); nothing was replaced")
            trash = Path(tempfile.mkdtemp(prefix=f".{self.final.name[:64]}.old-", dir=self.final.parent))
            os.replace(self.final, trash / self.final.name)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.path, self.final)
        shutil.rmtree(self._stage, ignore_errors=True)
        self.committed = True
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self._stage, ignore_errors=True)

    def __enter__(self) -> "StagedOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.committed:
            self.discard()
        if isinstance(exc, WriteError) and exc.filename:  # named as the user knows it, not the staging name
            staged = Path(exc.filename)
            if staged == self.path or staged.is_relative_to(self.path):
                raise WriteError(self.final / staged.relative_to(self.path), exc.strerror, exc.errno, exc.what) from exc
        return False


# --------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """HxWx3 uint8 BGR (grey and 16-bit images are converted by OpenCV). The size in the file's
    header is checked against ``max_pixels`` before decoding; special files are refused."""
    try:
        return read_image_file(path, max_pixels=max_pixels, limit_name="--max-input-pixels")
    except ImageFileError as error:
        raise MediaError(str(error)) from None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image under ``folder`` (recursively), in sorted order; hidden files and folders skipped."""
    folder = Path(folder)
    found = [
        p for p in folder.rglob("*")
        if p.is_file() and is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    try:
        check_frame_size(*size, max_pixels, what=what, limit_name="--max-input-pixels")
    except ImageConversionError as error:
        raise MediaError(str(error)) from None


@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # as the container states it; may be 0 or approximate
    width: int
    height: int


def open_video(path: str | os.PathLike,
               max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An open capture and what its container states; frames above ``max_pixels`` are refused before
    the first is decoded."""
    special = special_file_problem(path, "video")
    if special:
        raise MediaError(special)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"cannot open video {path}: OpenCV cannot decode this file")
    fps = capture.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(
        fps=fps if fps and fps > 0 else 30.0,
        frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    try:
        _check_size((info.width, info.height), max_pixels, f"video {path} (frames)")
    except MediaError:
        capture.release()
        raise
    return capture, info


def video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def batches_of_equal_size(items: Iterable, frame_of: Callable, batch_size: int) -> Iterator[list]:
    """Consecutive items grouped up to ``batch_size``, a group never mixing frame sizes
    (``segment_batch`` needs one size)."""
    group: list = []
    for item in items:
        if group and (len(group) >= batch_size or frame_of(item).shape != frame_of(group[0]).shape):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


# --------------------------------------------------------------------------------------------
# Segmenting


@dataclass
class Summary:
    frames: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per skipped input


def _write_png(path: Path, image: np.ndarray) -> None:
    # encoded here and written by Python, so a failure carries the OS's reason (cv2.imwrite says only False)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise MediaError(f"cannot encode {path} as PNG")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())


def segment_images(segmenter, images: Sequence[Path], root: Path | None, output: Path,
                   outputs: Sequence[str] = IMAGE_OUTPUTS, batch_size: int = 1, alpha: float = 0.5,
                   progress: Callable[[int], None] = lambda n: None,
                   max_pixels: int = DEFAULT_MAX_INPUT_PIXELS, frames_log=None) -> Summary:
    """Segments image files into ``output/<kind>/<path relative to root>.png`` for each kind in
    ``outputs`` (labels: uint8 class ids; color: palette; overlay: palette blended over the image;
    confidence: uint8 round(255 x the labelled class's probability));
    inputs sharing a stem keep their extension (``frame.jpg.png``, ``frame.png.png``).
    Unreadable images are skipped and listed in the summary."""
    summary = Summary()

    def readable() -> Iterator[tuple[Path, np.ndarray]]:
        for path in images:
            try:
                yield path, read_image(path, max_pixels)
            except MediaError as error:
                summary.skipped.append(str(error))
                progress(1)

    relatives = [path.relative_to(root) if root is not None else Path(path.name) for path in images]
    names = dict(zip(images, distinct_names(relatives, ".png")))  # frame.jpg and frame.png: two outputs
    for group in batches_of_equal_size(readable(), lambda item: item[1], batch_size):
        labels, confidences = _segment(segmenter, np.stack([frame for _, frame in group]), outputs, frames_log)
        for (path, frame), label, confidence in zip(group, labels, confidences):
            if frames_log is not None:
                frames_log.record({"file": str(path.relative_to(root) if root is not None else path.name)}, frame, label, confidence)
            for kind in outputs:
                _write_png(output / kind / names[path], render(segmenter, kind, frame, label, alpha, confidence))
            summary.frames += 1
            progress(1)
    return summary


def _segment(segmenter, frames: np.ndarray, outputs: Sequence[str], frames_log=None) -> tuple[np.ndarray, Sequence]:
    """(labels, confidences): the confidence output only when asked for or the frames log scores the frames
    (it is a second graph; test-time augmentation has none)."""
    if "confidence" in outputs or (frames_log is not None and segmenter.tta is None):
        return segmenter.segment_batch(frames, channel_order="bgr", confidence=True)
    return segmenter.segment_batch(frames, channel_order="bgr"), [None] * len(frames)


def render(segmenter, kind: str, frame_bgr: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
           confidence: np.ndarray | None = None) -> np.ndarray:
    """One output image in BGR order (what cv2 writes): labels, color, overlay or confidence."""
    if kind == "labels":
        return labels
    if kind == "confidence":
        if confidence is None:
            raise ValueError("render('confidence') needs the confidence array")
        return confidence
    if kind == "color":
        return np.ascontiguousarray(segmenter.colorize(labels)[..., ::-1])
    if kind == "overlay":
        return segmenter.overlay(frame_bgr, labels, alpha=alpha, channel_order="bgr")
    raise ValueError(f"unknown output kind {kind!r}; choose from {OUTPUT_KINDS}")


def segment_video(segmenter, path: Path, output: Path, outputs: Sequence[str] = ("color", "overlay"),
                  batch_size: int = 1, alpha: float = 0.5,
                  progress: Callable[[int], None] = lambda n: None,
                  max_pixels: int = DEFAULT_MAX_INPUT_PIXELS, frames_log=None) -> Summary:
    """Segments a video into ``output/color.mp4`` and ``output/overlay.mp4`` (same frame rate and
    size as the input) and, with ``labels`` / ``confidence`` in ``outputs``, ``output/<kind>/<frame
    index>.png`` (exact values, not a lossy video)."""
    capture, info = open_video(path, max_pixels)
    fourcc, extension = VIDEO_CODEC
    writers: dict[str, VideoOutput] = {}  # cli/video_output.py: every failure with the OS's reason
    summary = Summary()
    try:
        for kind in outputs:
            if kind not in PNG_PER_FRAME:
                writers[kind] = VideoOutput(output / f"{kind}{extension}", fourcc, info.fps, (info.height, info.width))
        for group in batches_of_equal_size(video_frames(capture), lambda frame: frame, batch_size):
            labels, confidences = _segment(segmenter, np.stack(group), outputs, frames_log)
            for frame, label, confidence in zip(group, labels, confidences):
                if frames_log is not None:
                    frames_log.record({"frame": summary.frames}, frame, label, confidence)
                for kind, writer in writers.items():
                    writer.write(render(segmenter, kind, frame, label, alpha))
                for kind in PNG_PER_FRAME:
                    if kind in outputs:
                        _write_png(output / kind / f"{summary.frames:06d}.png",
                                   render(segmenter, kind, frame, label, alpha, confidence))
                summary.frames += 1
                progress(1)
        if summary.frames == 0:
            raise MediaError(f"video {path} holds no frames OpenCV can decode")
        for writer in writers.values():
            writer.close()  # checks the file reads back with every frame
    except BaseException:
        for writer in writers.values():
            writer.discard()  # a partial video is removed, not left to mislead
        raise
    finally:
        capture.release()
    return summary
