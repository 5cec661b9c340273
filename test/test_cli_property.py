"""A property over every command line (issue 32, rule 7): each `bisenetv2` subcommand and training
script, fed values generated from its own argument parser (out of range, NaN, infinite, huge, empty,
odd), refuses each one before any work: no traceback, exit status 2, one error line naming the flag,
nothing written. In-process (the parsers are walked through ``parser._actions``), well within a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import os
import re
from pathlib import Path

import pytest

from bisenetv2_ros.cli import commands

REPO = Path(__file__).resolve().parents[1]


def training_scripts() -> list[str]:
    """Every training/*.py with a command line (``if __name__ == "__main__"``), found, not listed."""
    return sorted(path.stem for path in (REPO / "training").glob("*.py")
                  if re.search(r"""^if __name__ == ["']__main__["']:""", path.read_text(), re.MULTILINE))


TRAINING_SCRIPTS = training_scripts()
# What a careless or hostile user types for a number or a size
BAD_VALUES = ("nan", "inf", "-inf", "-1", "1e400", "99999999999999999999", "99999x99999", "0x0", "", "1,2,x",
              "\u00bd", "0x" + "9" * 40)


class _Captured(Exception):
    pass


def _parser_of(main) -> argparse.ArgumentParser:
    """The parser a script's main() builds: caught as it starts to parse."""
    caught = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        caught.append(self)
        raise _Captured

    argparse.ArgumentParser.parse_args = capture
    try:
        with contextlib.suppress(_Captured):
            main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught[0]


def entry_points() -> dict[str, tuple[argparse.ArgumentParser, object, list[str]]]:
    """{name: (parser, main(argv), argv prefix selecting it)} of every command line."""
    found = {}
    for action in commands.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                found[f"bisenetv2 {name}"] = (parser, commands.main, [name])
    for script in TRAINING_SCRIPTS:
        module = importlib.import_module(f"training.{script}")
        if "argv" in inspect.signature(module.main).parameters:  # else test_every_training_script_takes_argv fails
            found[f"training/{script}.py"] = (_parser_of(module.main), module.main, [])
    return found


ENTRY_POINTS = entry_points()


def typed_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Options that take a value of a type other than free text (numbers, sizes, scales, choices)."""
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.help != argparse.SUPPRESS
            and (a.choices is not None or a.type not in (None, str, Path))
            and not isinstance(a, argparse._SubParsersAction)]


def required_arguments(parser: argparse.ArgumentParser) -> list[str]:
    argv = []
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            argv += ["missing-input.png"] * (action.nargs if isinstance(action.nargs, int) else 1)
        elif action.required:
            argv += [action.option_strings[0], "x"]
    return argv


def test_every_training_script_takes_argv():
    """Its ``main(argv=None)`` parses ``argv``, not ``sys.argv`` (what this test and other callers pass)."""
    assert {"train", "evaluate", "export", "promote", "overlays", "benchmark_step", "confidence_resolution",
            "gpu_check"} <= set(TRAINING_SCRIPTS), TRAINING_SCRIPTS
    for script in TRAINING_SCRIPTS:
        parameters = inspect.signature(importlib.import_module(f"training.{script}").main).parameters
        assert "argv" in parameters and parameters["argv"].default is None, f"training/{script}.py: main(argv=None)"


def test_every_entry_point_is_walked():
    names = set(ENTRY_POINTS)
    assert {"bisenetv2 segment", "bisenetv2 export", "bisenetv2 tune", "bisenetv2 benchmark", "training/train.py",
            "training/evaluate.py", "training/export.py"} <= names, sorted(names)
    assert sum(len(typed_options(parser)) for parser, _, _ in ENTRY_POINTS.values()) >= 40


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_bad_values_are_refused_in_one_line_before_any_work(name, tmp_path, monkeypatch):
    parser, main, prefix = ENTRY_POINTS[name]
    monkeypatch.chdir(tmp_path)
    required = required_arguments(parser)
    accepted = []
    for action in typed_options(parser):
        flag = action.option_strings[0]
        count = action.nargs if isinstance(action.nargs, int) else 1
        for value in BAD_VALUES:
            if action.choices is not None and value in action.choices:
                continue
            argv = prefix + [flag, *[value] * count] + required
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as stopped:
                    code = stopped.code
            text = err.getvalue()
            errors = [line for line in text.splitlines() if ": error: " in line]
            if code != 2 or "Traceback" in text or len(errors) != 1 or flag not in errors[0]:
                accepted.append(f"{flag} {value!r}: exit {code}, {text.strip().splitlines()[-1:]!r}")
    assert not accepted, f"{name} took or mishandled: " + "; ".join(accepted[:12])
    assert os.listdir(tmp_path) == [], "nothing may be written"
