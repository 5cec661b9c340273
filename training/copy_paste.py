"""Copy-paste of rare-class pixels between training frames (issue 23, item 2).

With probability ``probability`` a training sample receives the pixels of the chosen classes from
another random training frame (image and label together), before scaling and cropping. Thin, rare
things (poles, signs, pedestrians, bicyclists) then appear in new surroundings and more often,
without changing how often the common classes are seen elsewhere. The donor frame is resized to the
receiving frame when their sizes differ and mirrored half of the time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

FrameLoader = Callable[[int], "tuple[np.ndarray, np.ndarray]"]


class RareClassPaste:
    """``(image, label, rng) -> (image, label)``: pastes the rare-class pixels of a random donor frame.

    load: index -> (HxWx3 uint8 image, HxW uint8 train-id label), e.g. ``SegmentationDataset.load``.
    frame_count: how many frames ``load`` serves (donors are drawn uniformly from them).
    class_ids: the train ids whose pixels are pasted. probability: the chance a sample gets a paste.
    """

    def __init__(self, load: FrameLoader, frame_count: int, class_ids: Sequence[int], probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"copy-paste probability must be in [0, 1], got {probability}")
        if frame_count < 1:
            raise ValueError(f"copy-paste needs at least one donor frame, got {frame_count}")
        if not class_ids:
            raise ValueError("copy-paste needs at least one class to paste")
        self.load = load
        self.frame_count = int(frame_count)
        self.class_ids = np.asarray(sorted(set(int(c) for c in class_ids)), dtype=np.int64)
        self.probability = float(probability)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        # No random draw at all when switched off, so runs without copy-paste keep their data stream.
        if self.probability <= 0 or rng.random() >= self.probability:
            return image, label
        donor_image, donor_label = self.load(int(rng.integers(self.frame_count)))
        height, width = label.shape
        if donor_label.shape != (height, width):
            donor_image = cv2.resize(donor_image, (width, height), interpolation=cv2.INTER_LINEAR)
            donor_label = cv2.resize(donor_label, (width, height), interpolation=cv2.INTER_NEAREST)
        if rng.random() < 0.5:
            donor_image, donor_label = donor_image[:, ::-1], donor_label[:, ::-1]
        mask = np.isin(donor_label, self.class_ids)
        if not mask.any():
            return image, label
        image, label = image.copy(), label.copy()
        image[mask] = donor_image[mask]
        label[mask] = donor_label[mask]
        return image, label
