"""Everything the segmentation node does that needs no ROS: parameters, the cameras and their
newest-frame slots, the worker thread, the batched pipeline, statistics and diagnostics values.

``node.py`` wires these to rclpy; tests drive them with rosbags message types.
"""

from __future__ import annotations

import gc
import math
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import numpy as np

from . import messages
from .classes import colorize
from .backends import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from .checkpoint import DEFAULT_WEIGHTS

# --------------------------------------------------------------------------------------------
# Parameters

IMAGE_QOS = ("sensor_data", "reliable")
INPUT_TRANSPORTS = ("raw", "compressed")
MAX_INPUT_SIDE = 8192
MAX_BATCH = 64
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
            return f"{self.range[0]:g} .. {self.range[1]:g}"
        return ""


PARAMETER_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec("weights", DEFAULT_WEIGHTS, "Checkpoint file path or known weights name (names: `bisenetv2 download --list`)."),
    ParameterSpec("backend", "auto", "Inference backend; auto picks the fastest available.", choices=BACKENDS),
    ParameterSpec("device", "auto", "Device: auto (cuda:0 when a GPU is visible, else cpu), cpu, cuda, cuda:N."),
    ParameterSpec("precision", DEFAULT_PRECISION, "Inference precision: auto (CPU: the fastest its instruction set "
                  "runs natively, logged; GPU: fp32), fp32, fp16 (GPU), bf16 (CPU with native bf16), int8.",
                  choices=PRECISIONS),
    ParameterSpec("input_height", 0, "Network input height in pixels; 0 = the checkpoint's training resolution.",
                  range=(0, MAX_INPUT_SIDE)),
    ParameterSpec("input_width", 0, "Network input width in pixels; 0 = the checkpoint's training resolution.",
                  range=(0, MAX_INPUT_SIDE)),
    ParameterSpec("engine_cache_dir", "", "Folder for built TensorRT engines and int8 ONNX Runtime graphs; "
                  "empty = the default cache."),
    ParameterSpec("calibration_images", "", "int8: folder of representative frames to calibrate on; empty = the "
                  "frames the checkpoint was trained on, when known."),
    ParameterSpec("image_qos", "sensor_data", "Input subscription reliability (depth 1 either way).",
                  choices=IMAGE_QOS),
    ParameterSpec("input_transport", "raw", "raw: subscribe `image`; compressed: `image/compressed` (JPEG/PNG).",
                  choices=INPUT_TRANSPORTS),
    ParameterSpec("publish_color", True, "Publish `color`, the palette mask (rgb8).", runtime=True),
    ParameterSpec("publish_overlay", False, "Publish `overlay`, the mask blended over the image (rgb8).",
                  runtime=True),
    ParameterSpec("overlay_alpha", 0.5, "Mask weight in `overlay` (0 = image only, 1 = mask only).", runtime=True,
                  range=(0.0, 1.0)),
    ParameterSpec("max_rate_hz", 0.0, "Process at most this many frames per second; 0 = as fast as possible.",
                  runtime=True, range=(0.0, 1000.0)),
    ParameterSpec("classes_file", "", "Class names/palette file overriding the checkpoint's (one class a line, "
                  "`name` or `name R G B`); empty = the checkpoint's classes."),
    ParameterSpec("only_when_subscribed", False, "Skip inference while no one subscribes to any output.",
                  runtime=True),
    ParameterSpec("cameras", [], "Camera names, e.g. [front, left]: per camera `<name>/image` in and "
                  "`<name>/labels`, ... out, all through one network; empty = one camera on `image`."),
    ParameterSpec("max_batch", 0, "At most this many frames per network call (cameras take turns); "
                  "0 = every camera with a new frame.", runtime=True, range=(0, MAX_BATCH)),
)
SPECS_BY_NAME = {spec.name: spec for spec in PARAMETER_SPECS}
RUNTIME_PARAMETERS = tuple(spec.name for spec in PARAMETER_SPECS if spec.runtime)


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
    if spec.choices is not None and value not in spec.choices:
        return f"parameter '{spec.name}' must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.range is not None:
        low, high = spec.range
        if not (math.isfinite(float(value)) and low <= value <= high):
            return f"parameter '{spec.name}' must be within {low:g}..{high:g}; got {value!r}"
    return None


