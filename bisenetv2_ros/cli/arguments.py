"""What the command lines share: argument types, size flags (old spellings kept alive), errors, progress.

Every size flag is HEIGHTxWIDTH (``conventions.size_argument``), the order of the node's
``input_height``/``input_width``. Flags that used to be spelled otherwise (``--height``/``--width``,
``--source-size WxH``, ``--size WxH``, ``--input-size H W``) still work: they are converted to
(height, width) and print one deprecation line on stderr naming the new spelling.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..conventions import size_argument


# Every number a command line takes has an upper bound, checked before anything is allocated
# (issue 32): counts up to ten million (iterations, frames), batches up to 256 frames per call, threads
# up to 1024, and factors up to 8 (scales) or 1 (opacities).
MAX_COUNT = 10_000_000
MAX_BATCH = 256
MAX_THREADS = 1024
MAX_SCALE = 8.0


def int_in_range(minimum: int, maximum: int, expected: str | None = None, too_large: str | None = None):
    """An argparse ``type=`` for integers in [minimum, maximum]; a bad value names what was expected
    (``too_large``: the words for a value above the maximum, default ``expected``)."""
    expected = expected or f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected {too_large or expected}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    parse.__name__ = f"int_in_range_{minimum}_{maximum}"
    return parse


def _int_at_least(minimum: int, expected: str, maximum: int = MAX_COUNT):
    return int_in_range(minimum, maximum, expected, f"{expected} up to {maximum}")


# counts that must be at least 1 (iterations, frames, limits)
positive_int = _int_at_least(1, "a positive integer")
# counts that may be 0 (e.g. competing busy processes, warm-up runs)
non_negative_int = _int_at_least(0, "0 or a positive integer")
batch_int = int_in_range(1, MAX_BATCH, "a positive integer", f"a batch of at most {MAX_BATCH} frames")
threads_int = int_in_range(1, MAX_THREADS, "a positive integer", f"at most {MAX_THREADS} threads")
pixel_count = int_in_range(1, 32768 * 32768, "a pixel count from 1 to 32768x32768 (1073741824)")


def float_in_range(low: float, high: float, low_open: bool = False):
    """An argparse ``type=`` for finite numbers in [low, high] ((low, high] with ``low_open``)."""
    expected = f"a finite number above {low:g}" if low_open else f"a finite number from {low:g}"
    too_large = f"{expected} and at most {high:g}" if low_open else f"{expected} to {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {too_large}, got {text!r}") from None
        if value > high:
            raise argparse.ArgumentTypeError(f"expected {too_large}, got {text!r}")
        if not (low < value if low_open else low <= value):  # NaN fails this too
            raise argparse.ArgumentTypeError(f"expected {expected if low_open else too_large}, got {text!r}")
        return value
    return parse


# factors that must be finite and above 0 (scales, rates)
positive_float = float_in_range(0.0, MAX_SCALE, low_open=True)
fraction = float_in_range(0.0, 1.0)  # opacities


def size_or_comma(text: str) -> tuple[int, int]:
    """``size_argument`` that also takes HEIGHT,WIDTH (`bisenetv2 segment --input-size 512,1024`)."""
    return size_argument(str(text).replace(",", "x"))


def warn_deprecated(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    print(f"{parser.prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)


def _width_by_height(text: str) -> tuple[int, int]:
    """The old camera spelling 'WIDTHxHEIGHT' -> (height, width)."""
    try:
        width, height = size_argument(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    return height, width


class _WidthByHeight(argparse.Action):
    """An old WIDTHxHEIGHT flag: stores (height, width) in the new flag's dest, says the new spelling."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, type=_width_by_height, metavar="WxH",
                         help=f"deprecated: WIDTHxHEIGHT; use {new_flag} HxW", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        height, width = values
        warn_deprecated(parser, f"{option_string} {width}x{height} (WIDTHxHEIGHT)", f"{self.new_flag} {height}x{width}")
        setattr(namespace, self.dest, values)


