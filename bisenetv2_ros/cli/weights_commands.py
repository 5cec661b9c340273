"""The weights subcommands of ``bisenetv2``: download, info, import and export (their parsers are in cli/commands.py)."""

from __future__ import annotations

import json

from .arguments import CliError
from .arguments import progress_bar as _progress_bar


def cmd_download(args) -> int:
    from ..weights.download import download_weights
    from ..weights.known_weights import KNOWN_WEIGHTS, cache_dir

    if args.list:
        print(f"{'NAME':32} {'mIoU':>6} {'ms+flip':>8} {'CLASSES':>7}  {'DATASET':14} {'CHECKSUM':9} DESCRIPTION")
        for name, entry in KNOWN_WEIGHTS.items():
            miou = entry.info.metrics.get("val_miou")
            ms = entry.info.metrics.get("val_miou_ms_flip")
            where = "packaged" if entry.embedded else (
                "cached" if (cache_dir() / entry.file_name).is_file() else "not downloaded")
            checksum = "-" if entry.embedded else (entry.sha256_prefix or "none")
            print(f"{name:32} {_metric(miou):>6} {_metric(ms):>8} {len(entry.info.classes):>7}  "
                  f"{entry.info.dataset:14} {checksum:9} {entry.description} [{where}]")
        print(f"(mIoU: validation mean IoU in % as published, single scale, and multi-scale with flip; "
              f"checksum: the SHA-256 prefix the publisher states, checked on download; none: the publisher "
              f"states none, so a download is checked by importing it, every tensor's name and shape; "
              f"evaluate with training/evaluate.py --protocol <publisher>; cache: {cache_dir()})")
        return 0
    if not args.name:
        raise CliError("name the weights to download, or pass --list to see them")
    bar = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress_bar(total, args.quiet, "B", unit_scale=True)
        bar.update(done - bar.n)

    try:
        path, downloaded = download_weights(args.name, url=args.url, force=args.force, progress=progress)
    except OSError as error:  # a write into the cache failed: its OSError names no file
        from ..fileio import WRITE_ERRNOS, WriteError
        from ..weights.known_weights import find_known

        if isinstance(error, WriteError) or error.errno not in WRITE_ERRNOS or find_known(args.name) is None:
            raise
        raise WriteError(cache_dir() / find_known(args.name).file_name, error.strerror, error.errno,
                         "the weights cache ($BISENETV2_CACHE)") from error
    finally:
        if bar is not None:
            bar.close()
    state = "downloaded and verified" if downloaded else "already in the cache (checksum verified)"
    print(f"{args.name}: {state}: {path}")
    print(f"use it with `--weights {args.name}` or the node's parameter `weights:={args.name}`")
    return 0