def _camera_names_problem(names: list[str]) -> str | None:
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


@dataclass
class NodeSettings:
    """Validated parameter values. Runtime-changeable fields are updated in place by the node."""

    weights: str = DEFAULT_WEIGHTS
    backend: str = "auto"
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    input_height: int = 0
    input_width: int = 0
    engine_cache_dir: str = ""
    calibration_images: str = ""
    image_qos: str = "sensor_data"
    input_transport: str = "raw"
    publish_color: bool = True
    publish_overlay: bool = False
    overlay_alpha: float = 0.5
    max_rate_hz: float = 0.0
    classes_file: str = ""
    only_when_subscribed: bool = False
    cameras: list[str] = field(default_factory=list)
    max_batch: int = 0

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
            if spec.type is float and not reason:
                value = float(value)
            elif spec.type is list and not reason:
                value = list(value)
            chosen[spec.name] = value
        if not problems and (chosen["input_height"] == 0) != (chosen["input_width"] == 0):
            problems.append("input_height and input_width must both be 0 (checkpoint default) or both be set; "
                            f"got {chosen['input_height']}x{chosen['input_width']}")
        if not problems and not str(chosen["weights"]).strip():
            problems.append("parameter 'weights' is empty; give a checkpoint path or a known weights name")
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(**chosen)

    def update(self, name: str, value: Any) -> None:
        """Applies an accepted runtime change."""
        spec = SPECS_BY_NAME[name]
        setattr(self, name, float(value) if spec.type is float else value)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_height, self.input_width) if self.input_height else None

    @property
    def camera_names(self) -> list[str]:
        """One name per camera; [""] (unprefixed topics) without a `cameras` list."""
        return list(self.cameras) or [""]


assert [f.name for f in fields(NodeSettings)] == [s.name for s in PARAMETER_SPECS]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda:0' when PyTorch sees a GPU, else 'cpu'; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class StartupError(RuntimeError):
    """The node cannot start; the message is the one line it prints."""


def one_line(error: BaseException) -> str:
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def create_segmenter(settings: NodeSettings, segmenter_factory: Callable[..., Any] | None = None) -> tuple[Any, Any]:
    """Builds and warms up the Segmenter -> (segmenter, classes to publish).

    The classes are the checkpoint's, or ``classes_file``'s (same count required). Every failure
    becomes a one-line StartupError.
    """
    if segmenter_factory is None:
        from .segmenter import Segmenter as segmenter_factory  # noqa: N813  (heavy import, only here)
    try:
        override = None
        if settings.classes_file:
            from .classes import ClassSet

            override = ClassSet.from_file(settings.classes_file)
        segmenter = segmenter_factory(
            weights=settings.weights, backend=settings.backend, device=resolve_device(settings.device),
            precision=settings.precision, input_size=settings.input_size,
            engine_cache_dir=settings.engine_cache_dir or None,
            backend_options={"calibration_images": settings.calibration_images} if settings.calibration_images else None)
        if override is not None and len(override) != len(segmenter.classes):
            raise ValueError(f"classes_file {settings.classes_file} lists {len(override)} classes but the "
                             f"model predicts {len(segmenter.classes)}")
        warm_up(segmenter)
    except Exception as error:  # noqa: BLE001 - start-up must end with one clear line, not a traceback
        raise StartupError(f"cannot start the segmentation node: {one_line(error)}") from error
    return segmenter, override if override is not None else segmenter.classes


def warm_up(segmenter: Any) -> None:
    """One frame at the network's input size, so the first camera frame is not slowed by lazy
    initialisation (allocator, kernel selection) and device problems surface at start-up."""
    height, width = getattr(segmenter, "input_size", (64, 64))
    segmenter.segment(np.zeros((int(height), int(width), 3), np.uint8), channel_order="rgb")


# --------------------------------------------------------------------------------------------
# Newest-frame slots (one per camera) and their worker


