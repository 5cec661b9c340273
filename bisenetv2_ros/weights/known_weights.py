"""Named weights and the one way to open weights: a known name or a path -> the checkpoint, read once.

    weights = open_weights("mmseg-cityscapes")   # or a path, or None for DEFAULT_WEIGHTS
    model, info = weights.build_model(), weights.info

Like torchvision's WeightsEnum, one table holds all that is known of each named file (``KNOWN_WEIGHTS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..class_tables import ADE20K, COCO_STUFF
from ..classes import CAMVID, CITYSCAPES
from ..conventions import DEFAULT_WEIGHTS
from ..fileio import special_file_problem
from ..models.architectures import SegmentationModel
from .checkpoint import (
    CITYSCAPES_NORMALIZATION,
    FORMAT_NAME,
    IMAGENET_NORMALIZATION,
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    Normalization,
    read_checkpoint_file,
)
from .importers import checkpoint_from_any

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent  # bisenetv2_camvid.pt lives beside this module


@dataclass(frozen=True)
class KnownWeights:
    """One named weights file: where it comes from and what it holds."""

    name: str
    description: str
    family: str  # "bisenetv2_ros" (our format) or an importer family
    file_name: str
    info: CheckpointInfo
    url: str | None = None  # None: shipped inside the package
    sha256_prefix: str | None = None  # what the publisher states of the file's SHA-256 (None: nothing)
    protocol: str | None = None  # the publisher's evaluation (training/evaluate.py --protocol)

    @property
    def embedded(self) -> bool:
        return self.url is None


_MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5"
_COINCHEUNG_BASE = "https://github.com/CoinCheung/BiSeNet/releases/download/0.0.0"
# mean/std (RGB, of x / 255) CoinCheung's lib/data/{coco,ade20k}.py normalise with.
COCO_NORMALIZATION = Normalization((0.46962251, 0.4464104, 0.40718787), (0.27469736, 0.27012361, 0.28515933))
ADE20K_NORMALIZATION = Normalization((0.49343230, 0.46819794, 0.43106043), (0.25680755, 0.25506608, 0.27422913))

# dataset -> (classes, the size (H, W) its test pipeline gives the network for a 2048x1024 Cityscapes
# frame or a 640x480 (4:3) COCO / ADE20K photo)
_MMSEG_DATASETS = {"cityscapes": (CITYSCAPES, (1024, 2048)), "coco-stuff164k": (COCO_STUFF, (512, 683))}
_COINCHEUNG_DATASETS = {"city": ("cityscapes", CITYSCAPES, CITYSCAPES_NORMALIZATION, "Cityscapes"),
                        "coco": ("coco-stuff164k", COCO_STUFF, COCO_NORMALIZATION, "COCO-Stuff-164k"),
                        "ade20k": ("ade20k", ADE20K, ADE20K_NORMALIZATION, "ADE20K")}


def _mmseg(name: str, run: str, stamp: str, sha: str, miou: float, miou_ms_flip: float, note: str,
           architecture: str = "bisenetv2", dataset: str = "cityscapes") -> KnownWeights:
    """An mmsegmentation model-zoo file; names, numbers and hashes as its configs/<arch>/README.md and
    metafile list them. The file name ends in the first 8 hex digits of the file's SHA-256."""
    file_name = f"{run}_{stamp}-{sha}.pth"
    network = {"bisenetv2": "BiSeNetV2", "bisenetv1": "BiSeNetV1 (ResNet-18)"}[architecture]
    classes, size = _MMSEG_DATASETS[dataset]
    return KnownWeights(
        name=name,
        description=f"mmsegmentation {network} on {dataset}, {note}",
        family="mmsegmentation" if architecture == "bisenetv2" else f"mmsegmentation-{architecture}",
        file_name=file_name,
        url=f"{_MMSEG_BASE}/{architecture}/{run}/{file_name}",
        sha256_prefix=sha,
        info=CheckpointInfo(
            classes, IMAGENET_NORMALIZATION, size, dataset,
            metrics={"val_miou": miou, "val_miou_ms_flip": miou_ms_flip},
            provenance={"source": f"mmsegmentation configs/{architecture} README", "license": "Apache-2.0"},
        ),
        protocol="mmseg",
    )


