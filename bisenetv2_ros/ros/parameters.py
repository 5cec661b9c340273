"""The node's parameters: their specs, their validation, and the settings object generated from them.

One ``ParameterSpec`` per parameter (name, default, description, limits) in ``PARAMETER_SPECS``;
``NodeSettings`` (one attribute per spec) is made from that list, so each default is written once.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Mapping

from ..conventions import DEFAULT_MAX_INPUT_PIXELS, DEFAULT_WEIGHTS, MAX_IMAGE_SIDE
from ..inference.backends import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from .warmup import parse_frame_sizes

IMAGE_QOS = ("sensor_data", "reliable")
INPUT_TRANSPORTS = ("raw", "compressed")
MAX_INPUT_SIDE = 8192
MAX_BATCH = 64
MAX_CAMERAS = 32  # each camera is a set of subscriptions and publishers: a typo must not make thousands
MAX_WARMUP_SIZES = 16
# A camera name becomes a topic prefix (`front/image`): ROS name tokens, optionally nested with '/'.
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: default (its type is the parameter's type), description, constraints."""

    name: str
    default: Any
    description: str
    runtime: bool = False                    # may change with `ros2 param set`; otherwise read-only
    choices: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None  # inclusive

    @property
    def type(self) -> type:
        return type(self.default)

    def constraints_text(self) -> str:
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.range:
            return f"{_bound(self.range[0])} .. {_bound(self.range[1])}"
        return ""


