"""Shared fixtures: tiny synthetic checkpoints (no download, no data), the CamVid folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from bisenetv2_ros.classes import CAMVID, ClassSet, default_palette
from bisenetv2_ros.models.bisenetv1 import BiSeNetV1, BiSeNetV1Config
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint

# One intra-op thread: the tests run tiny models, for which a second thread only adds
# synchronisation cost (measured 3-5x slower on a loaded 2-core machine).
torch.set_num_threads(1)

# `auto` backend/precision by the instruction-set rule, not by timing this machine: a test's path must
# not depend on the host's speed or load. test_measured_auto.py switches measuring on with simulated
# timings (and once for real, asserting no figures).
os.environ["BISENETV2_AUTO"] = "rule"

# ROS 2 traffic of the tests (in-process nodes and node processes, which inherit this) stays on this
# machine and in a domain of its own, so parallel runs and other ROS graphs never see each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))

# ../shared/data/camvid beside the repository; $BISENETV2_TEST_CAMVID points elsewhere (e.g. from a
# git worktree that has no shared/ beside it).
CAMVID_DIR = Path(os.environ.get("BISENETV2_TEST_CAMVID")
                  or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid")

TINY_CONFIG = dict(width_multiplier=0.25, head_channels=16, aux_head_channels=8)


def make_tiny_checkpoint(path: Path, num_classes: int = 11, seed: int = 0,
                         train_resolution: tuple[int, int] = (64, 96), kind: str = "deploy") -> Path:
    """A small random BiSeNetV2 (about 60k parameters) saved in our format."""
    torch.manual_seed(seed)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=num_classes, aux_heads=kind == "train", **TINY_CONFIG))
    # Random BN statistics make the random network's output vary across classes, like a real one.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    classes = CAMVID if num_classes == len(CAMVID) else ClassSet(
        tuple(f"class_{i}" for i in range(num_classes)), default_palette(num_classes))
    info = CheckpointInfo(classes, train_resolution=train_resolution, dataset="synthetic",
                          provenance={"source": "test fixture"})
    return save_checkpoint(Checkpoint.from_model(model.eval(), info, kind=kind), path)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Engines and int8 graphs built by tests go to a temporary cache, never the user's."""
    folder = tmp_path_factory.mktemp("bisenetv2_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BISENETV2_CACHE", str(folder))
        yield folder


def make_tiny_v1_checkpoint(path: Path, seed: int = 0, train_resolution: tuple[int, int] = (64, 96),
                            **config) -> Path:
    """A random BiSeNetV1 (the ResNet-18 keeps its 11 M parameters; the rest is narrow), CamVid classes."""
    torch.manual_seed(seed)
    model = BiSeNetV1(BiSeNetV1Config(num_classes=len(CAMVID), context_channels=32, fused_channels=64,
                                      head_channels=32, aux_heads=False, **config))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    info = CheckpointInfo(CAMVID, train_resolution=train_resolution, dataset="synthetic",
                          provenance={"source": "test fixture"})
    return save_checkpoint(Checkpoint.from_model(model.eval(), info), path, half=True)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Path of a tiny 11-class deploy checkpoint (CamVid class names)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_v1_weights(tmp_path_factory) -> Path:
    """Path of a small 11-class BiSeNetV1 deploy checkpoint (CamVid class names)."""
    return make_tiny_v1_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v1.pt")


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    if not (CAMVID_DIR / "train").is_dir():
        pytest.skip(f"real CamVid frames not found at {CAMVID_DIR} (../shared/data/camvid beside the repository)")
    return CAMVID_DIR


# Instruction-set flags of CPU families the suite must pass on, for tests that simulate a CPU
# (``simulated_cpu``) instead of depending on the host's.
AVX2_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}  # e.g. AMD EPYC Zen 4
AMX_FLAGS = AVX512_BF16_FLAGS | {"amx_tile", "amx_bf16", "amx_int8"}  # e.g. Intel Sapphire Rapids


@pytest.fixture
def simulated_cpu(monkeypatch):
    """simulated_cpu(flags, model="Simulated CPU"): every ``backends.cpu.cpu_info()`` call of the package
    (the auto rules, the bf16 check, the quantiser settings, the benchmark) sees this CPU instead of the host's."""
    from bisenetv2_ros.inference import cpu

    def simulate(flags, model: str = "Simulated CPU"):
        info = cpu.CpuInfo(model, frozenset(flags), "AVX2")
        monkeypatch.setattr(cpu, "cpu_info", lambda: info)
        return info

    return simulate


# The whole suite as another CPU family would run it: BISENETV2_TEST_CPU=avx2 | avx512_bf16 | amx makes
# every in-process ``cpu_info()`` report that family's flags (with ATEN_CPU_CAPABILITY=avx2, torch's
# kernels follow), so a contributor on one machine checks that nothing depends on the host's flags.
SIMULATED_FAMILIES = {"avx2": AVX2_FLAGS, "avx512_bf16": AVX512_BF16_FLAGS, "amx": AMX_FLAGS}


@pytest.fixture(scope="session", autouse=True)
def _suite_cpu_family():
    family = os.environ.get("BISENETV2_TEST_CPU")
    if not family:
        yield None
        return
    if family not in SIMULATED_FAMILIES:
        raise pytest.UsageError(f"BISENETV2_TEST_CPU must be one of {sorted(SIMULATED_FAMILIES)}, got {family!r}")
    from bisenetv2_ros.inference import cpu

    info = cpu.CpuInfo(f"Simulated {family} CPU", frozenset(SIMULATED_FAMILIES[family]), "AVX2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "cpu_info", lambda: info)
        yield info
