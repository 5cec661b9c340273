"""``backend``/``precision`` ``auto`` on a CPU: the fastest path *measured* on this machine.

CPU flags do not say what is fast (issue 19: the flag rule picked torch bf16, 1.3-1.6x slower than
int8 on an AVX-512 BF16 EPYC, and 3x slower with one competing process). So on first use for a
(machine, weights, frame size, batch) every candidate available here (``CANDIDATES``) is built and
timed on a few frames of that size, interleaved, quiet and then while ``LOAD_PROCESSES`` competing
busy processes run, because a robot's CPU is never quiet. A candidate whose labels differ from the
fp32 reference on more than ``MAX_DISAGREEMENT`` of the check pixels is rejected; of the rest the
one with the lowest mean of its quiet and loaded p50 wins. The decision and its table are logged
once and cached in the engine-cache format (``engine_cache.EngineCache``: atomic, stale/corrupt
files re-measured) under a key of everything they depend on (CPU model, flags, cores, library
versions, weights hash, frame shape, the request), so the next start only reads a small file.

``BISENETV2_AUTO=rule`` restores the instruction-set rule (``cpu.auto_precision``): no measurement.
Other backends join by ``register_candidate`` (e.g. OpenVINO).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .backend_base import Backend, BackendError, onnxruntime_importable, openvino_importable
from .cpu import BF16_FLAGS, native_bf16

LOGGER = logging.getLogger("bisenetv2_ros")
MODE_ENV = "BISENETV2_AUTO"  # "measure" (default) or "rule"
MAX_DISAGREEMENT = 0.01  # labels differing from fp32 on more than 1 % of the check pixels: rejected
CLOSE = 0.10  # scores within 10 % of the best are a tie at this noise: the smallest loaded p50 of them wins
CHECK_FRAMES = 4
SYNTHETIC_TIE_MARGIN = 0.25  # class-score margin below which a synthetic pixel is not counted (fp32_reference)
WARMUP_RUNS = 2
TIMED_ROUNDS = 9  # per condition (quiet, loaded), interleaved; 5 flipped the choice between runs here (noise)
LOAD_PROCESSES = 1
DECISION_VERSION = 1  # bumped when the protocol changes, so old decisions read as stale
LIBRARIES = ("torch", "onnxruntime", "openvino")  # versions that enter the cache key, where installed


@dataclass(frozen=True)
class AutoContext:
    """What decides whether a candidate can run here (simulated in tests)."""

    flags: frozenset[str]
    calibration: bool  # int8 calibration frames are known for these weights
    importable: Callable[[str], bool] = lambda module: _importable(module)


def _importable(module: str) -> bool:
    """The optional runtimes a candidate needs (torch is always there)."""
    return {"onnxruntime": onnxruntime_importable, "openvino": openvino_importable}.get(module, lambda: True)()


@dataclass(frozen=True)
class Candidate:
    """One path auto may choose; ``unavailable(context)`` says why it cannot run here, or None."""

    backend: str
    precision: str
    unavailable: Callable[[AutoContext], str | None]
    options: Mapping[str, Any] = field(default_factory=dict)  # extra backend options for this path

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"


def _needs(module: str, calibration: bool = False) -> Callable[[AutoContext], str | None]:
    def unavailable(context: AutoContext) -> str | None:
        if not context.importable(module):
            return f"{module} is not importable"
        if calibration and not context.calibration:
            return "no int8 calibration frames known for these weights"
        return None
    return unavailable


CANDIDATES: list[Candidate] = [
    Candidate("torch", "fp32", lambda context: None),
    Candidate("torch", "bf16", lambda context: None if native_bf16(context.flags)
              else f"no native bf16 ({' / '.join(BF16_FLAGS)})"),
    Candidate("onnxruntime", "fp32", _needs("onnxruntime")),
    Candidate("onnxruntime", "int8", _needs("onnxruntime", calibration=True)),
    # OpenVINO (optional extra): bf16 only where native, else it would quietly run f32.
    Candidate("openvino", "fp32", _needs("openvino")),
    Candidate("openvino", "bf16", lambda context: _needs("openvino")(context) or (
        None if native_bf16(context.flags) else f"no native bf16 ({' / '.join(BF16_FLAGS)})")),
    Candidate("openvino", "int8", _needs("openvino", calibration=True)),
]


def register_candidate(candidate: Candidate) -> None:
    """Adds a path to the table auto measures (one of the same name is replaced)."""
    CANDIDATES[:] = [c for c in CANDIDATES if c.name != candidate.name] + [candidate]


def candidates_for(backend: str, precision: str, context: AutoContext) -> tuple[list[Candidate], dict[str, str]]:
    """(candidates to measure, {name: why not} of the others) for a request ('auto' matches any)."""
    usable, skipped = [], {}
    for candidate in CANDIDATES:
        if backend not in ("auto", candidate.backend) or precision not in ("auto", candidate.precision):
            continue
        why = candidate.unavailable(context)
        if why:
            skipped[candidate.name] = why
        else:
            usable.append(candidate)
    return usable, skipped


@dataclass
class Measurement:
    name: str
    quiet_ms: float | None = None
    loaded_ms: float | None = None
    disagreement: float | None = None  # fraction of check pixels whose label differs from fp32
    error: str | None = None  # could not be built or run
    environmental: bool = False  # ... because of the machine's state (disk full, permissions), not the path

    @property
    def score_ms(self) -> float | None:
        values = [v for v in (self.quiet_ms, self.loaded_ms) if v is not None]
        return sum(values) / len(values) if values else None


@dataclass
class Decision:
    backend: str
    precision: str
    rows: list[dict[str, Any]]  # one per candidate: name, quiet/loaded/score ms, disagreement, status
    frame_shape: list[int]
    check_frames: str
    load_processes: int
    measured_s: float = 0.0
    measured_at: str = ""

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Decision:
        return cls(**json.loads(data.decode()))

    def table_lines(self) -> list[str]:
        shape = "x".join(map(str, self.frame_shape))
        lines = [f"auto: measured {shape} (NxHxW) frames, quiet and with {self.load_processes} busy process(es); "
                 f"labels checked on {self.check_frames}",
                 f"  {'candidate':<22}{'quiet ms':>10}{'loaded ms':>11}{'score ms':>10}{'differs':>9}  status"]
        for row in self.rows:
            def cell(key, width, fmt="{:.1f}"):
                return (fmt.format(row[key]) if row.get(key) is not None else "-").rjust(width)
            lines.append(f"  {row['name']:<22}{cell('quiet_ms', 10)}{cell('loaded_ms', 11)}{cell('score_ms', 10)}"
                         f"{cell('disagreement', 9, '{:.2%}')}  {row['status']}")
        return lines


def choose(measurements: Sequence[Measurement], skipped: Mapping[str, str] | None = None,
           max_disagreement: float = MAX_DISAGREEMENT) -> tuple[str, list[dict[str, Any]]]:
    """(name of the fastest acceptable candidate, table rows). Pure: tested on simulated numbers.

    Acceptable: built and ran, labels differ from fp32 on at most ``max_disagreement`` of the check
    pixels. Fastest: lowest mean of quiet and loaded p50 (so a path that collapses under contention
    loses to one slightly slower on a quiet machine); of the candidates within ``CLOSE`` of that
    score, the one with the lowest loaded p50 (the machine a robot runs on is shared).
    """
    rows, ok = [], []
    for m in measurements:
        row = {"name": m.name, "quiet_ms": m.quiet_ms, "loaded_ms": m.loaded_ms, "score_ms": m.score_ms,
               "disagreement": m.disagreement}
        if m.error:
            row["status"] = f"failed: {m.error}"
        elif m.disagreement is not None and m.disagreement > max_disagreement:
            row["status"] = f"rejected: labels differ from fp32 on more than {max_disagreement:.0%} of pixels"
        elif m.score_ms is None:
            row["status"] = "failed: not timed"
        else:
            row["status"] = "ok"
            ok.append(m)
        rows.append(row)
    rows += [{"name": name, "status": f"not available: {why}"} for name, why in (skipped or {}).items()]
    best = min(ok, key=lambda m: m.score_ms) if ok else None
    if best is not None and best.loaded_ms is not None:
        close = [m for m in ok if m.score_ms <= best.score_ms * (1 + CLOSE) and m.loaded_ms is not None]
        best = min(close, key=lambda m: (m.loaded_ms, m.score_ms))
    if best is None:
        failures = "; ".join(f"{r['name']}: {r['status']}" for r in rows)
        raise BackendError(f"auto: no candidate path could run here ({failures}); give backend and precision explicitly")
    for row in rows:
        if row["name"] == best.name:
            row["status"] = "chosen"
    return best.name, rows


def time_candidates(backends: Mapping[str, Backend], frames: np.ndarray, rounds: int = TIMED_ROUNDS,
                    load_processes: int = 0) -> dict[str, float]:
    """p50 ms per backend over ``rounds`` interleaved runs, with ``load_processes`` busy processes."""
    from .background_load import BackgroundLoad

    times: dict[str, list[float]] = {name: [] for name in backends}
    with BackgroundLoad(load_processes):
        for _ in range(rounds):
            for name, backend in backends.items():
                start = time.perf_counter()
                backend.run(frames, "rgb")
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: round(float(np.median(t)), 2) for name, t in times.items()}


def check_frames(info, options: Mapping[str, Any], frame_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A few frames at the frame size for the label check: calibration frames when known, else synthetic
    (the source string then starts with the count and 'synthetic')."""
    from .int8 import CalibrationSet

    try:
        calibration = CalibrationSet(options.get("calibration_frames"), options.get("calibration_images"),
                                     getattr(info, "dataset", "unknown"), CHECK_FRAMES)
        return np.ascontiguousarray(calibration.frames_at(frame_hw, "rgb")[:CHECK_FRAMES]), calibration.source
    except BackendError:
        import cv2

        rng = np.random.default_rng(0)  # smooth blobs, so the check sees several classes, not noise
        small = rng.integers(0, 256, (CHECK_FRAMES, frame_hw[0] // 16 + 2, frame_hw[1] // 16 + 2, 3), np.uint8)
        frames = np.stack([cv2.resize(f, frame_hw[::-1], interpolation=cv2.INTER_CUBIC) for f in small])
        return frames, f"{CHECK_FRAMES} synthetic frames (no calibration frames known)"


def fp32_reference(model, info, input_size: tuple[int, int], frames: np.ndarray,
                   tie_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels of the eager fp32 pipeline, the pixels to count) -- what every candidate is checked against.

    tie_margin > 0 leaves out pixels whose two best class scores are closer than that: synthetic frames
    are full of near-ties no real scene has, where any rounding flips the label (the embedded model's
    int8 path differed from fp32 on 0.96-1.04 % of synthetic pixels but 0.29 % of real CamVid ones;
    without the pixels within 0.25 of a tie, 0.13-0.15 % of the 97 % of pixels left).
    """
    import torch

    from .fused import FusedSegmentation

    fused = FusedSegmentation(model.eval(), info.normalization, input_size, "rgb").float()
    with torch.inference_mode():
        tensor = torch.from_numpy(frames)
        logits = fused.model(fused.preprocess(tensor), output_size=tuple(frames.shape[1:3]))
        labels = logits.argmax(dim=1).to(torch.uint8).numpy()
        if tie_margin <= 0:
            return labels, None
        best = logits.topk(2, dim=1).values
        return labels, (best[:, 0] - best[:, 1]).numpy() >= tie_margin


def measure(candidates: Sequence[Candidate], build: Callable[[Candidate], Backend], check: np.ndarray,
            reference: np.ndarray, frames: np.ndarray, load_processes: int = LOAD_PROCESSES,
            counted: np.ndarray | None = None) -> tuple[list[Measurement], dict[str, Backend]]:
    """Builds, checks and times every candidate -> (measurements, the backends that ran).

    counted: the check pixels the disagreement is taken over (None: all)."""
    results, built = {}, {}
    for candidate in candidates:
        result = results[candidate.name] = Measurement(candidate.name)
        try:
            backend = build(candidate)
            labels = np.concatenate([backend.run(frame[None], "rgb") for frame in check])
            differs = labels != reference
            result.disagreement = round(float(differs[counted].mean() if counted is not None else differs.mean()), 5)
            for _ in range(WARMUP_RUNS):
                backend.run(frames, "rgb")
            built[candidate.name] = backend
        except Exception as error:  # noqa: BLE001 - a path that cannot run here is a row, not a crash
            result.error = " ".join(str(error).split())[:200] or type(error).__name__
            result.environmental = caused_by_environment(error)
    timed = {name: b for name, b in built.items() if results[name].disagreement <= MAX_DISAGREEMENT}
    if timed:
        for name, ms in time_candidates(timed, frames).items():
            results[name].quiet_ms = ms
        if load_processes:
            for name, ms in time_candidates(timed, frames, load_processes=load_processes).items():
                results[name].loaded_ms = ms
    return list(results.values()), built


# Failures of the machine's state, not of a path: a decision measured under them is never cached, so a
# freed disk or a fixed permission gets the path back at the next start.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE,
                                errno.ENFILE, errno.ENOMEM, errno.ENAMETOOLONG})


def caused_by_environment(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised from is an OSError of the machine's state."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS):
            return True
        if any(os.strerror(code) in str(error) for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
            return True  # runtimes (onnxruntime, openvino) re-raise OS errors as their own types
        error = error.__cause__ or error.__context__
    return False


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def decision_key(cpu, weights_sha256: str, frame_shape: Sequence[int], input_size: Sequence[int], request: tuple[str, str],
                 candidates: Sequence[str], calibration: bool, options: Mapping | None = None) -> dict[str, Any]:
    """What a decision depends on; backend options only when given (older decisions stay valid)."""
    from .backend_options import options_fingerprint
    from .cpu import cpu_cores

    key = {"version": DECISION_VERSION, "cpu_model": cpu.model, "cpu_flags": sorted(cpu.flags),
           "cpu_cores": cpu_cores(), "libraries": library_versions(), "weights_sha256": weights_sha256,
           "frame_shape": list(frame_shape), "input_size": list(input_size), "request": list(request),
           "candidates": sorted(candidates), "calibration": calibration, "load_processes": LOAD_PROCESSES}
    return {**key, "options": options_fingerprint(options)} if options else key


def measuring_enabled() -> bool:
    mode = os.environ.get(MODE_ENV, "measure").strip().lower() or "measure"
    if mode not in ("measure", "rule"):
        raise BackendError(f"{MODE_ENV}={mode!r} is not understood; use 'measure' (default) or 'rule'")
    return mode == "measure"


def measured_backend(backend: str, precision: str, model, info, input_size: tuple[int, int],
                     frame_shape: tuple[int, int, int], options: Mapping[str, Any], calibration: bool,
                     cache_dir, build: Callable[[Candidate], Backend], remeasure: bool = False) -> Backend | None:
    """The backend auto chooses for this request on this CPU (measured now, or the cached decision),
    with ``auto_decision`` set on it; None when there is nothing to choose between (at most one
    candidate: the caller's plain path builds it, or raises its clear error)."""
    from .calibration_table import network_fingerprint
    from .cpu import cpu_info
    from .engine_cache import EngineCache, Transient, default_engine_cache_dir

    cpu = cpu_info()
    candidates, skipped = candidates_for(backend, precision, AutoContext(cpu.flags, calibration))
    if len(candidates) < 2:
        return None
    weights_sha256 = network_fingerprint(model, info.normalization)
    frame_shape = tuple(int(v) for v in frame_shape)
    key = decision_key(cpu, weights_sha256, frame_shape, input_size, (backend, precision),
                       [c.name for c in candidates] + list(skipped), calibration, options)
    slot = {"name": "auto", "weights": weights_sha256[:12], "request": f"{backend}-{precision}",
            "frames": "x".join(map(str, frame_shape))}
    cache = EngineCache(cache_dir or default_engine_cache_dir(), kind="auto decision", suffix=".auto")
    by_name = {c.name: c for c in candidates}
    built: dict[str, Backend] = {}

    def measure_now() -> bytes:
        start = time.perf_counter()
        check, source = check_frames(info, options, frame_shape[1:])
        synthetic = "synthetic" in source
        reference, counted = fp32_reference(model, info, input_size, check, SYNTHETIC_TIE_MARGIN if synthetic else 0.0)
        if synthetic:
            source += f", pixels within {SYNTHETIC_TIE_MARGIN} of a tie left out ({counted.mean():.0%} counted)"
        timing = np.resize(check, frame_shape + (3,))
        LOGGER.info("auto: measuring %s on %s frames (one-off for these weights, frame size and CPU; cached)",
                    ", ".join(by_name), "x".join(map(str, frame_shape)))
        measurements, backends = measure(candidates, build, check, reference, timing, counted=counted)
        name, rows = choose(measurements, skipped)
        built[name] = backends[name]
        decision = Decision(*name.split(" ", 1), rows, list(frame_shape), source, LOAD_PROCESSES,
                            round(time.perf_counter() - start, 1), time.strftime("%Y-%m-%d %H:%M:%S"))
        LOGGER.info("auto -> %s on %s (%s, flags %s; measured in %.1f s)\n%s", name, "cpu", cpu.model,
                    " ".join(cpu.reported_flags) or "none", decision.measured_s, "\n".join(decision.table_lines()))
        failed_here = [m.name for m in measurements if m.environmental]
        if failed_here:
            LOGGER.warning("auto: %s failed because of this machine's state (disk, permissions, memory); the decision "
                           "is used for this run only and measured again at the next start", ", ".join(failed_here))
            return Transient(decision.to_bytes())
        return decision.to_bytes()

    # remeasure: the previous decision stays in place until the new one is complete (a stopped
    # `tune --again` leaves it as it was)
    decision, path = cache.load_or_build(slot, key, measure_now, Decision.from_bytes, rebuild=remeasure)
    chosen = built.get(decision.name)
    if chosen is None:
        if decision.name not in by_name:
            raise BackendError(f"auto: the cached decision {path} names {decision.name!r}, which cannot run here; "
                               "delete the file or give backend and precision explicitly")
        LOGGER.info("auto -> %s (cached decision of %s, %s)", decision.name, decision.measured_at, path)
        chosen = build(by_name[decision.name])
    chosen.auto_decision = decision
    return chosen
