"""``frames.jsonl``: one JSON object per segmented frame, written by ``bisenetv2 segment``.

Each record names its input (``file``, or ``frame`` index for a video, or ``topic`` and ``stamp`` for a
bag) and holds the out-of-distribution score (``inference/ood.py``) and its flag, the mean confidence
and the class fractions. ``ood`` is null when the weights carry no ood calibration ("uncalibrated"),
and every score field is null under test-time augmentation (which has no confidence output).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..fileio import writing
from ..inference.ood import OODScorer

FRAMES_LOG = "frames.jsonl"


class FramesLog:
    """Appends a record per frame to ``folder/frames.jsonl``; counts the flagged frames."""

    def __init__(self, folder: Path, segmenter) -> None:
        self.classes = tuple(segmenter.classes.names)
        self.scorer = OODScorer(segmenter.info.ood, len(self.classes))
        self.path = Path(folder) / FRAMES_LOG
        self._stream = None  # opened with the first record: a bag's folder exists only once its writer opened it
        self.frames = self.flagged = 0

    def record(self, source: Mapping[str, Any], frame: np.ndarray, labels: np.ndarray,
               confidence: np.ndarray | None, scored: tuple[float, bool | None] | None = None) -> dict[str, Any]:
        """Writes one frame's record; ``source`` names the input (e.g. {"file": "a.png"}); ``scored``: the
        frame's (score, ood) when already computed (a bag's ``info`` topic, cli/bag_info.py)."""
        counts = np.bincount(labels.ravel(), minlength=256)[:len(self.classes)]
        fractions = {name: round(float(n) / labels.size, 6) for name, n in zip(self.classes, counts)}
        record: dict[str, Any] = {**source, "ood_score": None, "ood": None, "mean_confidence": None}
        if confidence is not None:
            score, flagged = scored if scored is not None else self.scorer.score(frame, labels, confidence)
            record.update(ood_score=round(score, 6), ood=flagged, mean_confidence=round(float(confidence.mean()) / 255.0, 6))
            self.flagged += int(bool(flagged))
        record["class_fractions"] = fractions
        with writing(self.path):
            if self._stream is None:
                self._stream = self.path.open("w", encoding="utf-8")
            self._stream.write(json.dumps(record) + "\n")
        self.frames += 1
        return record

    def summary(self) -> str:
        """The summary line's part: '3 of 120 frames flagged out of distribution' or 'ood uncalibrated'."""
        if not self.scorer.calibrated:
            return "ood uncalibrated (bisenetv2 calibrate-ood)"
        return f"{self.flagged} of {self.frames} frames flagged out of distribution"

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with writing(self.path):  # the last buffered records are written here
                stream.close()

    def __enter__(self) -> "FramesLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