PARAMETER_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec("weights", DEFAULT_WEIGHTS, "Checkpoint file path or known weights name (names: `bisenetv2 download --list`)."),
    ParameterSpec("backend", "auto", "Inference backend; auto picks the fastest available.", choices=BACKENDS),
    ParameterSpec("device", "auto", "Device: auto (a GPU when the backend can use one, else cpu), cpu, cuda, cuda:N."),
    ParameterSpec("precision", DEFAULT_PRECISION, "Inference precision: auto (CPU: the fastest path measured on this "
                  "machine, cached, logged; GPU: fp32), fp32, fp16 (GPU), bf16 (CPU with native bf16), int8.",
                  choices=PRECISIONS),
    ParameterSpec("input_height", 0, "Network input height in pixels; 0 = the checkpoint's training resolution.",
                  range=(0, MAX_INPUT_SIDE)),
    ParameterSpec("input_width", 0, "Network input width in pixels; 0 = the checkpoint's training resolution.",
                  range=(0, MAX_INPUT_SIDE)),
    ParameterSpec("engine_cache_dir", "", "Folder for built TensorRT engines and int8 ONNX Runtime graphs; "
                  "empty = the default cache."),
    ParameterSpec("calibration_images", "", "int8: folder of representative frames to calibrate on; empty = the "
                  "calibration table the weights carry, else the frames they were trained on, when known."),
    ParameterSpec("image_qos", "sensor_data", "Input subscription reliability (depth 1 either way).",
                  choices=IMAGE_QOS),
    ParameterSpec("input_transport", "raw", "raw: subscribe `image`; compressed: `image/compressed` (JPEG/PNG).",
                  choices=INPUT_TRANSPORTS),
    ParameterSpec("max_input_pixels", DEFAULT_MAX_INPUT_PIXELS, "Largest input frame (width x height) accepted; "
                  "larger ones (compressed: measured from their header, before decoding) are dropped, counted and "
                  "warned about.", range=(1, MAX_IMAGE_SIDE * MAX_IMAGE_SIDE)),
    ParameterSpec("input_significant_bits", 16, "Bits of 16-bit input (rgb16, mono16, bayer_*16, 16UC1/3) that carry "
                  "the value: 12 for a 12-bit camera in a 16-bit container, 10 for a 10-bit one; values are scaled "
                  "to 8 bits from this range (above it: saturated). 16 = the full range.", runtime=True,
                  range=(8, 16)),
    ParameterSpec("publish_color", True, "Publish `color`, the palette mask (rgb8).", runtime=True),
    ParameterSpec("publish_overlay", False, "Publish `overlay`, the mask blended over the image (rgb8).",
                  runtime=True),
    ParameterSpec("publish_confidence", False, "Publish `confidence`: mono8, round(255 x the labelled class's softmax "
                  "probability) per pixel, the labels' header and size (computed in the network's graph)."),
    ParameterSpec("publish_compressed", False, "Also publish `labels/compressed` (and `color/compressed` while "
                  "`color` is on): lossless PNG sensor_msgs/CompressedImage, for small recordings.", runtime=True),
    ParameterSpec("publish_points", False, "Publish `points`: an organised PointCloud2 (x, y, z, label, confidence) "
                  "aligned pixel for pixel with `labels`, from `depth` (registered depth image, 16UC1 mm or 32FC1 m) "
                  "and `depth_camera_info`."),
    ParameterSpec("depth_max_offset_s", 0.05, "`points`: largest stamp difference between a frame and the newest "
                  "depth image for them to be paired; frames without such a depth image get no cloud.",
                  runtime=True, range=(0.0, 10.0)),
    ParameterSpec("overlay_alpha", 0.5, "Mask weight in `overlay` (0 = image only, 1 = mask only).", runtime=True,
                  range=(0.0, 1.0)),
    ParameterSpec("max_rate_hz", 0.0, "Process at most this many frames per second; 0 = as fast as possible.",
                  runtime=True, range=(0.0, 1000.0)),
    ParameterSpec("classes_file", "", "Class names/palette file overriding the checkpoint's (one class a line, "
                  "`name` or `name R G B`); empty = the checkpoint's classes."),
    ParameterSpec("only_when_subscribed", False, "Skip inference while no one subscribes to any output.",
                  runtime=True),
    ParameterSpec("cameras", [], "Camera names, e.g. [front, left]: per camera `<name>/image` in and "
                  "`<name>/labels`, ... out, all through one network; empty = one camera on `image`; at most 32."),
    ParameterSpec("warmup_frame_sizes", [], "Camera frame sizes (at most 16), HEIGHTxWIDTH, e.g. [480x640]: the network is warmed "
                  "at these at start-up (both channel orders; batch 1 and all cameras), so the first camera frames pay "
                  "no graph build or shape specialisation; sizes received on earlier runs are remembered and warmed "
                  "too. Empty = the network input size and the remembered sizes."),
    ParameterSpec("ood_check", True, "Score every frame for being unlike the weights' training frames (`info` "
                  "ood_score / ood, an `out-of-distribution` diagnostics entry); uses the confidence output."),
    ParameterSpec("ood_window", 30, "ood alarm: WARN when more than ood_warn_share of the last this many frames "
                  "are flagged.", range=(1, 10000)),
    ParameterSpec("ood_warn_share", 0.3, "ood alarm: share of flagged frames in the window that raises WARN (it "
                  "clears at half of it).", range=(0.01, 1.0)),
    ParameterSpec("ood_error_seconds", 3.0, "ood alarm: ERROR after every frame was flagged or frozen (identical, or "
                  "stamps not advancing) this long; cleared after as long without.", range=(0.1, 3600.0)),
    ParameterSpec("max_batch", 0, "At most this many frames per network call (cameras take turns); "
                  "0 = every camera with a new frame.", runtime=True, range=(0, MAX_BATCH)),
)
SPECS_BY_NAME = {spec.name: spec for spec in PARAMETER_SPECS}
RUNTIME_PARAMETERS = tuple(spec.name for spec in PARAMETER_SPECS if spec.runtime)


