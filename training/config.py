"""Typed training configuration: YAML file + ``--set section.key=value`` overrides.

Defaults follow the paper (Yu et al., IJCV 2021, Sec. 5): SGD momentum 0.9, lr 5e-2, poly power
0.9, weight decay 5e-4 on convolution weights only, batch 16, OHEM cross-entropy (Table 4, last row),
booster heads, random flip / scale {0.75..2.0} / crop, Kaiming init from scratch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from bisenetv2_ros.conventions import DEFAULT_MAX_INPUT_PIXELS, IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_SIDE
from bisenetv2_ros.models.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, ModelConfig


def _model_field_owners() -> dict[str, type]:
    """Every field of every architecture's config, but num_classes (the dataset's), -> the first
    config class that has it: the model section's keys, listed only by the network configs."""
    owners: dict[str, type] = {}
    for config_type, _ in ARCHITECTURES.values():
        for f in dataclasses.fields(config_type):
            if f.name != "num_classes":
                owners.setdefault(f.name, config_type)
    return owners


MODEL_FIELD_OWNERS = _model_field_owners()


def _model_config(self, num_classes: int) -> ModelConfig:
    """The network config: the architecture's defaults with every key this section sets."""
    config_type = ARCHITECTURES[self.architecture][0]
    own = {f.name for f in dataclasses.fields(config_type)}
    given = {name: value for name, value in self.given().items() if name in own}
    return config_type(num_classes=num_classes, **given)


def _given(self) -> dict[str, Any]:
    """The network keys this section sets (null = the architecture's default)."""
    return {name: getattr(self, name) for name in MODEL_FIELD_OWNERS if getattr(self, name) is not None}


# The `model:` section: `architecture` (bisenetv2 | bisenetv1; train.py --model) and any field of that
# architecture's config (models.bisenetv2.BiSeNetV2Config, models.bisenetv1.BiSeNetV1Config), generated from them so the
# network's options are listed once. A key left out (null) keeps the config's default.
ModelSection = dataclasses.make_dataclass(
    "ModelSection",
    [("architecture", str, field(default=DEFAULT_ARCHITECTURE)),
     *((name, Any, field(default=None)) for name in MODEL_FIELD_OWNERS)],
    namespace={"model_config": _model_config, "given": _given},
)


@dataclass
class DataSection:
    dataset: str = "cityscapes"  # cityscapes | camvid | folder | coco-stuff | ade20k
    root: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation (best.pt is then never written)
    classes_file: str | None = None  # folder datasets: one class per line (ClassSet.from_file)
    # Every training image is first resized to base_size (h, w) (null: keep its size), then scaled by
    # a random factor from `scales`, then randomly cropped to crop_size (padded with ignore if small).
    base_size: list[int] | None = None
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    crop_size: list[int] = field(default_factory=lambda: [1024, 2048])
    # The crop is resized to this (h, w) before the network (Cityscapes: 2048x1024 crop -> 1024x512).
    train_size: list[int] | None = None
    hflip: bool = True
    # Draw the scale uniformly from [lo, hi] instead of from `scales` (null: use `scales`).
    scale_range: list[float] | None = None
    # Photometric jitter (PhotometricJitter): null = off, else ranges for brightness, contrast, saturation,
    # gamma ([lo, hi] factors), hue (max shift, fraction of the circle) and channel_gain (max per-channel
    # gain change, a colour cast). Labels are never touched.
    photometric: dict[str, Any] | None = None
    # Resolution the network runs at for evaluation and deployment (= CheckpointInfo.train_resolution).
    eval_size: list[int] = field(default_factory=lambda: [1024, 2048])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    workers: int = 4
    val_limit: int | None = None  # validate on the first N frames during training (null: all)
    # Class-aware crops (TrainTransform.crop_origin): class names, and the fraction of crops centred on
    # one of their pixels (0: uniform crops only).
    rare_classes: list[str] | None = None
    rare_crop_fraction: float = 0.0
    # Copy-paste (training/copy_paste.py): the chance a training sample receives the pixels of these
    # classes from another random training frame (0: off); classes null: data.rare_classes.
    copy_paste_probability: float = 0.0
    copy_paste_classes: list[str] | None = None


@dataclass
class OptimSection:
    lr: float = 5e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4  # convolution weights only
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # lr at iteration 0 = lr * warmup_ratio