class FrameSlots:
    """One newest-frame slot per camera, shared by one worker.

    ``put`` replaces a camera's unprocessed frame (a stale drop), so the worker always gets each
    camera's newest frame and memory stays constant when cameras outpace the model. ``take`` hands
    over every pending frame at once (at most ``max_items()``), cameras in round-robin order starting
    after the last one served: when the worker is behind and a batch is capped, every camera gets its
    turn and none can starve another.
    """

    def __init__(self, count: int = 1, max_items: Callable[[], int] = lambda: 0) -> None:
        if count < 1:
            raise ValueError(f"need at least one camera slot, got {count}")
        self._condition = threading.Condition()
        self._items: list[Any] = [None] * count
        self._has_item = [False] * count
        self._next = 0  # the camera served first by the next take
        self._closed = False
        self._max_items = max_items
        self.replaced = [0] * count

    def __len__(self) -> int:
        return len(self._items)

    def put(self, index: int, item: Any) -> bool:
        """Stores camera ``index``'s newest ``item``; True when it replaced one not yet taken."""
        with self._condition:
            replaced = self._has_item[index]
            self._items[index], self._has_item[index] = item, True
            if replaced:
                self.replaced[index] += 1
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> list[tuple[int, Any]] | None:
        """The pending (camera index, item) pairs, removed; None after ``timeout`` seconds or once closed."""
        with self._condition:
            if not any(self._has_item) and not self._closed:
                self._condition.wait(timeout)
            count = len(self._items)
            order = [(self._next + offset) % count for offset in range(count)]
            ready = [index for index in order if self._has_item[index]]
            if not ready:
                return None
            limit = self._max_items()
            if limit > 0:
                ready = ready[:limit]
            taken = []
            for index in ready:
                taken.append((index, self._items[index]))
                self._items[index], self._has_item[index] = None, False
            self._next = (ready[-1] + 1) % count
            return taken

    @property
    def pending(self) -> int:
        """How many cameras have a frame waiting."""
        with self._condition:
            return sum(self._has_item)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._items = [None] * len(self._items)
            self._has_item = [False] * len(self._items)
            self._condition.notify_all()


class FrameWorker:
    """One thread that runs ``process(batch)`` on what ``slots.take`` hands over (the newest frame
    of each camera that has one).

    ``min_interval_s()`` (re-read every batch, so `max_rate_hz` can change at runtime) spaces the
    starts of consecutive batches; frames arriving meanwhile replace each other in their slots.
    ``on_error(exception)`` is called when ``process`` raises; the worker keeps going.
    """

    def __init__(self, slots: FrameSlots, process: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 min_interval_s: Callable[[], float] = lambda: 0.0, name: str = "segmentation-worker") -> None:
        self._slots = slots
        self._process = process
        self._on_error = on_error
        self._min_interval_s = min_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._last_start = -math.inf

    def start(self) -> "FrameWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stops after the current frame; True when the thread ended within ``timeout``."""
        self._stop.set()
        self._slots.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self._last_start + self._min_interval_s() - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 0.1))  # re-check: the rate may change or we may be stopped
                continue
            item = self._slots.take(timeout=0.1)
            if item is None:
                continue
            self._last_start = time.monotonic()
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - one bad frame must not end the node
                if self._on_error is not None:
                    self._on_error(error)


def min_interval_for_rate(max_rate_hz: float) -> float:
    return 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Statistics and diagnostics

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class StatsSnapshot:
    frames_received: int
    frames_processed: int
    frames_dropped_stale: int
    frames_dropped_invalid: int
    frames_failed: int
    frames_skipped: int
    input_rate_hz: float       # over the interval since the previous snapshot
    processed_rate_hz: float
    latency_p50_ms: float      # over the last `window` processed frames; nan before the first
    latency_p99_ms: float
    inference_p50_ms: float
    interval_s: float
    new_drops: int             # drops (stale + invalid + failed) during the interval
    new_invalid: int
    new_failed: int

    @property
    def frames_dropped(self) -> int:
        return self.frames_dropped_stale + self.frames_dropped_invalid + self.frames_failed


