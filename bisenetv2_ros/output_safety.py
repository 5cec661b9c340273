"""Data safety, one rule for every command: nothing is deleted or replaced that the command did not write.

- An output is never an input, and never a folder holding an input (``segment img.jpg -o <its folder>``).
- An existing output is replaced only with ``--overwrite``, and then only when it is recognisably a
  previous output of the same command, unchanged since: every output carries a record of what was
  written. A folder output holds ``.bisenetv2-output.json`` (the command and every file with its
  size); a file output is listed, with its SHA-256, in ``.bisenetv2-outputs.json`` beside it. A folder
  that has gained any other file, a file that was edited, or anything without a record is refused.
- A regular file is never replaced by a folder, nor a folder by a file.
- Output names are unique per input (``distinct_names``), so two inputs never share one output file.
- A training run folder that already holds a run is refused unless the run is resumed
  (``check_run_folder``).

Refusals are ``UnsafeOutput`` (a ValueError): one line naming the path and what to do; they never
suggest ``--overwrite`` where overwriting would not be allowed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from .fileio import file_sha256, write_atomic

FOLDER_RECORD = ".bisenetv2-output.json"  # inside a folder output
FILE_RECORDS = ".bisenetv2-outputs.json"  # beside file outputs, one entry per file name
RUN_FILES = ("latest.pt", "best.pt", "log.jsonl", "config.yaml")  # what training/train.py writes


class UnsafeOutput(ValueError):
    """Writing this output would destroy an input or a file the command did not write."""


# --------------------------------------------------------------------------------------------
# Checking a target before anything is written


def check_output(target: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike] = (),
                 overwrite: bool = False, folder: bool = True, flag: str = "--output") -> Path:
    """Raises UnsafeOutput unless ``command`` may write ``target`` (a folder when ``folder``, else a
    file), given its ``inputs``; returns the absolute target. Nothing is touched."""
    target = Path(target).absolute()
    real = target.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == real:
            raise UnsafeOutput(f"{flag} {target} is the input {given}; write the output to another path")
        if source.is_relative_to(real):
            raise UnsafeOutput(f"{flag} {target} holds the input {given}; choose an {flag} outside the inputs "
                               "(an output folder is replaced as a whole)")
    if not os.path.lexists(target):
        return target
    if folder and not target.is_dir():
        raise UnsafeOutput(f"{flag} {target} is a file, and this output is a folder; choose another {flag}")
    if not folder and target.is_dir():
        raise UnsafeOutput(f"{flag} {target} is a folder; give a file name")
    problem = why_not_own(target, command)
    if not overwrite:
        hint = ("or pass --overwrite to replace it (it is a previous output of this command)" if problem is None
                else "or remove it yourself if it can go")
        raise UnsafeOutput(f"output {target} exists already; choose another {flag}, {hint}")
    if problem is not None:
        raise UnsafeOutput(f"--overwrite replaces only a previous output of `{command}`, and {target} is not one "
                           f"({problem}); choose another {flag}, or remove it yourself if it can go")
    return target


def why_not_own(target: Path, command: str) -> str | None:
    """None when ``target`` is an unchanged output of ``command``; else why it is not."""
    if target.is_symlink():
        return "it is a symbolic link"
    record = _read_json(target / FOLDER_RECORD) if target.is_dir() else _read_json(target.parent / FILE_RECORDS).get(target.name)
    if not record:
        return "it has no record of being written by bisenetv2"
    if record.get("command") != command:
        return f"it was written by `{record.get('command')}`"
    if target.is_dir():
        written = record.get("files", {})
        for path in sorted(target.rglob("*")):
            name = path.relative_to(target).as_posix()
            if (path.is_dir() and not path.is_symlink()) or name == FOLDER_RECORD:
                continue
            if path.is_symlink() or not path.is_file() or written.get(name) != path.stat().st_size:
                return f"{name} in it was not written by `{command}` or changed since"
        return None
    if record.get("sha256") != file_sha256(target):
        return "it changed since it was written"
    return None


def check_distinct(targets: dict[str, str | os.PathLike | None]) -> None:
    """Two outputs of one command (e.g. ``--output`` and ``--onnx``) must be different files."""
    seen: dict[Path, str] = {}
    for flag, path in targets.items():
        if path is None:
            continue
        real = Path(path).resolve()
        if real in seen:
            raise UnsafeOutput(f"{seen[real]} and {flag} name the same file {path}; give each its own file")
        seen[real] = flag


# --------------------------------------------------------------------------------------------
# Recording what was written


def record_folder(folder: str | os.PathLike, command: str) -> None:
    """Writes the record of a finished folder output (call it before the folder is renamed into place)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != FOLDER_RECORD}
    write_atomic(folder / FOLDER_RECORD, json.dumps({"command": command, "files": files}, indent=1).encode())


def record_file(path: str | os.PathLike, command: str) -> None:
    """Adds a written file to the record beside it."""
    path = Path(path).absolute()
    records = _read_json(path.parent / FILE_RECORDS)
    records[path.name] = {"command": command, "sha256": file_sha256(path)}
    write_atomic(path.parent / FILE_RECORDS, json.dumps(records, indent=1, sort_keys=True).encode())


# --------------------------------------------------------------------------------------------
# Names and run folders


def distinct_names(relatives: Sequence[Path], suffix: str) -> list[Path]:
    """Output paths (``suffix`` replacing the input's) for input paths relative to one root, one per
    input: inputs that share a stem in one folder (frame.jpg, frame.png) keep their extension in
    the name (frame.jpg.png, frame.png.png)."""
    def key(path: Path) -> tuple[str, str]:
        return path.parent.as_posix().lower(), path.stem.lower()

    counts: dict[tuple[str, str], int] = {}
    for path in relatives:
        counts[key(path)] = counts.get(key(path), 0) + 1
    return [path.with_name(path.name + suffix) if counts[key(path)] > 1 else path.with_suffix(suffix)
            for path in relatives]


def check_run_folder(folder: str | os.PathLike, resume: bool) -> None:
    """A training run folder that holds a run already is refused unless the run is resumed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnsafeOutput(f"run folder {folder} is a file; choose another --out-dir")
    if resume:
        return
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if found:
        raise UnsafeOutput(f"run folder {folder} holds a run already ({', '.join(found)}); pass --resume to "
                           "continue it, or --out-dir NEW_FOLDER for a new run")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