@dataclass
class LossSection:
    ohem: bool = True
    ohem_threshold: float = 0.7  # keep pixels whose true-class probability is below this
    ohem_min_kept_fraction: float = 1 / 16  # ... and at least this fraction of the valid pixels
    aux_weight: float = 1.0  # weight of each booster head (alpha in Sec. 4.4)
    # none | median_frequency: per-class weights (median f / f_c) ** class_weight_power from the
    # training split's label histogram, so thin classes (pole, sign, pedestrian, bicyclist) are learned.
    class_weighting: str = "none"
    class_weight_power: float = 0.5


@dataclass
class RunSection:
    iterations: int = 150_000
    batch_size: int = 16  # total over all processes
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # none | bf16 | fp16 | auto (bf16 on CUDA with bf16 support and on CPUs with native bf16 instructions
    # (AVX512-BF16 / AMX); none elsewhere, where emulated bf16 is slower than fp32)
    amp: str = "none"
    channels_last: bool = False  # NHWC memory format for model and input (faster convolutions on CPU)
    compile: bool = False  # torch.compile the model (only if it measures faster on the machine)
    sync_bn: bool = False
    threads: int | None = None  # torch.set_num_threads on CPU
    # Warm restart: start from these weights (a known name such as `camvid`, or a checkpoint file) with
    # a fresh schedule, so a campaign adds up across runs; booster heads absent from a deploy file start
    # from scratch. Null: Kaiming init from scratch. --resume (same run, same schedule) takes precedence.
    init_weights: str | None = None
    deterministic: bool = False
    out_dir: str = "runs/cityscapes"
    log_every: int = 20
    eval_every: int = 5000
    checkpoint_every: int = 1000


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(sections))
        if unknown:
            raise ValueError(f"unknown config sections {unknown}; known: {sorted(sections)}")
        built = {}
        for name, f in sections.items():
            section_cls = f.default_factory  # type: ignore[misc]
            given = values.get(name) or {}
            known = {g.name for g in dataclasses.fields(section_cls)}
            bad = sorted(set(given) - known)
            if bad:
                raise ValueError(f"unknown keys {bad} in config section '{name}'; known: {sorted(known)}")
            built[name] = section_cls(**given)
        config = cls(**built)
        config.validate()
        return config

    def validate(self) -> None:
        for section in (self.data, self.optim, self.loss, self.run):
            _check_types(section)
        _check_ranges(self)
        architecture = self.model.architecture
        if architecture not in ARCHITECTURES:
            raise ValueError(f"model.architecture must be {' or '.join(ARCHITECTURES)}, got {architecture!r}")
        own = {f.name for f in dataclasses.fields(ARCHITECTURES[architecture][0])}
        for name, value in self.model.given().items():
            owner = MODEL_FIELD_OWNERS[name]
            # another network's key is tolerated at that network's default (shared config files)
            if name not in own and value != owner.__dataclass_fields__[name].default:
                others = [a for a, (t, _) in ARCHITECTURES.items() if name in t.__dataclass_fields__]
                raise ValueError(f"model.{name} applies to {' and '.join(others)} only, not {architecture}")
        try:  # the network's own checks of the values (types, ranges), before any work
            self.model.model_config(num_classes=1)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model.{error}") from None  # each message starts with the field's name
        if self.data.dataset not in ("cityscapes", "camvid", "folder", "coco-stuff", "ade20k"):
            raise ValueError(f"data.dataset must be cityscapes, camvid, folder, coco-stuff or ade20k, "
                             f"got {self.data.dataset!r}")
        if self.run.amp not in ("none", "bf16", "fp16", "auto"):
            raise ValueError(f"run.amp must be none, bf16, fp16 or auto, got {self.run.amp!r}")
        if self.loss.class_weighting not in ("none", "median_frequency"):
            raise ValueError(f"loss.class_weighting must be none or median_frequency, got {self.loss.class_weighting!r}")
        if self.data.scale_range is not None and (len(self.data.scale_range) != 2 or not
                                                  0 < self.data.scale_range[0] <= self.data.scale_range[1] <= MAX_SCALE):
            raise ValueError(f"data.scale_range must be [lo, hi] with 0 < lo <= hi <= {MAX_SCALE:g}, "
                             f"got {self.data.scale_range}")
        if self.data.photometric is not None:
            known = {"brightness", "contrast", "saturation", "hue", "gamma", "channel_gain"}
            bad = sorted(set(self.data.photometric) - known)
            if bad:
                raise ValueError(f"unknown keys {bad} in data.photometric; known: {sorted(known)}")
        for name in ("crop_size", "eval_size", "base_size", "train_size"):
            value = getattr(self.data, name)
            problem = _size_problem(value)
            if problem:
                raise ValueError(f"data.{name} {problem}, got {value}")
        if not 0.0 <= self.data.rare_crop_fraction <= 1.0:
            raise ValueError(f"data.rare_crop_fraction must be in [0, 1], got {self.data.rare_crop_fraction}")
        if self.data.rare_crop_fraction > 0 and not self.data.rare_classes:
            raise ValueError("data.rare_crop_fraction > 0 needs data.rare_classes (class names)")
        if not 0.0 <= self.data.copy_paste_probability <= 1.0:
            raise ValueError(f"data.copy_paste_probability must be in [0, 1], got {self.data.copy_paste_probability}")
        if self.data.copy_paste_probability > 0 and not (self.data.copy_paste_classes or self.data.rare_classes):
            raise ValueError("data.copy_paste_probability > 0 needs data.copy_paste_classes or data.rare_classes "
                             "(class names)")