def _bound(value: float) -> str:
    """A range bound as written: integers in full (1073741824, not 1.07374e+09), floats short."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def parameters_help() -> str:
    """The node's parameters, one block each, for ``segmentation_node --help``."""
    lines = []
    for spec in PARAMETER_SPECS:
        constraints = spec.constraints_text()
        lines.append(f"  {spec.name} ({spec.type.__name__}, default {spec.default!r}"
                     f"{', ' + constraints if constraints else ''}{', runtime' if spec.runtime else ''})")
        lines.append(f"      {spec.description}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The node's own command line (before --ros-args): ROS-free, so --help never needs a ROS context

NODE_NAME = "segmentation_node"
LIFECYCLE_FLAG = "--lifecycle"  # `segmentation_node --lifecycle`: the managed node
USAGE = f"""usage: ros2 run bisenetv2_ros {NODE_NAME} [{LIFECYCLE_FLAG}] [--ros-args -p NAME:=VALUE ...]
       python -m bisenetv2_ros.ros.node [{LIFECYCLE_FLAG}] [--ros-args ...]

The BiSeNetV2 semantic segmentation node. {LIFECYCLE_FLAG}: the managed (lifecycle) node, unconfigured
until `ros2 lifecycle set`. Topics and launch file: docs/node.md.

parameters (--ros-args -p NAME:=VALUE, or a --params-file):
"""


def node_arguments(argv: list[str]) -> tuple[bool, int | None]:
    """(lifecycle requested, exit code or None to start). ``--help`` and unknown arguments print here."""
    own = argv[1:]  # the program name left out; ROS's own arguments follow --ros-args
    own = own[:own.index("--ros-args")] if "--ros-args" in own else own
    if "-h" in own or "--help" in own:
        print(USAGE + parameters_help())
        return False, 0
    unknown = [a for a in own if a != LIFECYCLE_FLAG]
    if unknown:
        print(f"{NODE_NAME}: error: unknown arguments {unknown}; see --help (ROS arguments go after --ros-args)",
              file=sys.stderr)
        return False, 2
    return LIFECYCLE_FLAG in own, None


class SettingsError(ValueError):
    """An invalid parameter value; the message names the parameter and what is allowed."""


def validate_value(spec: ParameterSpec, value: Any) -> str | None:
    """None when ``value`` is valid for ``spec``, else the reason."""
    expected = spec.type
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is list:
        ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, expected)
    if not ok:
        wanted = "list of strings" if expected is list else expected.__name__
        return f"parameter '{spec.name}' must be a {wanted}, got {type(value).__name__} {value!r}"
    if spec.name == "cameras":
        return _camera_names_problem(list(value))
    if spec.name == "warmup_frame_sizes":
        return _frame_sizes_problem(list(value))
    if spec.choices is not None and value not in spec.choices:
        return f"parameter '{spec.name}' must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.range is not None:
        low, high = spec.range
        if not (math.isfinite(float(value)) and low <= value <= high):
            return f"parameter '{spec.name}' must be within {_bound(low)}..{_bound(high)}; got {value!r}"
    return None


def _frame_sizes_problem(values: list[str]) -> str | None:
    try:
        sizes = parse_frame_sizes(values)
    except ValueError as error:
        return str(error)
    if len(sizes) > MAX_WARMUP_SIZES:
        return f"parameter 'warmup_frame_sizes' lists {len(sizes)} sizes; at most {MAX_WARMUP_SIZES}"
    too_big = [f"{h}x{w}" for h, w in sizes if max(h, w) > MAX_IMAGE_SIDE]
    return (f"parameter 'warmup_frame_sizes': {', '.join(too_big)} exceeds {MAX_IMAGE_SIDE} pixels a side"
            if too_big else None)


def _camera_names_problem(names: list[str]) -> str | None:
    if len(names) > MAX_CAMERAS:
        return f"parameter 'cameras' lists {len(names)} cameras; at most {MAX_CAMERAS} per node"
    bad = [name for name in names if not CAMERA_NAME.fullmatch(name)]
    if bad:
        return (f"parameter 'cameras': {', '.join(repr(name) for name in bad)} cannot prefix a topic; use letters, "
                "digits and '_' (starting with a letter), e.g. front_left")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"parameter 'cameras' names {', '.join(repeated)} more than once"
    return None


