"""Named weights and the one way to open weights: a known name or a path -> the checkpoint, read once.

    weights = open_weights("mmseg-cityscapes")   # or a path, or None for DEFAULT_WEIGHTS
    model, info = weights.build_model(), weights.info

Like torchvision's WeightsEnum, one table holds all that is known of each named file (``KNOWN_WEIGHTS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .architectures import SegmentationModel
from .checkpoint import (FORMAT_NAME, IMAGENET_NORMALIZATION, Checkpoint, CheckpointError, CheckpointInfo,
                         read_checkpoint_file)
from .classes import CAMVID, CITYSCAPES
from .importers import checkpoint_from_any

# What the node, the CLI, the Segmenter and the benchmarks open when no weights are given.
DEFAULT_WEIGHTS = "camvid"
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class KnownWeights:
    """One named weights file: where it comes from and what it holds."""

    name: str
    description: str
    family: str  # "bisenetv2_ros" (our format) or an importer family
    file_name: str
    info: CheckpointInfo
    url: str | None = None  # None: shipped inside the package
    sha256_prefix: str | None = None  # what the publisher states of the file's SHA-256

    @property
    def embedded(self) -> bool:
        return self.url is None


_MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5"


def _mmseg(name: str, run: str, stamp: str, sha: str, miou: float, miou_ms_flip: float, note: str,
           architecture: str = "bisenetv2") -> KnownWeights:
    """An mmsegmentation model-zoo file; names, numbers and hashes as its configs/<arch>/README.md lists them."""
    file_name = f"{run}_{stamp}-{sha}.pth"
    network = {"bisenetv2": "BiSeNetV2", "bisenetv1": "BiSeNetV1 (ResNet-18)"}[architecture]
    return KnownWeights(
        name=name,
        description=f"mmsegmentation {network} on Cityscapes, {note}",
        family="mmsegmentation" if architecture == "bisenetv2" else f"mmsegmentation-{architecture}",
        file_name=file_name,
        url=f"{_MMSEG_BASE}/{architecture}/{run}/{file_name}",
        sha256_prefix=sha,
        info=CheckpointInfo(
            CITYSCAPES, IMAGENET_NORMALIZATION, (1024, 2048), "cityscapes",
            metrics={"val_miou": miou, "val_miou_ms_flip": miou_ms_flip},
            provenance={"source": f"mmsegmentation configs/{architecture} README", "license": "Apache-2.0"},
        ),
    )


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights(
            name=DEFAULT_WEIGHTS,
            description="bisenetv2_ros's own model, trained from scratch on CamVid (11 classes); "
                        "ships with the package",
            family=FORMAT_NAME,
            file_name="bisenetv2_camvid.pt",
            info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (240, 320), "camvid"),
        ),
        _mmseg("mmseg-cityscapes", "bisenetv2_fcn_4x4_1024x1024_160k_cityscapes", "20210902_015551",
               "bcf10f09", 73.21, 75.74, "4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-ohem", "bisenetv2_fcn_ohem_4x4_1024x1024_160k_cityscapes", "20210902_112947",
               "5f8103b4", 73.57, 75.80, "with OHEM, 4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-4x8", "bisenetv2_fcn_4x8_1024x1024_160k_cityscapes", "20210903_000032",
               "e1a2eed6", 75.76, 77.79, "4 GPUs x 8 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-fp16", "bisenetv2_fcn_fp16_4x4_1024x1024_160k_cityscapes", "20210902_045942",
               "b979777b", 73.07, 75.13, "trained in mixed precision, 4 GPUs x 4 images, 160k iterations"),
        # Read from mmsegmentation's configs/bisenetv1/README.md (ImageNet-initialised R-18-D32 row); the
        # download itself is not exercised here (no network): `bisenetv2 download` checks the hash.
        _mmseg("mmseg-v1-cityscapes", "bisenetv1_r18-d32_in1k-pre_4x4_1024x1024_160k_cityscapes", "20210905_220251",
               "8ba80eff", 74.37, 76.91, "ImageNet-initialised backbone, 4 GPUs x 4 images, 160k iterations",
               architecture="bisenetv1"),
    )
}


def cache_dir() -> Path:
    """Where downloaded weights live: $BISENETV2_CACHE, else $XDG_CACHE_HOME/bisenetv2_ros, else ~/.cache."""
    if os.environ.get("BISENETV2_CACHE"):
        return Path(os.environ["BISENETV2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bisenetv2_ros"


def find_known(weights: str | os.PathLike | None) -> KnownWeights | None:
    """The table's entry for a weights name (None: the default), or None for anything else (a path)."""
    return KNOWN_WEIGHTS.get(DEFAULT_WEIGHTS if weights is None else str(weights))


def resolve_weights(weights: str | os.PathLike | None = None) -> Path:
    """A path, or a known name (embedded in the package or downloaded into the cache) -> a file.

    None (or an empty string, as an unset ROS parameter) means ``DEFAULT_WEIGHTS``.
    """
    text = str(weights) if weights else DEFAULT_WEIGHTS
    entry = find_known(text)
    if entry is None:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise CheckpointError(
            f"weights {text!r} is neither an existing file nor a known name ({', '.join(KNOWN_WEIGHTS)})"
        )
    path = PACKAGE_WEIGHTS_DIR / entry.file_name if entry.embedded else cache_dir() / entry.file_name
    if not path.is_file():
        if entry.embedded:
            raise CheckpointError(f"the package's embedded weights {path} are missing; reinstall bisenetv2_ros")
        raise CheckpointError(f"weights {text!r} are not downloaded yet: run `bisenetv2 download {text}`")
    return path


@dataclass(frozen=True)
class OpenedWeights:
    """Weights opened by ``open_weights``: the checkpoint (read once), where it came from, and its entry."""

    name: str  # the known name or the path as given
    path: Path
    checkpoint: Checkpoint
    known: KnownWeights | None = None

    @property
    def info(self) -> CheckpointInfo:
        return self.checkpoint.info

    @property
    def architecture(self) -> str:
        return self.checkpoint.architecture

    def build_model(self, for_inference: bool = True) -> SegmentationModel:
        """A fresh network with these weights (eval mode, no booster heads, unless ``for_inference`` is False)."""
        return self.checkpoint.build_model(for_inference=for_inference)


def open_weights(weights: str | os.PathLike | OpenedWeights | None = None) -> OpenedWeights:
    """A known name, a checkpoint path or None (``DEFAULT_WEIGHTS``) -> the opened weights.

    The file is read once. Our checkpoints are taken as they are; a named public file is converted
    with its entry's metadata, and a public checkpoint given by path is detected and converted
    (as ``bisenetv2 import`` would). Anything else is one CheckpointError saying what the file is.
    Already opened weights are returned as they are.
    """
    if isinstance(weights, OpenedWeights):
        return weights
    name = str(weights) if weights else DEFAULT_WEIGHTS
    path = resolve_weights(name)
    entry = find_known(name)
    data = read_checkpoint_file(path)
    if entry is not None and entry.family != FORMAT_NAME:
        checkpoint = checkpoint_from_any(data, path, family=entry.family, info=entry.info)
    else:
        checkpoint = checkpoint_from_any(data, path)
    return OpenedWeights(name, path, checkpoint, entry)


def load_model(weights: str | os.PathLike | None = None,
               for_inference: bool = True) -> tuple[SegmentationModel, CheckpointInfo]:
    """A known name or a checkpoint path -> (model, info); see ``open_weights``."""
    opened = open_weights(weights)
    return opened.build_model(for_inference=for_inference), opened.info