class NumberLoader(yaml.SafeLoader):
    """YAML as the docs write it: ``5e-3``, ``1e308``, ``nan`` and ``inf`` are numbers (YAML 1.1 reads
    exponents without a dot, and bare nan/inf, as strings, so `lr: 5e-3` was refused as "not a float")."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?(?:nan|inf)|[-+]?\.(?:inf|nan))$",
               re.IGNORECASE),
    list("-+0123456789.nNiI"))
NumberLoader.add_constructor(
    "tag:yaml.org,2002:float",
    lambda loader, node: float(loader.construct_scalar(node).replace("_", "").lower().replace(".inf", "inf")
                               .replace(".nan", "nan")))


def _mapping_without_repeats(loader: NumberLoader, node: yaml.MappingNode) -> dict:
    """A mapping whose keys are given once: YAML's last-one-wins hid typos such as two `crop_size` lines."""
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


NumberLoader.add_constructor("tag:yaml.org,2002:map", _mapping_without_repeats)
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; a bigger file is the wrong file


def read_yaml(text: str):
    try:
        return yaml.load(text, Loader=NumberLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # e.g. thousands of nested [ [ [ ...
        raise yaml.MarkedYAMLError(problem="nested too deeply") from None


# Upper bounds, checked before anything is allocated: a crop or frame larger than any input door
# accepts (conventions.DEFAULT_MAX_INPUT_PIXELS), scales that would blow a frame up past it, a batch
# no machine holds. A learning rate above 10 diverges at the first step.
MAX_SCALE = 8.0
MAX_BATCH = 4096
MAX_WORKERS = 256
MAX_LR = 10.0


def _size_problem(value: list[int] | None) -> str | None:
    if value is None:
        return None
    if len(value) != 2 or min(value) < 1:
        return "must be [height, width]"
    if max(value) > MAX_IMAGE_SIDE or value[0] * value[1] > DEFAULT_MAX_INPUT_PIXELS:
        return f"must be at most {MAX_IMAGE_SIDE} a side and {DEFAULT_MAX_INPUT_PIXELS} pixels (4096x4096)"
    return None


SECTION_NAMES = {"DataSection": "data", "OptimSection": "optim", "LossSection": "loss", "RunSection": "run"}
# The annotations' scalar types (the module's annotations are strings: `from __future__ import annotations`).
_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _accepts(annotation: str, value: Any) -> bool:
    """Whether ``value`` fits a field annotation such as 'float', 'int | None', 'list[float]'."""
    for option in (a.strip() for a in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option.startswith("list[") and isinstance(value, list):
            return all(_accepts(option[5:-1], v) for v in value)
        if option.startswith("dict[") and isinstance(value, dict):
            return True
        kinds = _SCALARS.get(option)
        if kinds and isinstance(value, kinds) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def _check_types(section: Any) -> None:
    """A ValueError naming the key, the value and the expected type (``--set optim.lr=fast``)."""
    name = SECTION_NAMES[type(section).__name__]
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not _accepts(str(f.type), value):
            raise ValueError(f"{name}.{f.name} must be {str(f.type).replace(' | None', ' or null')}, got {value!r}")


def _check_ranges(config: "TrainConfig") -> None:
    """Every numeric setting within its range: a ValueError naming the first that is not."""
    data, optim, loss, run = config.data, config.optim, config.loss, config.run
    finite = lambda v: math.isfinite(float(v))  # noqa: E731
    rules = [
        ("optim.lr", optim.lr, 0 < optim.lr <= MAX_LR, f"> 0 and finite (at most {MAX_LR:g})"),
        ("optim.momentum", optim.momentum, 0 <= optim.momentum < 1, "in [0, 1)"),
        ("optim.weight_decay", optim.weight_decay, optim.weight_decay >= 0 and finite(optim.weight_decay), ">= 0"),
        ("optim.poly_power", optim.poly_power, optim.poly_power >= 0 and finite(optim.poly_power), ">= 0"),
        ("optim.warmup_iters", optim.warmup_iters, optim.warmup_iters >= 0, ">= 0"),
        ("optim.warmup_ratio", optim.warmup_ratio, 0 < optim.warmup_ratio <= 1, "in (0, 1]"),
        ("loss.ohem_threshold", loss.ohem_threshold, 0 < loss.ohem_threshold <= 1, "in (0, 1]"),
        ("loss.ohem_min_kept_fraction", loss.ohem_min_kept_fraction, 0 <= loss.ohem_min_kept_fraction <= 1, "in [0, 1]"),
        ("loss.aux_weight", loss.aux_weight, loss.aux_weight >= 0 and finite(loss.aux_weight), ">= 0"),
        ("loss.class_weight_power", loss.class_weight_power, finite(loss.class_weight_power), "finite"),
        ("data.scales", data.scales, bool(data.scales) and all(0 < v <= MAX_SCALE for v in data.scales),
         f"a non-empty list of factors > 0 and at most {MAX_SCALE:g}"),
        ("data.std", data.std, len(data.std) == 3 and all(v > 0 and finite(v) for v in data.std),
         "three finite values > 0"),
        ("data.mean", data.mean, len(data.mean) == 3 and all(finite(v) for v in data.mean), "three finite values"),
        ("data.workers", data.workers, 0 <= data.workers <= MAX_WORKERS, f"in [0, {MAX_WORKERS}]"),
        ("data.val_limit", data.val_limit, data.val_limit is None or data.val_limit >= 1, ">= 1 or null"),
        ("run.iterations", run.iterations, run.iterations >= 1, ">= 1"),
        ("run.batch_size", run.batch_size, 1 <= run.batch_size <= MAX_BATCH, f"in [1, {MAX_BATCH}]"),
        ("run.threads", run.threads, run.threads is None or run.threads >= 1, ">= 1 or null"),
    ] + [(f"run.{k}", getattr(run, k), getattr(run, k) >= 1, ">= 1") for k in ("log_every", "eval_every", "checkpoint_every")]
    for key, value, ok, expected in rules:
        if not ok:
            raise ValueError(f"{key} must be {expected}, got {value!r}")


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), read_yaml(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None)
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        raise ValueError(f"override {key.strip()}: {shown!r} is not a YAML value"
                         + (f" ({problem})" if problem else "")) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} " + ("is not a file" if path.exists() else "does not exist"))
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ValueError(f"config {path} is {path.stat().st_size} bytes; a config is at most {MAX_CONFIG_BYTES}")
            values = read_yaml(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ValueError(f"cannot read config {path}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"config {path} is not UTF-8 text (byte {error.start}): is it the right file?") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or type(error).__name__
            raise ValueError(f"config {path} is not valid YAML{where}: {problem}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config must be a mapping of sections")
    for text in overrides or []:
        keys, value = _parse_override(text)
        if len(keys) != 2:
            raise ValueError(f"override {text!r}: use section.key=value (e.g. optim.lr=0.01)")
        values.setdefault(keys[0], {})
        if not isinstance(values[keys[0]], dict):
            raise ValueError(f"override {text!r}: {keys[0]} is not a section")
        values[keys[0]][keys[1]] = value
    return TrainConfig.from_dict(values)
