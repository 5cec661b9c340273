"""Writes the export files: deployment checkpoints, ONNX models of the fused pipeline, TensorRT engines.

The graphs come from ``inference/onnx_graph.py`` and the engines from ``inference/tensorrt_backend.py``;
this module decides what to write and writes it all or nothing. What can fail (no TensorRT, no GPU,
a graph check, the engine build) is checked or done before the first file is moved into place, and
the files are staged under temporary names beside their targets, so a failed export leaves nothing.

    export_onnx("camvid", "model.onnx", input_size=(512, 1024), frame_size="dynamic")
    export_checkpoint(checkpoint, ExportRequest(output="deploy.pt", onnx="model.onnx"))

Command line: ``bisenetv2 export`` (its graph and engine flags are ``add_arguments``).
``python -m bisenetv2_ros.export WEIGHTS OUT.onnx`` is the older spelling: it still works and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from ..conventions import CHANNEL_ORDERS, DEFAULT_INPUT_SIZE, DEFAULT_WORKSPACE_GIB, size_argument
from ..fileio import WriteError, write_atomic, writing

# The graph builder's names stay importable from here (they lived here before); torch, the
# checkpoint format and TensorRT load only when something is exported, so `bisenetv2 --help`
# (which builds the export flags) stays instant.
from ..inference.onnx_graph import EXPORTERS, MIN_OPSET, channels_last_tail_onnx, check_onnx, fused_onnx_bytes
from ..output_safety import UnsafeOutput, check_distinct, check_output, record_file
from .arguments import add_debug_flag, batch_int, debug_requested, guarded, int_in_range

if TYPE_CHECKING:
    import torch

    from ..weights.checkpoint import Checkpoint, CheckpointInfo

__all__ = ["EXPORTERS", "MIN_OPSET", "ExportRequest", "ExportResult", "add_arguments", "build_tensorrt_engine",
           "channels_last_tail_onnx", "check_onnx", "export_checkpoint", "export_onnx", "fused_onnx_bytes", "main",
           "request_from_args", "staged_files"]

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

# ONNX opsets the exporters write; below MIN_OPSET the request's check says why
opset_int = int_in_range(1, 30, f"an ONNX opset from {MIN_OPSET} to 30")


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """What to write. output: deploy checkpoint; onnx: ONNX model; engine: TensorRT engine cache folder.

    input_size: network (height, width), default the checkpoint's training resolution. The ONNX model
    takes any batch and frame size unless ``fixed_shape``: then exactly ``batch`` frames of
    ``frame_size`` (each left dynamic when None). The engine is built for ``batch`` (default 1) frames
    of ``frame_size`` (default the input size), from the graph the tensorrt backend builds itself, so
    the backend finds it in its cache. channels_last_tail: the ONNX file's CPU layout (see
    ``onnx_graph.channels_last_tail_onnx``); engines always get the plain graph.

    command, inputs, overwrite: the data-safety rule (``output_safety``): no target may be an input,
    and an existing target is replaced only with ``overwrite`` and only when it is an unchanged
    previous output of ``command``.
    """

    output: Path | None = None
    half: bool = False
    onnx: Path | None = None
    engine: Path | None = None
    input_size: tuple[int, int] | None = None
    frame_size: tuple[int, int] | None = None
    batch: int | None = None
    fixed_shape: bool = False
    precision: str = "fp16"
    calibration_images: Path | None = None
    channel_order: str = "rgb"
    opset: int = MIN_OPSET
    exporter: str = "legacy"
    channels_last_tail: bool = False
    command: str = "bisenetv2 export"
    inputs: tuple[Path, ...] = ()
    overwrite: bool = False

    def check(self) -> None:
        """A ValueError naming the first bad setting; nothing is loaded or written yet."""
        if not (self.output or self.onnx or self.engine):
            raise ValueError("nothing to export: ask for a deploy checkpoint, an ONNX model and/or an engine")
        if self.precision not in ENGINE_PRECISIONS:
            raise ValueError(f"engine precision must be one of {ENGINE_PRECISIONS}, got {self.precision!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET} (the fused graph uses opset-17 operators), got {self.opset}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        self.check_targets()
        if self.engine is not None and Path(self.engine).is_file():
            raise ValueError(f"the engine cache {self.engine} is a file; give a folder")

    def check_targets(self) -> None:
        """UnsafeOutput unless every file target may be written (see ``output_safety``)."""
        check_distinct({"--output": self.output, "--onnx": self.onnx})
        if self.onnx is not None and Path(self.onnx).suffix.lower() in CHECKPOINT_SUFFIXES:
            raise UnsafeOutput(f"--onnx {self.onnx}: that is a checkpoint's name; an ONNX model's file ends in .onnx")
        if self.output is not None and Path(self.output).suffix.lower() == ".onnx":
            raise UnsafeOutput(f"--output {self.output}: that is an ONNX model's name; a deploy checkpoint ends in .pt "
                               "(use --onnx for the ONNX model)")
        for flag, path in (("--output", self.output), ("--onnx", self.onnx)):
            if path is not None:
                check_output(path, self.command, self.inputs, self.overwrite, folder=False, flag=flag)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    source_kind: str
    input_size: tuple[int, int]
    half: bool = False
    precision: str = "fp16"
    deploy: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    frame_shape: tuple[int, int, int] | None = None
    int8_ranges: str | None = None  # what happened to the deploy checkpoint's int8 calibration table
    ood: str | None = None  # and to its out-of-distribution calibration (inference/ood_calibration.py)

    def lines(self) -> list[str]:
        """One line per file written, for the user."""
        lines = []
        if self.deploy:
            lines.append(f"deploy checkpoint ({self.source_kind} -> deploy{', fp16' if self.half else ''}) -> {self.deploy}")
            if self.int8_ranges:
                lines.append(f"  int8 calibration table: {self.int8_ranges}")
            if self.ood:
                lines.append(f"  ood calibration: {self.ood}")
        if self.onnx:
            lines.append(f"ONNX model (uint8 frames in, uint8 labels out; network {self.input_size[0]}x{self.input_size[1]}) "
                         f"-> {self.onnx}")
        if self.engine and self.frame_shape:
            lines.append(f"TensorRT {self.precision} engine for {'x'.join(map(str, self.frame_shape))} frames -> {self.engine}")
        return lines


def export_checkpoint(checkpoint: Checkpoint, request: ExportRequest) -> ExportResult:
    """Writes what ``request`` asks for from ``checkpoint`` (any kind: booster heads and training state
    are dropped). All or nothing: on any error no output file exists afterwards."""
    from ..inference.calibration_store import deploy_calibration
    from ..inference.ood_calibration import deploy_ood_calibration
    from ..inference.tensorrt_backend import prebuild_engine, require_engine_build
    from ..weights.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    request.check()
    if request.engine is not None:
        require_engine_build(request.precision, request.calibration_images)  # before anything is written
    record = lambda path: record_file(path, request.command)  # noqa: E731 (what --overwrite recognises)
    deploy = Checkpoint.from_model(checkpoint.build_model(for_inference=True), checkpoint.info, kind="deploy")
    written: dict[str, Path] = {}
    int8_ranges = ood = None
    with staged_files(on_moved=record) as stage:
        if request.output is not None:
            staged = stage(request.output)
            save_checkpoint(deploy, staged, half=request.half)
            # Measured on the weights exactly as stored (rounded to fp16 with --half), as the graphs are.
            int8_ranges = deploy_calibration(staged, request.calibration_images)
            ood = deploy_ood_calibration(staged)
            deploy = load_checkpoint(staged)
            written["deploy"] = Path(request.output)
        model, info = deploy.build_model(for_inference=True), deploy.info
        size = tuple(request.input_size or info.train_resolution or DEFAULT_INPUT_SIZE)
        if request.onnx is not None:
            fixed = request.fixed_shape
            data = fused_onnx_bytes(model, info.normalization, size, (fixed and request.frame_size) or "dynamic",
                                    request.channel_order, request.batch if fixed else None, request.opset,
                                    request.exporter, channels_last_tail=request.channels_last_tail)
            write_atomic(stage(request.onnx), data)
            written["onnx"] = Path(request.onnx)
        frame_shape = None
        if request.engine is not None:
            frame_shape = (request.batch or 1, *(request.frame_size or size))
            written["engine"] = prebuild_engine(model, info.normalization, size, frame_shape, request.precision,
                                                request.channel_order, request.engine,
                                                calibration_images=request.calibration_images)
    return ExportResult(checkpoint.kind, size, request.half, request.precision, frame_shape=frame_shape,
                        int8_ranges=int8_ranges, ood=ood, **written)


@contextmanager
def staged_files(on_moved=lambda target: None) -> Iterator:
    """``stage(target)`` -> a temporary path beside ``target``. Leaving the block without an error
    moves every staged file onto its target (then calls ``on_moved(target)``); on an error (Ctrl-C
    included) the staged files, and the folders made for them, are removed, and no target is touched."""
    moves: list[tuple[Path, Path]] = []
    made: list[Path] = []

    def stage(target: str | os.PathLike) -> Path:
        target = Path(target)
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            made.extend(missing)  # deepest first
            # the temporary name keeps only the start of the target's: a valid name stays valid
            handle, name = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".partial", dir=target.parent)
        os.close(handle)
        moves.append((Path(name), target))
        return Path(name)

    try:
        yield stage
    except BaseException as error:
        for staged, _ in moves:
            staged.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: something else lives there now
                pass
        targets = {str(staged): target for staged, target in moves}
        if isinstance(error, WriteError) and error.filename in targets:  # the name asked for, not the temporary one
            raise WriteError(targets[error.filename], error.strerror, error.errno, error.what) from error
        raise
    moved: list[Path] = []
    try:
        for staged, target in moves:
            with writing(target):
                os.replace(staged, target)
            moved.append(target)
            on_moved(target)
    except BaseException:  # all or nothing: the staged files, and the targets moved before, go
        for staged, target in moves:
            staged.unlink(missing_ok=True)
            if target in moved:
                target.unlink(missing_ok=True)
        raise


def export_onnx(weights: str | os.PathLike | torch.nn.Module | None = None, out_path: str | os.PathLike = "bisenetv2.onnx",
                input_size: tuple[int, int] | None = None, frame_size: tuple[int, int] | str | None = "dynamic",
                opset: int = MIN_OPSET, channel_order: str = "rgb", batch: int | None = None,
                exporter: str = "legacy", info: CheckpointInfo | None = None, channels_last_tail: bool = False) -> Path:
    """Writes the fused pipeline of a checkpoint (path or known name, default the package's default
    weights; or a model plus ``info``) as ONNX.

    input_size: the network resolution (default: the checkpoint's training resolution, else 512x1024).
    channels_last_tail: faster on ONNX Runtime's CPU provider (see ``channels_last_tail_onnx``).
    Returns the path. The file is written atomically and passes ``onnx.checker``.
    """
    import torch

    from ..weights.known_weights import DEFAULT_WEIGHTS, load_model

    if isinstance(weights, torch.nn.Module):
        if info is None:
            raise ValueError("export_onnx(model, ...) needs info= (normalization and classes) with a bare model")
        model = weights
    else:
        model, info = load_model(DEFAULT_WEIGHTS if weights is None else weights)
    size = tuple(input_size or info.train_resolution or DEFAULT_INPUT_SIZE)
    data = fused_onnx_bytes(model.eval(), info.normalization, size, frame_size, channel_order, batch, opset, exporter,
                            channels_last_tail=channels_last_tail)
    return write_atomic(Path(out_path), data)


def build_tensorrt_engine(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, precision: str = "fp16",
                          frame_shape: tuple[int, int, int] = (1, *DEFAULT_INPUT_SIZE),
                          workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                          calibration_images: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Builds (or finds up to date in the cache) the TensorRT engine of an exported ONNX file.

    frame_shape: (batch, height, width) of the uint8 frames the engine is built for. Returns the
    engine cache file. Needs TensorRT and a GPU; int8 needs ``calibration_images`` (a folder).
    ``export_checkpoint`` builds the engine the tensorrt backend itself looks for; this one keys the
    cache by the given file's bytes and name.
    """
    from ..inference.tensorrt_backend import build_engine_cached, require_engine_build

    require_engine_build(precision, calibration_images)
    return build_engine_cached(Path(onnx_path).read_bytes(), Path(cache_dir), precision, tuple(frame_shape),
                               workspace_gib=workspace_gib, calibration_images=calibration_images,
                               name=name or Path(onnx_path).stem)


# --------------------------------------------------------------------------------------------
# Command-line flags shared by `bisenetv2 export` and training/export.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ONNX and engine flags (the deploy checkpoint's own flags belong to each command)."""
    parser.add_argument("--onnx", type=Path, default=None, metavar="PATH", help="also export an ONNX model (.onnx)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files this command wrote before (never an input or a file it did not write)")
    parser.add_argument("--engine", type=Path, default=None, metavar="CACHE_DIR",
                        help="also build a TensorRT engine into this engine cache folder (the node's "
                             "engine_cache_dir); needs a GPU and TensorRT")
    parser.add_argument("--input-size", type=size_argument, default=None, metavar="HxW",
                        help="network input size of the ONNX model / engine (default: the checkpoint's training resolution)")
    parser.add_argument("--frame-size", type=size_argument, default=None, metavar="HxW",
                        help="camera frame size the engine is built for (default: the input size); the ONNX "
                             "model accepts any frame size unless --fixed-shape")
    parser.add_argument("--batch", type=batch_int, default=None, metavar="N",
                        help="engine batch size (default: 1); the ONNX model's too with --fixed-shape")
    parser.add_argument("--fixed-shape", action="store_true",
                        help="export the ONNX model for exactly --batch frames of --frame-size (default: any)")
    parser.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp16",
                        help="TensorRT engine precision (default: fp16)")
    parser.add_argument("--calibration-images", type=Path, default=None, metavar="DIR",
                        help="folder of representative frames for an int8 engine, and for the int8 activation "
                             "ranges stored in the deploy checkpoint (default: its training frames, where known)")
    parser.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="rgb",
                        help="channel order of the frames the model / engine will get (default: rgb)")
    parser.add_argument("--opset", type=opset_int, default=MIN_OPSET, help=f"ONNX opset (default: {MIN_OPSET})")
    parser.add_argument("--exporter", choices=EXPORTERS, default="legacy", help="torch's ONNX exporter (default: legacy)")
    parser.add_argument("--channels-last-tail", action="store_true",
                        help="upsample and argmax channels-last in the ONNX model: faster on ONNX Runtime CPU")