def _metric(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _describe(weights: str) -> dict:
    """Everything known of a checkpoint path or weights name, as plain data."""
    from ..inference import calibration_store, ood  # noqa: F401 - each registers its checks of a checkpoint part
    from ..inference.calibration_table import summary as calibration_summary
    from ..weights.checkpoint import CheckpointError
    from ..weights.known_weights import find_known, open_weights, resolve_weights

    entry = find_known(weights)
    result: dict = {"weights": weights}
    if entry is not None:
        result["known_weights"] = {"description": entry.description, "family": entry.family,
                                   "url": entry.url, "sha256_prefix": entry.sha256_prefix,
                                   "file_name": entry.file_name, "protocol": entry.protocol}
    try:
        resolve_weights(weights)
    except CheckpointError as error:
        if entry is None:
            raise
        result.update(file=None, note=str(error))  # e.g. not downloaded yet: the entry says what it holds
        info = entry.info
    else:
        opened = open_weights(weights)
        checkpoint, info = opened.checkpoint, opened.info
        result["file"] = str(opened.path)
        result["kind"] = checkpoint.kind
        result["architecture"] = checkpoint.architecture
        result["model_config"] = checkpoint.config.to_dict()
        result["parameters"] = int(sum(v.numel() for k, v in checkpoint.state_dict.items()
                                       if v.is_floating_point() and "running_" not in k))
        if checkpoint.training_state:
            result["training_state"] = sorted(checkpoint.training_state)
        from ..weights.checkpoint_parts import part_reports

        # each part checked as data (the calibration table's checks are registered by calibration_table)
        result["parts"] = {r.name: {"present": r.present, "usable": r.present and r.problem is None,
                                    "problem": r.problem} for r in part_reports(checkpoint)}
    info_dict = info.to_dict()
    result.update(dataset=info_dict["dataset"], classes=info_dict["classes"], palette=info_dict["palette"],
                  normalization=info_dict["normalization"], train_resolution=info_dict["train_resolution"],
                  metrics=info_dict["metrics"], provenance=info_dict["provenance"],
                  int8_calibration=calibration_summary(info.calibration), ood_calibration=_ood_summary(info))
    return result


def _ood_summary(info) -> str:
    from ..inference.ood import OODCalibration, calibration_problem

    if info.ood is None:
        return "uncalibrated (bisenetv2 calibrate-ood WEIGHTS FRAMES_DIR)"
    problem = calibration_problem(info.ood, len(info.classes))
    if problem:
        return f"NOT usable: {problem} (frames are scored, never flagged; `bisenetv2 export` removes it)"
    return OODCalibration.from_dict(info.ood).summary()


def cmd_info(args) -> int:
    description = _describe(args.weights)
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    lines = [f"weights:          {description['weights']}"]
    if "known_weights" in description:
        known = description["known_weights"]
        lines.append(f"description:      {known['description']}")
        if known["url"]:
            checksum = (f"sha256 {known['sha256_prefix']}..." if known["sha256_prefix"] else
                        "no checksum published: checked by importing it")
            lines.append(f"url:              {known['url']} ({checksum})")
        if known["protocol"]:
            lines.append(f"published mIoU:   with training/evaluate.py --protocol {known['protocol']}")
    lines.append(f"file:             {description.get('file') or 'not downloaded: ' + description.get('note', '')}")
    if "kind" in description:
        config = description["model_config"]
        lines.append(f"kind:             {description['kind']} checkpoint, {description['parameters']:,} parameters")
        lines.append(f"model:            {description['architecture']}: " + ", ".join(f"{k}={v}" for k, v in config.items()))
        if "training_state" in description:
            lines.append(f"training state:   {', '.join(description['training_state'])}")
    resolution = description["train_resolution"]
    norm = description["normalization"]
    lines += [
        f"dataset:          {description['dataset']}",
        f"train resolution: {f'{resolution[0]}x{resolution[1]} (HxW)' if resolution else 'unknown'}",
        f"normalization:    mean {norm['mean']} std {norm['std']} (0..1 units, {norm['channel_order']} order)",
        f"classes ({len(description['classes'])}):",
    ]
    lines += [f"  {i:3d} {name:20} rgb{tuple(color)}"
              for i, (name, color) in enumerate(zip(description["classes"], description["palette"]))]
    metrics = description["metrics"]
    lines.append("metrics:          " + (", ".join(f"{k}={v:g}" for k, v in metrics.items()) or "none recorded"))
    provenance = description["provenance"]
    lines.append("provenance:       " + (", ".join(f"{k}={v}" for k, v in provenance.items()) or "none recorded"))
    lines.append("int8 calibration: " + description["int8_calibration"])
    lines.append("ood calibration:  " + description["ood_calibration"])
    if "parts" in description:
        lines.append("parts (checked as data):")
    for name, part in description.get("parts", {}).items():
        state = "usable" if part["usable"] else f"NOT usable: {part['problem']}" if part["present"] else "none"
        lines.append(f"  {name}: {state}")
    print("\n".join(lines))
    return 0


IMPORT = "bisenetv2 import"  # the command named in output records (output_safety)


def cmd_import(args) -> int:
    from ..fileio import writing
    from ..output_safety import check_output, record_file
    from ..weights.checkpoint import save_checkpoint
    from ..weights.importers import import_checkpoint

    check_output(args.output, IMPORT, [args.source], args.overwrite, folder=False, flag="OUT")
    checkpoint = import_checkpoint(args.source, family=args.family)
    with writing(args.output):  # its folder is made before the atomic write (which names the file itself)
        path = save_checkpoint(checkpoint, args.output, half=args.half)
    record_file(path, IMPORT)
    family = checkpoint.info.provenance.get("imported_from", "bisenetv2_ros")
    print(f"imported {args.source} ({family}, {checkpoint.config.num_classes} classes) -> {path}")
    return 0


def cmd_export(args) -> int:
    from ..weights.known_weights import open_weights
    from .export import export_checkpoint, request_from_args

    if not (args.output or args.onnx or args.engine):
        raise CliError("nothing to do: give --output (deploy checkpoint), --onnx and/or --engine")
    request = request_from_args(args, output=args.output, half=args.half, source=args.checkpoint)
    request.check()  # bad settings fail before the checkpoint is read
    result = export_checkpoint(open_weights(args.checkpoint).checkpoint, request)
    print("\n".join(result.lines()))
    return 0