def _coincheung(network: str, data: str, file_stem: str, ss: float, ssc: float, msf: float, mscf: float,
                size: tuple[int, int], note: str = "") -> KnownWeights:
    """A CoinCheung/BiSeNet release file (its README's tables: ss, ssc, msf, mscf mIoU). It publishes
    no checksum: a download is checked by importing it (every tensor's name and shape)."""
    dataset, classes, normalization, title = _COINCHEUNG_DATASETS[data]
    return KnownWeights(
        name=f"coincheung-{network}-{dataset.replace('164k', '')}{note and '-' + note}",
        description=f"CoinCheung/BiSeNet BiSeNet{network.upper()} on {title}" + (f" ({note} file)" if note else ""),
        family="coincheung" if network == "v2" else "coincheung-bisenetv1",
        file_name=f"{file_stem}.pth",
        url=f"{_COINCHEUNG_BASE}/{file_stem}.pth",
        info=CheckpointInfo(
            classes, normalization, size, dataset,
            metrics={"val_miou": ss, "val_miou_ss_crop": ssc, "val_miou_ms_flip": msf, "val_miou_ms_crop_flip": mscf},
            provenance={"source": "CoinCheung/BiSeNet README", "license": "MIT"},
        ),
        protocol="coincheung",
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
            info=CheckpointInfo(CAMVID, IMAGENET_NORMALIZATION, (360, 480), "camvid"),
        ),
        _mmseg("mmseg-cityscapes", "bisenetv2_fcn_4x4_1024x1024_160k_cityscapes", "20210902_015551",
               "bcf10f09", 73.21, 75.74, "4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-ohem", "bisenetv2_fcn_ohem_4x4_1024x1024_160k_cityscapes", "20210902_112947",
               "5f8103b4", 73.57, 75.80, "with OHEM, 4 GPUs x 4 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-4x8", "bisenetv2_fcn_4x8_1024x1024_160k_cityscapes", "20210903_000032",
               "e1a2eed6", 75.76, 77.79, "4 GPUs x 8 images, 160k iterations"),
        _mmseg("mmseg-cityscapes-fp16", "bisenetv2_fcn_fp16_4x4_1024x1024_160k_cityscapes", "20210902_045942",
               "b979777b", 73.07, 75.13, "trained in mixed precision, 4 GPUs x 4 images, 160k iterations"),
        # BiSeNetV1 R-18-D32 rows of mmsegmentation's configs/bisenetv1 README / metafile. Its R-50 and
        # R-101 rows have bottleneck ResNets, which models/bisenetv1.py does not build: not listed.
        _mmseg("mmseg-v1-cityscapes", "bisenetv1_r18-d32_in1k-pre_4x4_1024x1024_160k_cityscapes", "20210905_220251",
               "8ba80eff", 74.37, 76.91, "ImageNet-initialised backbone, 4 GPUs x 4 images, 160k iterations",
               architecture="bisenetv1"),
        _mmseg("mmseg-v1-cityscapes-scratch", "bisenetv1_r18-d32_4x4_1024x1024_160k_cityscapes", "20210922_172239",
               "c55e78e2", 74.44, 77.05, "trained from scratch, 4 GPUs x 4 images, 160k iterations",
               architecture="bisenetv1"),
        _mmseg("mmseg-v1-cityscapes-4x8", "bisenetv1_r18-d32_in1k-pre_4x8_1024x1024_160k_cityscapes",
               "20210905_220322", "bb8db75f", 75.16, 77.24,
               "ImageNet-initialised backbone, 4 GPUs x 8 images, 160k iterations", architecture="bisenetv1"),
        _mmseg("mmseg-v1-coco-stuff", "bisenetv1_r18-d32_in1k-pre_lr5e-3_4x4_512x512_160k_coco-stuff164k",
               "20211023_013100", "f700dbf7", 28.55, 29.26,
               "ImageNet-initialised backbone, 512x512 crops, 160k iterations", architecture="bisenetv1",
               dataset="coco-stuff164k"),
        _mmseg("mmseg-v1-coco-stuff-scratch", "bisenetv1_r18-d32_lr5e-3_4x4_512x512_160k_coco-stuff164k",
               "20211022_054328", "046aa2f2", 25.45, 26.15, "trained from scratch, 512x512 crops, 160k iterations",
               architecture="bisenetv1", dataset="coco-stuff164k"),
        # CoinCheung/BiSeNet's README tables (release 0.0.0). The network sees a Cityscapes frame at full
        # size, a COCO photo at its own size (rounded up to 32), an ADE20K photo with the short side at
        # 512 (V1) or 640 (V2), then rounded up to 32 (its configs' eval_start_shortside).
        _coincheung("v1", "city", "model_final_v1_city_new", 75.44, 76.94, 77.45, 78.86, (1024, 2048)),
        _coincheung("v2", "city", "model_final_v2_city", 74.95, 75.58, 76.53, 77.08, (1024, 2048)),
        _coincheung("v1", "coco", "model_final_v1_coco_new", 31.49, 31.42, 32.46, 32.55, (480, 640)),
        _coincheung("v2", "coco", "model_final_v2_coco", 30.49, 30.55, 31.81, 31.73, (480, 640)),
        _coincheung("v1", "ade20k", "model_final_v1_ade20k", 36.15, 36.04, 37.27, 36.58, (512, 704)),
        _coincheung("v2", "ade20k", "model_final_v2_ade20k", 32.53, 32.43, 33.23, 31.72, (640, 864)),
        # In its README from 2021-07-07 to 2021-07-13 only (the 2021-07-07 layout: paper FFM, bilinear head),
        # then replaced by the "_new" files above; kept for users who still have them.
        _coincheung("v1", "city", "model_final_v1_city", 75.10, 76.90, 77.22, 78.73, (1024, 2048), note="2021-07"),
        _coincheung("v1", "coco", "model_final_v1_coco", 31.89, 31.62, 32.81, 32.72, (480, 640), note="2021-07"),
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
        special = special_file_problem(path, "weights")
        if special:
            raise CheckpointError(special)
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
        checkpoint = checkpoint_of_entry(data, path, entry)
    else:
        checkpoint = checkpoint_from_any(data, path)
    return OpenedWeights(name, path, checkpoint, entry)


def checkpoint_of_entry(data, path: str | os.PathLike, entry: KnownWeights) -> Checkpoint:
    """A named public file, converted with its entry's metadata; with no checksum published for most
    files, this is what checks a file is the one named: its layout (every tensor's name and shape, by
    the importer) and its class count."""
    checkpoint = checkpoint_from_any(data, path, family=entry.family, info=entry.info)
    expected = len(entry.info.classes)
    if checkpoint.config.num_classes != expected:
        raise CheckpointError(
            f"{path} has a {checkpoint.config.num_classes}-class head, but {entry.name} is a {expected}-class "
            f"{entry.info.dataset} checkpoint: this is not {entry.file_name} as published; delete it and run "
            f"`bisenetv2 download {entry.name}`"
        )
    return checkpoint


def load_model(weights: str | os.PathLike | None = None,
               for_inference: bool = True) -> tuple[SegmentationModel, CheckpointInfo]:
    """A known name or a checkpoint path -> (model, info); see ``open_weights``."""
    opened = open_weights(weights)
    return opened.build_model(for_inference=for_inference), opened.info
