"""The ``info`` topic of a segmented bag: one ``bisenetv2_ros/msg/SegmentationInfo`` per frame, filled
as the node fills its ``info`` output (``ros/pipeline.py``) through the same builder (``ros/messages.py``).

What a bag run has in place of the node's live figures: ``frames_received`` counts the camera topic's
messages read so far, ``frames_dropped`` those of them that could not be decoded (skipped), and
``latency_ms`` runs from reading the frame out of the bag to writing its results (batching included).
``class_confidence`` is filled with the ``confidence`` output, as the node fills it with
``publish_confidence``; the ood fields are the same values as the frame's ``frames.jsonl`` record.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..inference.ood import OODScorer
from ..ros import messages

INFO_TYPE = "bisenetv2_ros/msg/SegmentationInfo"


class BagInfo:
    """Counts the camera topic's frames and builds each segmented frame's info message."""

    def __init__(self, segmenter, info_type: Any, with_class_confidence: bool,
                 clock=time.monotonic) -> None:
        self.segmenter, self.info_type, self.clock = segmenter, info_type, clock
        self.with_class_confidence = with_class_confidence
        self.num_classes = len(segmenter.classes)
        self.scorer = OODScorer(getattr(segmenter.info, "ood", None), self.num_classes)
        self.received = self.dropped = self.processed = 0

    def read(self, decoded: bool) -> tuple[float, int, int]:
        """Counts one camera message; returns what its info message reports (read time, received, dropped)."""
        self.received += 1
        self.dropped += int(not decoded)
        return self.clock(), self.received, self.dropped

    def score(self, frame: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None) -> tuple[float, bool | None] | None:
        """(score, ood) of a frame (``OODScorer.score``; ood None when uncalibrated), for the info message and
        ``frames.jsonl`` alike; None without confidence (test-time augmentation)."""
        return None if confidence is None else self.scorer.score(frame, labels, confidence)

    def message(self, header: Any, counts: tuple[float, int, int], labels: np.ndarray,
                confidence: np.ndarray | None, scored: tuple[float, bool | None] | None, inference_ms: float,
                batch_size: int) -> Any:
        """The frame's info message; ``counts`` from ``read``, ``scored`` from ``score`` (None: a NaN score)."""
        read_at, received, dropped = counts
        ood = None if scored is None else {"ood_score": float(scored[0]), "ood": bool(scored[1]),
                                           "ood_calibrated": self.scorer.calibrated}
        self.processed += 1
        with_confidence = confidence is not None and self.with_class_confidence
        return messages.info_message(
            self.info_type, header, model=str(self.segmenter.weights),
            backend=getattr(self.segmenter, "backend_name", ""), device=str(getattr(self.segmenter, "device", "")),
            inference_ms=inference_ms, batch_size=batch_size, latency_ms=(self.clock() - read_at) * 1000.0,
            frames_received=received, frames_processed=self.processed, frames_dropped=dropped,
            fractions=messages.class_fractions(labels, self.num_classes),
            confidences=messages.class_confidence(labels, confidence, self.num_classes) if with_confidence else (),
            ood=ood)
