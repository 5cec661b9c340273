"""A short real-data run: overfit a handful of real CamVid frames (skipped without the data)."""

from __future__ import annotations

import pytest

from bisenetv2_ros.weights.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.train import Trainer

FRAMES = ["0001TP_006690", "0006R0_f00930", "0016E5_00390", "0016E5_05640"]


@pytest.mark.slow
def test_overfits_a_few_camvid_frames(camvid_dir, tmp_path):
    root = tmp_path / "camvid4"
    for split, annot in (("train", "trainannot"), ("val", "valannot")):
        (root / split).mkdir(parents=True)
        (root / annot).mkdir()
        for stem in FRAMES:
            images = list((camvid_dir / "train").glob(f"{stem}.*"))
            assert images, f"frame {stem} missing from {camvid_dir / 'train'}"
            (root / split / images[0].name).symlink_to(images[0])
            (root / annot / f"{stem}.png").symlink_to(camvid_dir / "trainannot" / f"{stem}.png")
    config = TrainConfig.from_dict({
        "model": {"width_multiplier": 0.25, "head_channels": 32, "aux_head_channels": 8},
        "data": {"dataset": "camvid", "root": str(root), "base_size": [60, 80], "scales": [1.0],
                 "crop_size": [60, 80], "hflip": False, "eval_size": [60, 80], "workers": 0},
        "optim": {"lr": 0.05, "warmup_iters": 10},
        "loss": {"ohem": False},
        "run": {"iterations": 120, "batch_size": 4, "device": "cpu", "threads": 1, "out_dir": str(tmp_path / "run"),
                "log_every": 10, "eval_every": 120, "checkpoint_every": 120},
    })
    result = Trainer(config, progress=False).train()
    # Evaluated at 60x80 and upsampled to the full 360x480 labels, as in deployment.
    assert result["last"]["pixels"] > 4 * 360 * 480 * 0.8
    assert result["last"]["pixel_accuracy"] > 0.85, result["last"]
    assert load_checkpoint(tmp_path / "run" / "best.pt").info.classes.names[0] == "sky"