def check_runtime_update(name: str, value: Any) -> tuple[bool, str]:
    """Decides a `ros2 param set`: (accepted, reason). Parameters the node does not own are accepted."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return True, ""
    if not spec.runtime:
        return False, (f"parameter '{name}' is read at start-up only; restart the node to change it "
                       f"(runtime-changeable: {', '.join(RUNTIME_PARAMETERS)})")
    reason = validate_value(spec, value)
    return (False, reason) if reason else (True, "")


def _as_parameter_type(spec: ParameterSpec, value: Any) -> Any:
    """A valid value in the spec's own type: ints given for floats become floats, tuples lists."""
    if spec.type is float:
        return float(value)
    if spec.type is list:
        return list(value)
    return value


def _cross_problems(chosen: Mapping[str, Any]) -> list[str]:
    """Bounds that join two parameters: the network input and the warm-up frames within the frame limits."""
    problems, limit = [], chosen["max_input_pixels"]
    if chosen["input_height"] * chosen["input_width"] > DEFAULT_MAX_INPUT_PIXELS:
        problems.append(f"input_height x input_width {chosen['input_height']}x{chosen['input_width']} is above "
                        f"{DEFAULT_MAX_INPUT_PIXELS} pixels (4096x4096)")
    too_big = [f"{h}x{w}" for h, w in parse_frame_sizes(chosen["warmup_frame_sizes"]) if h * w > limit]
    if too_big:
        problems.append(f"parameter 'warmup_frame_sizes': {', '.join(too_big)} above max_input_pixels {limit} "
                        "(such frames are refused, so warming for them only costs memory)")
    return problems


class _SettingsMethods:
    """What ``NodeSettings`` does beyond holding one attribute per parameter."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeSettings":
        """Validates every value (missing ones take the default); raises SettingsError."""
        problems = []
        unknown = sorted(set(values) - set(SPECS_BY_NAME))
        if unknown:
            problems.append(f"unknown parameter(s) {', '.join(unknown)}")
        chosen = {}
        for spec in PARAMETER_SPECS:
            value = values.get(spec.name, spec.default)
            reason = validate_value(spec, value)
            if reason:
                problems.append(reason)
            chosen[spec.name] = value if reason else _as_parameter_type(spec, value)
        if not problems and (chosen["input_height"] == 0) != (chosen["input_width"] == 0):
            problems.append("input_height and input_width must both be 0 (checkpoint default) or both be set; "
                            f"got {chosen['input_height']}x{chosen['input_width']}")
        if not problems:
            problems += _cross_problems(chosen)
        if not problems and not str(chosen["weights"]).strip():
            problems.append("parameter 'weights' is empty; give a checkpoint path or a known weights name")
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(**chosen)

    def update(self, name: str, value: Any) -> None:
        """Applies an accepted runtime change."""
        setattr(self, name, _as_parameter_type(SPECS_BY_NAME[name], value))

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_height, self.input_width) if self.input_height else None

    @property
    def warmup_sizes(self) -> list[tuple[int, int]]:
        return parse_frame_sizes(self.warmup_frame_sizes)

    @property
    def camera_names(self) -> list[str]:
        """One name per camera; [""] (unprefixed topics) without a `cameras` list."""
        return list(self.cameras) or [""]


def _settings_field(spec: ParameterSpec) -> tuple[str, type, Any]:
    if isinstance(spec.default, list):  # mutable: each settings object gets its own copy
        return spec.name, spec.type, field(default_factory=lambda: list(spec.default))
    return spec.name, spec.type, field(default=spec.default)


# One attribute per entry of PARAMETER_SPECS, in that order, with its name, type and default
# (settings.backend, settings.max_rate_hz, ...). Runtime-changeable ones are updated in place by the node.
NodeSettings = make_dataclass("NodeSettings", [_settings_field(spec) for spec in PARAMETER_SPECS],
                              bases=(_SettingsMethods,))
NodeSettings.__module__ = __name__  # make_dataclass's own `module=` needs Python 3.12
NodeSettings.__doc__ = "Validated parameter values, one attribute per ParameterSpec (generated from PARAMETER_SPECS)."
