"""Train BiSeNetV2 with the paper's recipe (Yu et al., IJCV 2021, Sec. 5), or BiSeNetV1.

    python training/train.py --config training/configs/camvid.yaml --set data.root=/data/camvid
    python training/train.py --config training/configs/camvid.yaml --model bisenetv1 --set loss.ohem=false
    torchrun --nproc_per_node 8 training/train.py --config training/configs/cityscapes.yaml
    python training/train.py --config ... --resume              # continue exactly after a kill

Outputs in run.out_dir: latest.pt and best.pt (kind='train' checkpoints with the full training
state), log.jsonl (one JSON object per log / validation step), config.yaml, TensorBoard events.

BiSeNetV1 (ECCV 2018, Sec. 3.3, Eq. 2-3) trains with the principal loss on the output plus two auxiliary
losses on the Context Path's 1/8 and 1/16 features, each weighted alpha = 1 (loss.aux_weight); the paper's
losses are plain softmax cross-entropy, i.e. loss.ohem=false. Its ResNet-18 starts from scratch here
(Kaiming init, no download), as mmsegmentation's "train from scratch" R-18 run (74.44 mIoU on Cityscapes).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and `bisenetv2_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from bisenetv2_ros.cli.arguments import add_debug_flag, positive_int, run_script
from bisenetv2_ros.fileio import WriteError, writing
from bisenetv2_ros.models.architectures import build_model
from bisenetv2_ros.output_safety import check_run_folder
from bisenetv2_ros.weights.checkpoint import Checkpoint, save_checkpoint
from training.checkpointing import (
    LoopState,
    checkpoint_info,
    resume_latest,
    schedule_of,
    set_rng_state,
    training_state,
    warm_start,
)
from training.config import TrainConfig, load_config
from training.evaluate import evaluate_model, format_table
from training.run_log import RunLog, forget_unfinished_run, print_run_summary
from training.run_setup import (
    AMP_DTYPES,
    Distributed,
    build_criterion,
    build_datasets,
    build_loader,
    build_optimizer,
    class_weights,
    configure_process,
    dataset_normalization,
    local_batch_size,
    resolve_amp,
    wrap_network,
)


class Trainer:
    """One run: built from the config (run_setup), continued from its checkpoints (checkpointing), the loop
    here. ``loop_state`` holds what latest.pt carries besides the weights and the optimizer."""

    def __init__(self, config: TrainConfig, resume: bool = False, command: str = "", progress: bool = True) -> None:
        self.config = config
        run = config.run
        self.env = Distributed(run.device)
        configure_process(run, self.env)
        self.out_dir = Path(run.out_dir)
        if self.env.main:  # best.pt, latest.pt and the log of another run are never replaced
            check_run_folder(self.out_dir, resume)
        self.command = command
        self.show_progress = progress

        self.train_set, self.val_set = build_datasets(config.data)
        self.classes = self.train_set.classes
        self.local_batch = local_batch_size(run.batch_size, self.env.world_size)

        self.model = build_model(config.model.model_config(len(self.classes))).to(self.env.device)
        self.memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer, self.scheduler = build_optimizer(self.model, config)
        self.schedule = schedule_of(config)  # the schedule as built; a resume must find the same one
        amp = resolve_amp(run.amp, self.env.device)
        self.amp_dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=amp == "fp16")
        self.class_weights = class_weights(config.loss, self.train_set)
        self.criterion = build_criterion(config.loss, self.class_weights)
        if self.env.main:
            print_run_summary(self.train_set, self.val_set, amp, run, self.class_weights)
        self.loop_state, pending_rng = LoopState(), None
        if resume:
            self.loop_state, pending_rng = resume_latest(self.out_dir, config, self.schedule, self.model,
                                                       self.optimizer, self.scheduler, self.scaler, self.env.rank)
        if run.init_weights and self.iteration == 0:
            self.loop_state.parent_lineage = warm_start(self.model, run.init_weights, self.classes, self.env.main)
        self.net: nn.Module = wrap_network(self.model, run, self.env)
        self.loader = build_loader(self.train_set, self.local_batch, run, config.data.workers, self.env,
                                   self.iteration)
        if pending_rng is not None:
            set_rng_state(pending_rng)

    @property
    def iteration(self) -> int:
        """Optimizer steps done so far (0 for a fresh run or a warm start)."""
        return self.loop_state.iteration

    def save(self, name: str, metrics: dict[str, float]) -> Path:
        info = checkpoint_info(self.config, self.classes, self.command, self.loop_state, metrics)
        state = training_state(self.config, self.schedule, self.loop_state, self.optimizer, self.scheduler,
                               self.scaler)
        with writing(self.out_dir / name):  # a failure names the checkpoint and the OS's reason
            return save_checkpoint(Checkpoint.from_model(self.model, info, kind="train", training_state=state),
                                   self.out_dir / name)

    def validate(self) -> dict[str, Any] | None:
        if self.val_set is None:
            return None
        data = self.config.data
        return evaluate_model(self.model, self.val_set, data.eval_size, dataset_normalization(self.config),
                              limit=data.val_limit, device=self.env.device)

    # ---- the loop

    def train(self) -> dict[str, Any]:
        run, state = self.config.run, self.loop_state
        log = RunLog(self.out_dir, self.config, self.env.main, self.show_progress, state.iteration)
        self.model.train()
        batches = iter(self.loader)
        last_summary = None
        log.start_timing()
        while state.iteration < run.iterations:
            images, labels = next(batches)
            images = images.to(self.env.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            labels = labels.to(self.env.device, non_blocking=True)
            with torch.autocast(self.env.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                outputs = self.net(images)
            loss, parts = self.criterion(outputs, labels)
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"loss is {parts['loss']} at iteration {state.iteration}; lower optim.lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            state.iteration += 1
            log.step(state.iteration, self.optimizer.param_groups[0]["lr"], parts)
            done = state.iteration == run.iterations
            if state.iteration % run.eval_every == 0 or done:
                if self.env.main:
                    summary = self.validate()
                    if summary is not None:
                        last_summary = summary
                        log.validation(state.iteration, summary, len(self.val_set))
                        state.history.append({"iteration": state.iteration, "val_miou": summary["miou"]})
                        if summary["miou"] > state.best_miou:  # best.pt: the best validation mIoU so far
                            state.best_miou = summary["miou"]
                            split = self.config.data.val_split
                            self.save("best.pt", {"val_miou": summary["miou"],
                                                  "val_pixel_accuracy": summary["pixel_accuracy"],
                                                  f"{split}_miou": summary["miou"],
                                                  "iteration": float(state.iteration)})
                self.env.barrier()
            if self.env.main and (state.iteration % run.checkpoint_every == 0 or done):
                self.save("latest.pt", {"best_val_miou": state.best_miou, "iteration": float(state.iteration)})
        log.close()
        if self.env.main and last_summary is not None:
            print(format_table(last_summary), flush=True)
        return {"iteration": state.iteration, "best_miou": state.best_miou, "last": last_summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Train BiSeNetV2 (paper recipe) or BiSeNetV1.")
    parser.add_argument("--config", required=True, help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    parser.add_argument("--model", choices=("bisenetv2", "bisenetv1"), default=None,
                        help="network: shortcut for --set model.architecture=... (default: the config's, else bisenetv2)")
    parser.add_argument("--data-root", default=None, help="shortcut for --set data.root=...")
    parser.add_argument("--out-dir", default=None, help="shortcut for --set run.out_dir=...")
    parser.add_argument("--iterations", type=positive_int, default=None, help="shortcut for --set run.iterations=...")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from OUT_DIR/latest.pt (without it an existing run folder is refused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.architecture={args.model}")
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.out_dir:
        overrides.append(f"run.out_dir={args.out_dir}")
    if args.iterations is not None:  # 0 too: the config check refuses it
        overrides.append(f"run.iterations={args.iterations}")
    config = load_config(args.config, overrides)
    STARTED_RUN[:] = [Path(config.run.out_dir)]
    command = " ".join(["python training/train.py", *(argv if argv is not None else sys.argv[1:])])
    trainer = Trainer(config, resume=args.resume, command=command, progress=not args.no_progress)
    try:
        result = trainer.train()
    except WriteError:
        if trainer.env.main and not args.resume:
            forget_unfinished_run(trainer.out_dir)  # nothing to resume: do not block the command run again
        raise
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


STARTED_RUN: list[Path] = []  # the run folder of this process's run, once its config is read


def what_a_stop_leaves() -> str:
    if STARTED_RUN and (STARTED_RUN[0] / "latest.pt").is_file():
        return "the last checkpoint (latest.pt) is kept: continue with the same command plus --resume"
    return "no checkpoint was saved yet"


if __name__ == "__main__":
    sys.exit(run_script("training/train.py", main, stopped=what_a_stop_leaves))
