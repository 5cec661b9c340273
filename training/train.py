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
import json
import math
import os
import random
import time
from datetime import datetime, timezone
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from bisenetv2_ros.cli.arguments import add_debug_flag, run_script
from bisenetv2_ros.models.architectures import ModelConfig, build_model
from bisenetv2_ros.output_safety import check_run_folder
from bisenetv2_ros.weights.checkpoint import (
    Checkpoint,
    CheckpointInfo,
    Normalization,
    load_checkpoint,
    load_state_dict_strict,
    save_checkpoint,
)
from bisenetv2_ros.weights.known_weights import open_weights
from training.config import TrainConfig, load_config
from training.augmentation import PhotometricJitter, TrainTransform
from training.copy_paste import RareClassPaste
from training.datasets import (
    ResumableSampler,
    build_dataset,
    label_histogram,
    median_frequency_weights,
    rare_class_ids,
    require_labelled_pixels,
)
from training.evaluate import evaluate_model, format_table
from training.lineage import PARENT_KEY, weights_lineage
from training.losses import BoosterLoss, OhemCrossEntropy

# --------------------------------------------------------------------------------------------
# Building blocks


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights only; BN parameters and biases get none (Sec. 5)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_conv_weight = isinstance(module, nn.modules.conv._ConvNd) and name == "weight"
            (decay if is_conv_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def poly_lambda(iterations: int, power: float, warmup_iters: int = 0, warmup_ratio: float = 0.1):
    """lr factor at step t: linear warm-up, then (1 - t / T) ** power."""
    def factor(step: int) -> float:
        if step < warmup_iters:
            return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
        return max(0.0, 1.0 - step / iterations) ** power
    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # Augmentation draws from per-sample seeds; this only makes stray global RNG use reproducible.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state as plain containers (checkpoints load with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Distributed:
    """torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK); a single process otherwise."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in /proc/cpuinfo: without them CPU bf16 autocast is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> str:
    """run.amp 'auto' -> bf16 where the hardware computes it natively, none elsewhere."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if cpu_has_native_bf16() else "none"


# Settings that define the learning-rate schedule and the data stream: a resumed run must keep them.
SCHEDULE_KEYS = (("run", "iterations"), ("run", "batch_size"), ("run", "seed"), ("optim", "lr"),
                 ("optim", "poly_power"), ("optim", "warmup_iters"), ("optim", "warmup_ratio"))


def schedule_of(config: TrainConfig) -> dict[str, Any]:
    """{'section.key': value} of the schedule settings (what the lr lambda and the sampler were built from)."""
    values = config.to_dict()
    return {f"{section}.{key}": values[section][key] for section, key in SCHEDULE_KEYS}


def schedule_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'section.key: saved -> current' for every schedule setting a resume would change."""
    return [f"{key}: {saved[key]} -> {value}" for key, value in current.items() if key in saved and saved[key] != value]


def dataset_normalization(config: TrainConfig) -> Normalization:
    return Normalization(tuple(config.data.mean), tuple(config.data.std), "rgb")


def model_config(config: TrainConfig, num_classes: int) -> ModelConfig:
    return config.model.model_config(num_classes)


# --------------------------------------------------------------------------------------------
# Training


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False, command: str = "", progress: bool = True) -> None:
        self.config = config
        run = config.run
        self.env = Distributed(run.device)
        if run.threads and self.env.device.type == "cpu":
            torch.set_num_threads(run.threads)
        if run.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True
        seed_everything(run.seed + self.env.rank)
        self.out_dir = Path(run.out_dir)
        if self.env.main:  # best.pt, latest.pt and the log of another run are never replaced
            check_run_folder(self.out_dir, resume)
        self.command = command
        self.progress = progress and self.env.main

        data = config.data
        photometric = PhotometricJitter(**data.photometric) if data.photometric is not None else None
        transform = TrainTransform(data.crop_size, data.scales, data.mean, data.std, data.base_size,
                                   data.train_size, data.hflip, data.scale_range, photometric)
        self.train_set = build_dataset(data.dataset, data.root, data.train_split, data.classes_file, transform)
        require_labelled_pixels(self.train_set)
        if data.rare_classes:
            transform.rare_class_ids = np.asarray(rare_class_ids(self.train_set.classes.names, data.rare_classes))
            transform.rare_crop_fraction = data.rare_crop_fraction
        if data.copy_paste_probability > 0:
            paste_names = data.copy_paste_classes or data.rare_classes
            option = "data.copy_paste_classes" if data.copy_paste_classes else "data.rare_classes"
            transform.paste = RareClassPaste(self.train_set.load, len(self.train_set),
                                             rare_class_ids(self.train_set.classes.names, paste_names, option),
                                             data.copy_paste_probability)
        self.val_set = build_dataset(data.dataset, data.root, data.val_split, data.classes_file) if data.val_split else None
        self.classes = self.train_set.classes

        if run.batch_size % self.env.world_size:
            raise ValueError(f"run.batch_size {run.batch_size} is not divisible by {self.env.world_size} processes")
        self.local_batch = run.batch_size // self.env.world_size

        self.model = build_model(model_config(config, len(self.classes))).to(self.env.device)
        self.memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(param_groups(self.model, config.optim.weight_decay), lr=config.optim.lr,
                                         momentum=config.optim.momentum)
        self.schedule = schedule_of(config)  # the schedule as built; a resume must find the same one
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, poly_lambda(run.iterations, config.optim.poly_power, config.optim.warmup_iters,
                                        config.optim.warmup_ratio))
        amp = resolve_amp(run.amp, self.env.device)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=amp == "fp16")
        self.class_weights = self._class_weights()
        self.criterion = BoosterLoss(OhemCrossEntropy(config.loss.ohem_threshold, config.loss.ohem_min_kept_fraction,
                                                      enabled=config.loss.ohem, class_weights=self.class_weights),
                                     config.loss.aux_weight)
        if self.env.main:
            print(f"training on {len(self.train_set)} frames of {self.train_set.name}, validating on "
                  f"{len(self.val_set) if self.val_set is not None else 0} frames of "
                  f"{self.val_set.name if self.val_set is not None else '-'}; amp {amp}, "
                  f"channels_last {run.channels_last}, compile {run.compile}, threads {torch.get_num_threads()}",
                  flush=True)
            if self.class_weights is not None:
                print("class weights: " + ", ".join(f"{n} {w:.2f}" for n, w in
                                                    zip(self.classes.names, self.class_weights.tolist())), flush=True)
        self.iteration = 0
        self.best_miou = -1.0
        self.parent_lineage: str | None = None  # JSON; set by a warm start (_init_from) or a resume
        self.history: list[dict[str, Any]] = []
        pending_rng = None
        if resume:
            pending_rng = self._load_latest()
        if run.init_weights and self.iteration == 0:
            self._init_from(run.init_weights)
        self.net: nn.Module = self.model
        if run.compile:
            self.net = torch.compile(self.model)
        if self.env.world_size > 1:
            if run.sync_bn and self.env.device.type == "cuda":
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif run.sync_bn and self.env.main:
                print("run.sync_bn ignored: SyncBatchNorm needs CUDA; batch norm stays per process", flush=True)
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.env.local_rank] if self.env.device.type == "cuda" else None)
        sampler = ResumableSampler(len(self.train_set), self.local_batch, run.seed, self.iteration,
                                   self.env.rank, self.env.world_size)
        workers = data.workers
        if workers > 0:
            # OpenCV's thread pool does not survive fork: a forked worker that touches it (resize, or
            # setNumThreads) can wait forever on the parent's pool threads. One OpenCV thread in this
            # process before the workers fork means no pool is copied; the workers do the resizing.
            cv2.setNumThreads(1)
        self.loader = DataLoader(self.train_set, batch_size=self.local_batch, sampler=sampler, num_workers=workers,
                                 pin_memory=self.env.device.type == "cuda", persistent_workers=workers > 0,
                                 worker_init_fn=_worker_init, drop_last=True,
                                 generator=torch.Generator().manual_seed(run.seed),  # keeps the global RNG untouched
                                 prefetch_factor=2 if workers > 0 else None)
        if pending_rng is not None:
            set_rng_state(pending_rng)

    # ---- checkpoints

    def _info(self, metrics: dict[str, float]) -> CheckpointInfo:
        data = self.config.data
        return CheckpointInfo(
            classes=self.classes, normalization=dataset_normalization(self.config),
            train_resolution=tuple(data.eval_size), dataset=f"{data.dataset}:{data.train_split}",
            metrics=metrics,
            provenance={"source": "training/train.py", "command": self.command,
                        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "iterations": str(self.iteration), "config": json.dumps(self.config.to_dict()),
                        **({PARENT_KEY: self.parent_lineage} if self.parent_lineage else {})})

    def _training_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "sampler": {"seed": self.config.run.seed, "next_iteration": self.iteration},
                "best_miou": self.best_miou, "history": self.history, "config": self.config.to_dict(),
                "schedule": self.schedule}

    def save(self, name: str, metrics: dict[str, float]) -> Path:
        checkpoint = Checkpoint.from_model(self.model, self._info(metrics), kind="train",
                                           training_state=self._training_state())
        return save_checkpoint(checkpoint, self.out_dir / name)

    def _load_latest(self) -> dict[str, Any] | None:
        path = self.out_dir / "latest.pt"
        if not path.is_file():
            best = self.out_dir / "best.pt"
            if best.is_file():  # a later best.pt must beat the one there
                self.best_miou = float(load_checkpoint(best).info.metrics.get("val_miou", -1.0))
            print(f"--resume: no {path} yet, starting from scratch", flush=True)
            return None
        checkpoint = load_checkpoint(path)
        state = checkpoint.training_state
        if not state:
            raise ValueError(f"{path} holds no training state; cannot resume from it")
        saved, now = checkpoint.config.to_dict(), self.model.config.to_dict()
        changed = [f"model.{k}: {saved.get(k)} -> {now.get(k)}" for k in sorted(set(saved) | set(now))
                   if saved.get(k) != now.get(k)]
        if type(checkpoint.config) is not type(self.model.config):
            changed.insert(0, f"model.architecture: {checkpoint.architecture} -> {self.config.model.architecture}")
        if changed:
            raise ValueError(f"--resume would change the model of the run in {path} ({'; '.join(changed)}); keep "
                             "its model settings, or start a new run in another --out-dir")
        load_state_dict_strict(self.model, checkpoint.state_dict, source=f"--resume checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        saved = state.get("schedule")
        if saved is None and "config" in state:  # checkpoints written before the schedule was stored
            saved = {f"{section}.{key}": state["config"][section][key] for section, key in SCHEDULE_KEYS
                     if key in state["config"].get(section, {})}
        changes = schedule_changes(saved or {}, self.schedule)
        if changes:
            raise ValueError(f"--resume would change the schedule of the run in {path} ({'; '.join(changes)}); "
                             f"a continuation keeps the original schedule: drop the changed settings, or start "
                             f"a new run in another run.out_dir")
        self.iteration = int(state["iteration"])
        self.best_miou = float(state["best_miou"])
        self.parent_lineage = checkpoint.info.provenance.get(PARENT_KEY)
        self.history = list(state.get("history", []))
        print(f"resumed from {path} at iteration {self.iteration}", flush=True)
        # Per-rank RNG: rank 0's state is stored; other ranks reseed deterministically from it.
        if self.env.rank != 0:
            seed_everything(self.config.run.seed + self.env.rank + 7919 * self.iteration)
            return None
        return state["rng"]

    def _init_from(self, weights: str) -> None:
        """Warm restart: copy the network's weights from a named or saved checkpoint (same architecture,
        classes and sizes); booster heads a deploy file lacks keep their fresh initialisation."""
        opened = open_weights(weights)
        checkpoint = opened.checkpoint
        if list(checkpoint.info.classes.names) != list(self.classes.names):
            raise ValueError(f"run.init_weights {weights}: its classes {list(checkpoint.info.classes.names)} are not "
                             f"this dataset's {list(self.classes.names)}")
        state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
        own = self.model.state_dict()
        # Checked before loading: load_state_dict(strict=False) still raises on a shape mismatch, with
        # hundreds of lines; one line naming the first differing tensors says more.
        bad = ([k for k in own if k not in state and not k.startswith("aux_heads.")]
               + [k for k, v in state.items() if k not in own or own[k].shape != v.shape])
        if bad:
            raise ValueError(f"run.init_weights {weights} does not fit this model: "
                             f"{len(bad)} keys differ, e.g. {bad[:5]}")
        missing, _ = self.model.load_state_dict(state, strict=False)
        # The parent's chain, recorded now: by promotion time the named file may have been replaced.
        self.parent_lineage = json.dumps(weights_lineage(checkpoint, opened.name, opened.path))
        if self.env.main:
            print(f"initialised from {weights} ({checkpoint.kind}, {len(state)} tensors"
                  f"{', booster heads from scratch' if missing else ''})", flush=True)

    def _class_weights(self) -> torch.Tensor | None:
        loss = self.config.loss
        if loss.class_weighting == "none":
            return None
        counts = label_histogram(self.train_set)
        return torch.from_numpy(median_frequency_weights(counts, loss.class_weight_power))

    # ---- logging

    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("iteration", "time"):
                    self.writer.add_scalar(key, value, record["iteration"])

    def validate(self) -> dict[str, Any] | None:
        if self.val_set is None:
            return None
        data = self.config.data
        return evaluate_model(self.model, self.val_set, data.eval_size, dataset_normalization(self.config),
                              limit=data.val_limit, device=self.env.device)

    # ---- the loop

    def train(self) -> dict[str, Any]:
        run = self.config.run
        self.writer = None
        if self.env.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.writer = None
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=run.iterations, initial=self.iteration, desc="train", dynamic_ncols=True,
                       mininterval=5.0, file=sys.stdout)
        self.model.train()
        batches = iter(self.loader)
        last_summary = None
        tick = time.time()
        while self.iteration < run.iterations:
            images, labels = next(batches)
            images = images.to(self.env.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            labels = labels.to(self.env.device, non_blocking=True)
            with torch.autocast(self.env.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                outputs = self.net(images)
            loss, parts = self.criterion(outputs, labels)
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"loss is {parts['loss']} at iteration {self.iteration}; lower optim.lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.iteration += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4f}")
            if self.iteration % run.log_every == 0 or self.iteration == run.iterations:
                now = time.time()
                self._log({"iteration": self.iteration, "lr": self.optimizer.param_groups[0]["lr"],
                           "sec_per_iter": (now - tick) / run.log_every, "time": now, **parts})
                tick = now
            done = self.iteration == run.iterations
            if self.iteration % run.eval_every == 0 or done:
                if self.env.main:
                    summary = self.validate()
                    if summary is not None:
                        last_summary = summary
                        record = {"iteration": self.iteration, "val_split": self.config.data.val_split,
                                  "val_miou": summary["miou"],
                                  "val_pixel_accuracy": summary["pixel_accuracy"],
                                  "val_frames": min(self.config.data.val_limit or len(self.val_set), len(self.val_set))}
                        self._log({**record, "per_class_iou": summary["per_class_iou"]})
                        self.history.append({"iteration": self.iteration, "val_miou": summary["miou"]})
                        message = (f"iteration {self.iteration}: {self.config.data.val_split} mIoU "
                                   f"{100 * summary['miou']:.2f}% (" + ", ".join(
                                       f"{k} {100 * v:.0f}" for k, v in summary["per_class_iou"].items()
                                       if v is not None) + ")")
                        print(message, flush=True) if bar is None else bar.write(message)
                        if summary["miou"] > self.best_miou:
                            self.best_miou = summary["miou"]
                            split = self.config.data.val_split
                            self.save("best.pt", {"val_miou": summary["miou"],
                                                  "val_pixel_accuracy": summary["pixel_accuracy"],
                                                  f"{split}_miou": summary["miou"],
                                                  "iteration": float(self.iteration)})
                self.env.barrier()
            if self.env.main and (self.iteration % run.checkpoint_every == 0 or done):
                self.save("latest.pt", {"best_val_miou": self.best_miou, "iteration": float(self.iteration)})
        if bar is not None:
            bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.env.main and last_summary is not None:
            print(format_table(last_summary), flush=True)
        return {"iteration": self.iteration, "best_miou": self.best_miou, "last": last_summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Train BiSeNetV2 (paper recipe) or BiSeNetV1.")
    parser.add_argument("--config", required=True, help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    parser.add_argument("--model", choices=("bisenetv2", "bisenetv1"), default=None,
                        help="network: shortcut for --set model.architecture=... (default: the config's, else bisenetv2)")
    parser.add_argument("--data-root", default=None, help="shortcut for --set data.root=...")
    parser.add_argument("--out-dir", default=None, help="shortcut for --set run.out_dir=...")
    parser.add_argument("--iterations", type=int, default=None, help="shortcut for --set run.iterations=...")
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
    command = " ".join(["python training/train.py", *(argv if argv is not None else sys.argv[1:])])
    trainer = Trainer(config, resume=args.resume, command=command, progress=not args.no_progress)
    result = trainer.train()
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    sys.exit(run_script("training/train.py", main,
                        stopped="the last checkpoint (latest.pt) is kept: continue with the same command plus --resume"))
