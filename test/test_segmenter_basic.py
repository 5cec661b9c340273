import numpy as np
import pytest

from bisenetv2_ros.inference.segmenter import Segmenter


def test_segment_returns_labels_at_frame_size(tiny_weights):
    seg = Segmenter(tiny_weights, backend="torch")
    frame = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    labels = seg.segment(frame)
    assert labels.shape == (90, 130) and labels.dtype == np.uint8
    assert labels.max() < 11
    assert seg.colorize(labels).shape == (90, 130, 3)
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, 3\)"):
        seg.segment(frame.astype(np.float32))
