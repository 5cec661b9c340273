"""What a training run reports besides its checkpoints: config.yaml, log.jsonl (one JSON object per log
or validation step), TensorBoard events (when tensorboard is installed), and the progress bar or the
printed lines. Only the main process of a torchrun job writes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bisenetv2_ros.fileio import writing
from training.config import RunSection, TrainConfig
from training.datasets import SegmentationDataset


def print_run_summary(train_set: SegmentationDataset, val_set: SegmentationDataset | None, amp: str,
                      run: RunSection, class_weights: torch.Tensor | None) -> None:
    """The data, precision and threads a run trains with (and its class weights), before the first step."""
    print(f"training on {len(train_set)} frames of {train_set.name}, validating on "
          f"{len(val_set) if val_set is not None else 0} frames of "
          f"{val_set.name if val_set is not None else '-'}; amp {amp}, "
          f"channels_last {run.channels_last}, compile {run.compile}, threads {torch.get_num_threads()}",
          flush=True)
    if class_weights is not None:
        print("class weights: " + ", ".join(f"{n} {w:.2f}" for n, w in
                                            zip(train_set.classes.names, class_weights.tolist())), flush=True)


def forget_unfinished_run(out_dir: Path) -> None:
    """After a write failed in a run that saved no checkpoint yet: removes what ``RunLog`` wrote
    (config.yaml, log.jsonl, tensorboard/) and the folder if that empties it, so the corrected command
    is not refused as "holds a run already" (there is nothing to resume)."""
    if any((out_dir / name).exists() for name in ("latest.pt", "best.pt")):
        return
    try:
        for name in ("config.yaml", "log.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        out_dir.rmdir()
    except OSError:  # not empty (other files of the user's), or the disk refuses even this: left as it is
        pass


class RunLog:
    """The run folder's config.yaml, log.jsonl and TensorBoard events, and the progress bar (``progress``)."""

    def __init__(self, out_dir: Path, config: TrainConfig, main: bool, progress: bool, start_iteration: int) -> None:
        self.out_dir, self.config, self.main = out_dir, config, main
        self.writer = None
        if main:
            with writing(out_dir / "config.yaml"):
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.writer = None
        self.bar = None
        if progress and main:
            from tqdm import tqdm
            self.bar = tqdm(total=config.run.iterations, initial=start_iteration, desc="train", dynamic_ncols=True,
                            mininterval=5.0, file=sys.stdout)
        self.start_timing()

    def start_timing(self) -> None:
        """sec_per_iter of the next log step counts from now (after the loader's workers have started)."""
        self.tick = time.time()

    def write(self, record: dict[str, Any]) -> None:
        """One line of log.jsonl; its numbers (but iteration and time) also go to TensorBoard."""
        if not self.main:
            return
        with writing(self.out_dir / "log.jsonl"):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "log.jsonl", "a") as stream:
                stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("iteration", "time"):
                    self.writer.add_scalar(key, value, record["iteration"])

    def say(self, message: str) -> None:
        print(message, flush=True) if self.bar is None else self.bar.write(message)

    def step(self, iteration: int, lr: float, parts: dict[str, float]) -> None:
        """After an optimizer step: the bar, and every run.log_every steps (and the last) a log record."""
        run = self.config.run
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.4f}")
        if iteration % run.log_every == 0 or iteration == run.iterations:
            now = time.time()
            self.write({"iteration": iteration, "lr": lr, "sec_per_iter": (now - self.tick) / run.log_every,
                        "time": now, **parts})
            self.tick = now

    def validation(self, iteration: int, summary: dict[str, Any], val_frames: int) -> None:
        """A validation record (with per-class IoU) and its one-line summary."""
        data = self.config.data
        record = {"iteration": iteration, "val_split": data.val_split, "val_miou": summary["miou"],
                  "val_pixel_accuracy": summary["pixel_accuracy"],
                  "val_frames": min(data.val_limit or val_frames, val_frames)}
        self.write({**record, "per_class_iou": summary["per_class_iou"]})
        self.say(f"iteration {iteration}: {data.val_split} mIoU {100 * summary['miou']:.2f}% (" + ", ".join(
            f"{k} {100 * v:.0f}" for k, v in summary["per_class_iou"].items() if v is not None) + ")")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