def request_from_args(args: argparse.Namespace, output: Path | None = None, half: bool = False,
                      command: str = "bisenetv2 export", source: str | None = None) -> ExportRequest:
    """An ExportRequest from ``add_arguments``' flags plus the command's own deploy checkpoint;
    ``source``: the checkpoint given (a path is an input no target may replace; a known name is not)."""
    inputs = (Path(source),) if source is not None and Path(source).exists() else ()
    return ExportRequest(output=output, half=half, onnx=args.onnx, engine=args.engine, input_size=args.input_size,
                         frame_size=args.frame_size, batch=args.batch, fixed_shape=args.fixed_shape,
                         precision=args.precision, calibration_images=args.calibration_images,
                         channel_order=args.channel_order, opset=args.opset, exporter=args.exporter,
                         channels_last_tail=args.channels_last_tail, command=command, inputs=inputs,
                         overwrite=args.overwrite)


# --------------------------------------------------------------------------------------------
# python -m bisenetv2_ros.export (the older command; `bisenetv2 export` does the same and more)

OLD_PROG = "python -m bisenetv2_ros.export"
DEPRECATION = (f"{OLD_PROG} is deprecated: use `bisenetv2 export WEIGHTS --onnx OUT.onnx` (--tensorrt P "
               "--engine-cache DIR becomes --engine DIR --precision P; a fixed --frame-size/--batch needs --fixed-shape)")


