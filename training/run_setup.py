"""What a training run is built from its typed config (training/config.py): the process (torchrun's
distributed environment, threads, determinism, seeds, mixed precision), the data (datasets, transform,
loader over the resumable sampler), and the optimizer, poly schedule, class weights and loss of the
paper's recipe (Yu et al., IJCV 2021, Sec. 5). ``train.Trainer`` calls these in order.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from bisenetv2_ros.weights.checkpoint import Normalization
from training.augmentation import PhotometricJitter, TrainTransform
from training.config import DataSection, LossSection, RunSection, TrainConfig
from training.copy_paste import RareClassPaste
from training.datasets import (
    ResumableSampler,
    SegmentationDataset,
    build_dataset,
    label_histogram,
    median_frequency_weights,
    rare_class_ids,
    require_labelled_pixels,
)
from training.losses import BoosterLoss, OhemCrossEntropy

# --------------------------------------------------------------------------------------------
# The process


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # Augmentation draws from per-sample seeds; this only makes stray global RNG use reproducible.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


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


def configure_process(run: RunSection, env: Distributed) -> None:
    """Threads, determinism and this rank's seed, before anything draws a random number."""
    if run.threads and env.device.type == "cpu":
        torch.set_num_threads(run.threads)
    if run.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(run.seed + env.rank)


def local_batch_size(batch_size: int, world_size: int) -> int:
    """run.batch_size is the global batch; each of the world_size processes takes an equal share."""
    if batch_size % world_size:
        raise ValueError(f"run.batch_size {batch_size} is not divisible by {world_size} processes")
    return batch_size // world_size


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


AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def wrap_network(model: nn.Module, run: RunSection, env: Distributed) -> nn.Module:
    """The module the loop calls: ``model`` compiled (run.compile) and, under torchrun, in DDP."""
    net = model
    if run.compile:
        net = torch.compile(model)
    if env.world_size > 1:
        if run.sync_bn and env.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif run.sync_bn and env.main:
            print("run.sync_bn ignored: SyncBatchNorm needs CUDA; batch norm stays per process", flush=True)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    return net


# --------------------------------------------------------------------------------------------
# The data


def dataset_normalization(config: TrainConfig) -> Normalization:
    return Normalization(tuple(config.data.mean), tuple(config.data.std), "rgb")


def build_datasets(data: DataSection) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """(train set with its augmentation, val set or None); refuses a train set without a labelled pixel."""
    photometric = PhotometricJitter(**data.photometric) if data.photometric is not None else None
    transform = TrainTransform(data.crop_size, data.scales, data.mean, data.std, data.base_size,
                               data.train_size, data.hflip, data.scale_range, photometric)
    train_set = build_dataset(data.dataset, data.root, data.train_split, data.classes_file, transform)
    require_labelled_pixels(train_set)
    if data.rare_classes:
        transform.rare_class_ids = np.asarray(rare_class_ids(train_set.classes.names, data.rare_classes))
        transform.rare_crop_fraction = data.rare_crop_fraction
    if data.copy_paste_probability > 0:
        paste_names = data.copy_paste_classes or data.rare_classes
        option = "data.copy_paste_classes" if data.copy_paste_classes else "data.rare_classes"
        transform.paste = RareClassPaste(train_set.load, len(train_set),
                                         rare_class_ids(train_set.classes.names, paste_names, option),
                                         data.copy_paste_probability)
    val_set = build_dataset(data.dataset, data.root, data.val_split, data.classes_file) if data.val_split else None
    return train_set, val_set


def build_loader(train_set: SegmentationDataset, local_batch: int, run: RunSection, workers: int,
                 env: Distributed, start_iteration: int) -> DataLoader:
    """This rank's endless batches from ``start_iteration`` on (ResumableSampler: exact resume)."""
    sampler = ResumableSampler(len(train_set), local_batch, run.seed, start_iteration, env.rank, env.world_size)
    if workers > 0:
        # OpenCV's thread pool does not survive fork: a forked worker that touches it (resize, or
        # setNumThreads) can wait forever on the parent's pool threads. One OpenCV thread in this
        # process before the workers fork means no pool is copied; the workers do the resizing.
        cv2.setNumThreads(1)
    return DataLoader(train_set, batch_size=local_batch, sampler=sampler, num_workers=workers,
                      pin_memory=env.device.type == "cuda", persistent_workers=workers > 0,
                      worker_init_fn=_worker_init, drop_last=True,
                      generator=torch.Generator().manual_seed(run.seed),  # keeps the global RNG untouched
                      prefetch_factor=2 if workers > 0 else None)


# --------------------------------------------------------------------------------------------
# Optimizer, schedule and loss


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


def build_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with momentum and the poly schedule with linear warm-up (optim.* and run.iterations)."""
    optim = config.optim
    optimizer = torch.optim.SGD(param_groups(model, optim.weight_decay), lr=optim.lr, momentum=optim.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lambda(config.run.iterations, optim.poly_power, optim.warmup_iters, optim.warmup_ratio))
    return optimizer, scheduler


def class_weights(loss: LossSection, train_set: SegmentationDataset) -> torch.Tensor | None:
    """loss.class_weighting: median-frequency weights over the train labels, or None."""
    if loss.class_weighting == "none":
        return None
    counts = label_histogram(train_set)
    return torch.from_numpy(median_frequency_weights(counts, loss.class_weight_power))


def build_criterion(loss: LossSection, weights: torch.Tensor | None) -> BoosterLoss:
    """OHEM cross-entropy (or plain with loss.ohem=false) on the output plus the booster heads."""
    return BoosterLoss(OhemCrossEntropy(loss.ohem_threshold, loss.ohem_min_kept_fraction, enabled=loss.ohem,
                                        class_weights=weights), loss.aux_weight)