class NodeStats:
    """Thread-safe counters and recent latencies of the node."""

    def __init__(self, window: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.received = self.processed = 0
        self.dropped_stale = self.dropped_invalid = self.failed = self.skipped = 0
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._inference_ms: deque[float] = deque(maxlen=window)
        self._previous = (clock(), 0, 0, 0, 0, 0)  # time, received, processed, drops, invalid, failed

    def record_received(self) -> None:
        with self._lock:
            self.received += 1

    def record_stale_drop(self) -> None:
        with self._lock:
            self.dropped_stale += 1

    def record_invalid(self) -> None:
        with self._lock:
            self.dropped_invalid += 1

    def record_failed(self) -> None:
        with self._lock:
            self.failed += 1

    def record_skipped(self) -> None:
        with self._lock:
            self.skipped += 1

    def record_processed(self, inference_ms: float, latency_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self._inference_ms.append(float(inference_ms))
            self._latencies_ms.append(float(latency_ms))

    @property
    def dropped(self) -> int:
        with self._lock:
            return self.dropped_stale + self.dropped_invalid + self.failed

    def snapshot(self) -> StatsSnapshot:
        """Totals, rates since the previous snapshot, latency percentiles; starts a new interval."""
        with self._lock:
            now = self._clock()
            drops = self.dropped_stale + self.dropped_invalid + self.failed
            then, received0, processed0, drops0, invalid0, failed0 = self._previous
            self._previous = (now, self.received, self.processed, drops, self.dropped_invalid, self.failed)
            interval = max(now - then, 1e-9)
            latencies = np.asarray(self._latencies_ms, np.float64)
            inference = np.asarray(self._inference_ms, np.float64)
            p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (math.nan, math.nan)
            return StatsSnapshot(
                frames_received=self.received, frames_processed=self.processed,
                frames_dropped_stale=self.dropped_stale, frames_dropped_invalid=self.dropped_invalid,
                frames_failed=self.failed, frames_skipped=self.skipped,
                input_rate_hz=(self.received - received0) / interval,
                processed_rate_hz=(self.processed - processed0) / interval,
                latency_p50_ms=float(p50), latency_p99_ms=float(p99),
                inference_p50_ms=float(np.median(inference)) if inference.size else math.nan,
                interval_s=interval, new_drops=drops - drops0, new_invalid=self.dropped_invalid - invalid0,
                new_failed=self.failed - failed0)


@dataclass(frozen=True)
class DiagnosticsReport:
    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def diagnostics_report(snapshot: StatsSnapshot, *, backend: str, device: str, model: str,
                       input_topic: str = "image") -> DiagnosticsReport:
    """The values and level of the node's DiagnosticStatus for one interval."""
    if snapshot.new_failed:
        level, message = ERROR, f"{snapshot.new_failed} frame(s) failed in inference or publishing"
    elif snapshot.input_rate_hz == 0:
        level, message = WARN, f"no images received on {input_topic}"
    elif snapshot.new_invalid:
        level, message = WARN, f"{snapshot.new_invalid} invalid frame(s) dropped"
    elif snapshot.processed_rate_hz == 0 and snapshot.frames_skipped:
        level, message = OK, "idle: no one subscribes to the outputs (only_when_subscribed)"
    elif snapshot.processed_rate_hz == 0:
        level, message = WARN, "receiving images but none processed"
    else:
        level, message = OK, f"segmenting at {snapshot.processed_rate_hz:.1f} Hz"
    values = [
        ("input rate (Hz)", f"{snapshot.input_rate_hz:.2f}"),
        ("processed rate (Hz)", f"{snapshot.processed_rate_hz:.2f}"),
        ("frames received", str(snapshot.frames_received)),
        ("frames processed", str(snapshot.frames_processed)),
        ("frames dropped", str(snapshot.frames_dropped)),
        ("dropped stale", str(snapshot.frames_dropped_stale)),
        ("dropped invalid", str(snapshot.frames_dropped_invalid)),
        ("failed", str(snapshot.frames_failed)),
        ("skipped (no subscribers)", str(snapshot.frames_skipped)),
        ("latency p50 (ms)", _ms(snapshot.latency_p50_ms)),
        ("latency p99 (ms)", _ms(snapshot.latency_p99_ms)),
        ("inference p50 (ms)", _ms(snapshot.inference_p50_ms)),
        ("backend", backend),
        ("device", device),
        ("model", model),
        ("input topic", input_topic),
    ]
    return DiagnosticsReport(level, message, values)


# --------------------------------------------------------------------------------------------
# Cameras and the batched pipeline

OUTPUTS = ("labels", "color", "overlay", "camera_info", "info")


def camera_topic(camera: str, topic: str) -> str:
    """A camera's topic: `front/labels`; with no camera name (single-camera mode) just `labels`."""
    return f"{camera}/{topic}" if camera else topic


@dataclass
class CameraState:
    """One camera of the node: its name ('' in single-camera mode), its counters, its latest input
    CameraInfo (republished with each result's header) and where its outputs go."""

    name: str
    publish: Callable[[str, Any], None]  # (output name, message)
    stats: NodeStats = field(default_factory=NodeStats)
    camera_info: Any = None

    def topic(self, topic: str) -> str:
        return camera_topic(self.name, topic)

    @property
    def label(self) -> str:
        """How log lines name the camera: "camera 'front': " or nothing in single-camera mode."""
        return f"camera '{self.name}': " if self.name else ""


@dataclass
class FrameItem:
    """What the subscription callback stores: the message, its arrival time and its transport."""

    msg: Any
    arrival: float  # time.monotonic() at the callback
    compressed: bool = False


class FrameIntake:
    """What a subscription callback does, and all it does: count, maybe skip, store the newest."""

    def __init__(self, slots: FrameSlots, cameras: list[CameraState], settings: NodeSettings,
                 anyone_listening: Callable[[int], bool] = lambda camera: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(slots) != len(cameras):
            raise ValueError(f"{len(slots)} slots for {len(cameras)} cameras")
        self.slots, self.cameras, self.settings = slots, cameras, settings
        self.anyone_listening = anyone_listening
        self.clock = clock

    def offer(self, msg: Any, compressed: bool = False, camera: int = 0) -> str:
        """'stored', 'replaced' (the camera's unprocessed frame was dropped as stale) or 'skipped'
        (no one subscribes to this camera's outputs and `only_when_subscribed` is on)."""
        stats = self.cameras[camera].stats
        stats.record_received()
        if self.settings.only_when_subscribed and not self.anyone_listening(camera):
            stats.record_skipped()
            return "skipped"
        if self.slots.put(camera, FrameItem(msg, self.clock(), compressed)):
            stats.record_stale_drop()
            return "replaced"
        return "stored"


@dataclass
class _Decoded:
    camera: CameraState
    item: FrameItem
    frame: np.ndarray
    channel_order: str


class SegmentationPipeline:
    """A batch of (camera index, FrameItem) in -> each camera's labels, color, overlay, camera_info and
    info messages out, through ``camera.publish(name, msg)``.

    Frames of one size (and channel order) go through the network in one ``segment_batch`` call;
    frames of other sizes get their own call. Every output keeps its own frame's header. Message
    types are passed in (rclpy or rosbags). Nothing raises: an invalid frame is counted and reported
    through ``warn(text)``; a failed network call or publication is counted per camera and reported
    through ``on_failure(text)``; the other frames of the batch still go out.
    """

    def __init__(self, segmenter: Any, classes: Any, settings: NodeSettings, cameras: list[CameraState], *,
                 image_type: Any, info_type: Any, warn: Callable[[str], None] = lambda text: None,
                 on_failure: Callable[[str], None] = lambda text: None, model_name: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.segmenter = segmenter
        self.settings = settings
        self.cameras = cameras
        self.image_type = image_type
        self.info_type = info_type
        self.warn = warn
        self.on_failure = on_failure
        self.model_name = model_name if model_name is not None else settings.weights
        self.clock = clock
        self.classes = classes  # names and palette: the checkpoint's or classes_file's
        self._lookup_table = classes.lookup_table()

    @staticmethod
    def decode(item: FrameItem) -> tuple[np.ndarray, str]:
        if item.compressed:
            return messages.compressed_to_frame(item.msg)
        return messages.image_to_frame(item.msg)

    def process(self, item: FrameItem, camera: int = 0) -> bool:
        """One frame of one camera; False when it was invalid or failed (counted and reported)."""
        return self.process_batch([(camera, item)]) == 1

    def process_batch(self, batch: list[tuple[int, FrameItem]]) -> int:
        """Segments and publishes every frame of ``batch``; returns how many were published."""
        groups: dict[tuple, list[_Decoded]] = {}
        for index, item in batch:
            camera = self.cameras[index]
            try:
                frame, channel_order = self.decode(item)
            except messages.ImageConversionError as error:
                camera.stats.record_invalid()
                self.warn(f"{camera.label}dropped an invalid frame (frame_id '{item.msg.header.frame_id}'): {error}")
                continue
            groups.setdefault((frame.shape, channel_order), []).append(_Decoded(camera, item, frame, channel_order))
        published = 0
        for group in groups.values():
            started = self.clock()
            try:
                frames = group[0].frame[None] if len(group) == 1 else np.stack([entry.frame for entry in group])
                labels = self.segmenter.segment_batch(frames, channel_order=group[0].channel_order)
            except Exception as error:  # noqa: BLE001 - a failed call loses these frames, not the node
                for entry in group:
                    entry.camera.stats.record_failed()
                names = ", ".join(entry.camera.name or "image" for entry in group)
                self.on_failure(f"segmentation failed for {len(group)} frame(s) ({names}): "
                                f"{type(error).__name__}: {one_line(error)}")
                continue
            inference_ms = (self.clock() - started) * 1000.0
            for entry, frame_labels in zip(group, labels):
                try:
                    self._publish_results(entry, frame_labels, inference_ms, len(group))
                    published += 1
                except Exception as error:  # noqa: BLE001
                    entry.camera.stats.record_failed()
                    self.on_failure(f"{entry.camera.label}publishing failed: {type(error).__name__}: "
                                    f"{one_line(error)}")
        return published

    def _publish_results(self, entry: _Decoded, labels: np.ndarray, inference_ms: float, batch_size: int) -> None:
        camera, header, settings = entry.camera, entry.item.msg.header, self.settings
        publish = camera.publish
        publish("labels", messages.labels_to_image(self.image_type, labels, header))
        colors = None
        if settings.publish_color or settings.publish_overlay:
            colors = colorize(labels, self._lookup_table)
        if settings.publish_color:
            publish("color", messages.array_to_image(self.image_type, header, colors, "rgb8"))
        if settings.publish_overlay:
            overlay = messages.blend(messages.to_rgb(entry.frame, entry.channel_order), colors, settings.overlay_alpha)
            publish("overlay", messages.array_to_image(self.image_type, header, overlay, "rgb8"))
        camera_info = camera.camera_info
        if camera_info is not None:
            publish("camera_info", messages.with_header(camera_info, header))
        latency_ms = (self.clock() - entry.item.arrival) * 1000.0
        stats = camera.stats
        stats.record_processed(inference_ms, latency_ms)
        publish("info", messages.info_message(
            self.info_type, header, model=self.model_name, backend=getattr(self.segmenter, "backend_name", ""),
            device=str(getattr(self.segmenter, "device", "")), camera=camera.name, inference_ms=inference_ms,
            batch_size=batch_size, latency_ms=latency_ms, frames_received=stats.received,
            frames_processed=stats.processed, frames_dropped=stats.dropped, frames_failed=stats.failed,
            fractions=messages.class_fractions(labels, len(self.classes))))


def camera_diagnostics(cameras: list[CameraState], *, node_name: str, backend: str, device: str, model: str,
                       input_topic: Callable[[CameraState], str]) -> list[tuple[str, DiagnosticsReport]]:
    """One (status name, report) per camera: `<node>: segmentation`, or `<node>: segmentation front`."""
    reports = []
    for camera in cameras:
        report = diagnostics_report(camera.stats.snapshot(), backend=backend, device=device, model=model,
                                    input_topic=input_topic(camera))
        if camera.name:
            report.values.insert(0, ("camera", camera.name))
        reports.append((f"{node_name}: segmentation" + (f" {camera.name}" if camera.name else ""), report))
    return reports


def free_model_memory() -> None:
    """Returns a dropped model's memory: collects reference cycles and, when PyTorch has used a GPU,
    hands its cached blocks back to the driver (a lifecycle cleanup must really free the GPU)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