def _frame_size(text: str) -> tuple[int, int] | str:
    return text if text == "dynamic" else size_argument(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=OLD_PROG, description="Export the fused pipeline to ONNX (deprecated: "
                                                               "use `bisenetv2 export`).")
    parser.add_argument("weights", help="checkpoint path or known weights name")
    parser.add_argument("out", type=Path, help="ONNX file to write")
    parser.add_argument("--input-size", type=size_argument, default=None, help="network HEIGHTxWIDTH (default: checkpoint's)")
    parser.add_argument("--frame-size", type=_frame_size, default="dynamic", help="frame HEIGHTxWIDTH or 'dynamic'")
    parser.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="rgb")
    parser.add_argument("--batch", type=batch_int, default=None, help="fixed batch size (default: dynamic)")
    parser.add_argument("--opset", type=opset_int, default=MIN_OPSET)
    parser.add_argument("--exporter", choices=EXPORTERS, default="legacy")
    parser.add_argument("--channels-last-tail", action="store_true",
                        help="upsample and argmax channels-last: faster on ONNX Runtime CPU")
    parser.add_argument("--tensorrt", choices=ENGINE_PRECISIONS, default=None,
                        help="also prebuild a TensorRT engine of this precision (build only, nothing is run)")
    parser.add_argument("--engine-cache", type=Path, default=Path("engines"), help="engine cache folder for --tensorrt")
    parser.add_argument("--calibration-images", type=Path, default=None, help="folder of images for int8 calibration")
    parser.add_argument("--overwrite", action="store_true", help="replace an ONNX file this command wrote before")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    print(DEPRECATION, file=sys.stderr)
    fixed = args.frame_size != "dynamic"
    request = ExportRequest(onnx=args.out, engine=args.engine_cache if args.tensorrt else None,
                            input_size=args.input_size, frame_size=args.frame_size if fixed else None,
                            batch=args.batch, fixed_shape=True, precision=args.tensorrt or "fp16",
                            calibration_images=args.calibration_images, channel_order=args.channel_order,
                            opset=args.opset, exporter=args.exporter, channels_last_tail=args.channels_last_tail,
                            command=OLD_PROG, inputs=(Path(args.weights),) if Path(args.weights).exists() else (),
                            overwrite=args.overwrite)

    def run() -> int:
        from ..weights.checkpoint import Checkpoint
        from ..weights.known_weights import load_model

        request.check()
        model, info = load_model(args.weights)
        result = export_checkpoint(Checkpoint.from_model(model, info), request)
        print(f"wrote {result.onnx}")
        if result.engine:
            print(f"engine {result.engine}")
        return 0

    return guarded(OLD_PROG, run, debug=debug_requested(args))


if __name__ == "__main__":
    raise SystemExit(main())