class _OneSide(argparse.Action):
    """An old --height or --width flag: replaces one side of the new flag's (height, width) value.

    The other side keeps the flag's default, or is None when the default is None (see ``complete``).
    """

    def __init__(self, option_strings, dest, side: int, new_flag: str, **kwargs):
        self.side, self.new_flag = side, new_flag
        super().__init__(option_strings, dest, type=positive_int, metavar="N",
                         help=f"deprecated: use {new_flag} HxW", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(parser, option_string, f"{self.new_flag} HxW")
        size = list(getattr(namespace, self.dest, None) or (None, None))
        size[self.side] = values
        setattr(namespace, self.dest, tuple(size))


def add_size(parser, flag: str, dest: str, help: str | None = None, default: tuple[int, int] | None = None,
             old_sides: tuple[str, str] | None = None, old_width_by_height: str | None = None) -> None:
    """``flag HxW`` into ``dest``, plus the flag's old spellings: ``old_sides`` (e.g. ("--height",
    "--width"), one side each) and ``old_width_by_height`` (e.g. "--source-size", WIDTHxHEIGHT)."""
    parser.add_argument(flag, dest=dest, type=size_argument, default=default, metavar="HxW", help=help)
    if old_sides:
        for side, old in enumerate(old_sides):
            parser.add_argument(old, dest=dest, action=_OneSide, side=side, new_flag=flag)
    if old_width_by_height:
        parser.add_argument(old_width_by_height, dest=dest, action=_WidthByHeight, new_flag=flag)


def complete(size: tuple | None, default: tuple[int, int] | None, flag: str) -> tuple[int, int] | None:
    """A size given by one old --height/--width flag gets its other side from ``default``;
    without a default that is an error naming ``flag``."""
    if size is None or None not in size:
        return size
    if default is None:
        raise SystemExit(f"give both --height and --width, or better {flag} HxW")
    return tuple(given if given is not None else fallback for given, fallback in zip(size, default))


class _SizeOrHeightWidth(argparse.Action):
    """``--input-size HxW``, or the old two-number form ``--input-size H W`` with a deprecation line."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 1:
            size = _parse_or_exit(parser, option_string, values[0])
        elif len(values) == 2 and all(v.isdigit() for v in values):
            size = _parse_or_exit(parser, option_string, "x".join(values))
            warn_deprecated(parser, f"{option_string} {values[0]} {values[1]}", f"{option_string} {size[0]}x{size[1]}")
        else:
            parser.error(f"argument {option_string}: expected HEIGHTxWIDTH such as 512x1024, got {' '.join(values)!r}")
        setattr(namespace, self.dest, size)


def _parse_or_exit(parser, option_string: str, text: str) -> tuple[int, int]:
    try:
        return size_argument(text)
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument {option_string}: {error}")


def add_size_accepting_two_numbers(parser, flag: str, help: str, default=None) -> None:
    """``flag HxW`` that also takes the old ``flag H W`` (training/evaluate.py's first spelling)."""
    parser.add_argument(flag, nargs="+", action=_SizeOrHeightWidth, default=default, metavar="HxW", help=help)


def script_main(doc: str, prog: str, add_arguments, run, argv=None) -> int:
    """``main()`` of a subcommand module run as ``python -m``: its own parser, its docstring as help."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


class CliError(Exception):
    """A user-facing failure: printed as one ``bisenetv2 CMD: error: ...`` message, exit status 1."""


# --------------------------------------------------------------------------------------------
# The error boundary of every entry point (the CLI's subcommands, training/*.py)

DEBUG_ENV = "BISENETV2_DEBUG"  # =1: tracebacks for expected errors too, as --debug


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser never resets a --debug given before the subcommand
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"show the traceback of an error instead of one line (also ${DEBUG_ENV}=1)")


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, a launch system shutting down) unwinds like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by the input, the settings or the machine, not by a bug: one line each.

    CheckpointError, MediaError, BagError, DatasetError and UnsafeOutput are ValueErrors; DownloadError
    is a RuntimeError of its own (other RuntimeErrors, TypeErrors, KeyErrors, ... are bugs: traceback).
    """
    from ..weights.download import DownloadError

    return CliError, ValueError, OSError, DownloadError


def error_line(error: BaseException) -> str:
    """The error's message; for an error re-raised from a DataLoader worker ("Caught ValueError in
    DataLoader worker process 0. Original Traceback ..."), the original message only."""
    text = str(error) or type(error).__name__
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def guarded(prog: str, action: Callable[[], object], debug: bool = False,
            stopped: str | Callable[[], str] = "nothing was written") -> int:
    """Runs ``action``; an expected failure becomes one ``PROG: error: ...`` line and exit status 1,
    Ctrl-C 130, SIGTERM 143 (both unwind through the staged outputs' cleanup, so nothing partial is
    left; ``stopped`` says what a stop leaves). ``debug`` (or $BISENETV2_DEBUG=1) re-raises expected
    failures with their traceback.
    Returns ``action``'s int result (0 for None)."""
    import signal

    debug = debug or debug_requested()
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signal handling to the caller
        previous = None
    try:
        result = action()
        return result if isinstance(result, int) else 0
    except Terminated:
        print(f"\n{prog}: terminated; {stopped() if callable(stopped) else stopped}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; {stopped() if callable(stopped) else stopped}", file=sys.stderr)
        return 130
    except expected_errors() as error:
        if debug:
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_script(prog: str, main: Callable[[list[str]], object], argv: list[str] | None = None,
               stopped: str | Callable[[], str] = "nothing was written") -> int:
    """The entry of a script (training/*.py): ``main(argv)`` inside ``guarded``; --debug in argv
    (the script's parser accepts it via ``add_debug_flag``) shows tracebacks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(prog, lambda: main(argv), debug="--debug" in argv, stopped=stopped)


def progress_bar(total: int | None, quiet: bool, unit: str = "frame", unit_scale: bool = False):
    from tqdm import tqdm

    return tqdm(total=total or None, unit=unit, unit_scale=unit_scale, disable=quiet, dynamic_ncols=True,
                file=sys.stderr)
