"""Which frame shapes the node warms its network at during start-up, and remembering the real ones.

The first frame of a new shape (batch, height, width, channel order) pays what the backends do once
per shape: export and quantise a graph (ONNX Runtime: frames not at the model size run a second
graph), compile an engine (TensorRT, OpenVINO) or specialise kernels. Warming only at the network's
input size left all of that to the first camera frame. So the node warms, at start-up:

* the network's input size (as before: device problems surface at start-up),
* the sizes the cameras declare (parameter ``warmup_frame_sizes``, e.g. ``["480x640"]``),
* the shapes this node actually received on earlier runs (remembered in the engine cache folder,
  one small JSON file per node name): so from the second start on, the first real frame is warm
  without any parameter.

Each size is warmed in the channel orders frames can arrive in (compressed frames decode to bgr;
raw ones are bgr8 or rgb8) and at the batches the node forms (1, and every camera at once).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from ..conventions import DEFAULT_MAX_INPUT_PIXELS, parse_size
from ..fileio import write_atomic

LOGGER = logging.getLogger("bisenetv2_ros")
MAX_REMEMBERED = 8  # shapes kept per node (the most recent ones): a node sees a few camera sizes
MAX_REMEMBERED_BATCH = 64  # the node's max_batch range


class WarmupShape(NamedTuple):
    batch: int
    height: int
    width: int
    channel_order: str

    def text(self) -> str:
        return f"{self.height}x{self.width} {self.channel_order}" + (f" batch {self.batch}" if self.batch > 1 else "")


def parse_frame_sizes(values: Iterable[str]) -> list[tuple[int, int]]:
    """["480x640", ...] -> [(480, 640), ...]; a ValueError naming the first bad entry."""
    sizes = []
    for value in values:
        try:
            sizes.append(parse_size(str(value), max_pixels=None))  # checked against max_input_pixels
        except ValueError:
            raise ValueError(f"parameter 'warmup_frame_sizes': {value!r} is not HEIGHTxWIDTH (e.g. 480x640)") from None
    return sizes


def planned_shapes(input_size: tuple[int, int], declared: Iterable[tuple[int, int]], cameras: int,
                   compressed: bool, max_batch: int = 0, remembered: Iterable[WarmupShape] = ()) -> list[WarmupShape]:
    """The shapes to warm at start-up, in order, without repeats (see the module docstring)."""
    shapes = [WarmupShape(1, int(input_size[0]), int(input_size[1]), "rgb")]
    batch_all = min(cameras, max_batch) if max_batch else cameras
    batches = (1, batch_all) if batch_all > 1 else (1,)
    orders = ("bgr",) if compressed else ("bgr", "rgb")
    for height, width in declared:
        shapes += [WarmupShape(batch, height, width, order) for batch in batches for order in orders]
    shapes += list(remembered)
    return list(dict.fromkeys(shapes))


def warm_up(segmenter: Any, shapes: Iterable[WarmupShape], confidence: bool = False,
            log: Callable[[str], None] = LOGGER.info) -> None:
    """Runs one zero frame (batch) of each shape through ``segmenter`` -- through the graph with the
    confidence output when the node publishes it -- and logs what took long."""
    extra = {"confidence": True} if confidence else {}
    for shape in shapes:
        started = time.perf_counter()
        frames = np.zeros((shape.batch, shape.height, shape.width, 3), np.uint8)
        if shape.batch == 1:
            segmenter.segment(frames[0], channel_order=shape.channel_order, **extra)
        else:
            segmenter.segment_batch(frames, channel_order=shape.channel_order, **extra)
        seconds = time.perf_counter() - started
        if seconds >= 0.5:
            log(f"warm-up at {shape.text()}: {seconds:.1f} s")


def remembered_shapes_file(cache_dir: str | os.PathLike, node_name: str) -> Path:
    """Where a node (by its fully qualified name) remembers the frame shapes it received."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", node_name.strip("/")) or "node"
    return Path(cache_dir) / f"warmup-{safe}.json"


class RememberedShapes:
    """The frame shapes a node received, kept across starts in a small JSON file.

    A missing, unreadable or malformed file is an empty memory (logged once), never an error: it
    only decides what to warm up.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.shapes: list[WarmupShape] = self._read()

    def _read(self) -> list[WarmupShape]:
        if not self.path.is_file():
            return []
        try:
            entries = json.loads(self.path.read_text())["shapes"]
            shapes = [WarmupShape(int(b), int(h), int(w), str(o)) for b, h, w, o in entries]
            # bounded as every input: a tampered file must not make the next start allocate a huge warm-up
            if not all(1 <= s.batch <= MAX_REMEMBERED_BATCH and 1 <= s.height and 1 <= s.width
                       and s.height * s.width <= DEFAULT_MAX_INPUT_PIXELS and s.channel_order in ("rgb", "bgr")
                       for s in shapes):
                raise ValueError("a shape out of range")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            LOGGER.warning("remembered warm-up shapes %s are unreadable (%s); starting without them", self.path, error)
            return []
        return shapes[-MAX_REMEMBERED:]

    def record(self, shape: WarmupShape) -> bool:
        """Remembers ``shape``; True when it was new (and the file was written)."""
        shape = WarmupShape(*shape)
        if shape in self.shapes:
            return False
        self.shapes = (self.shapes + [shape])[-MAX_REMEMBERED:]
        try:
            write_atomic(self.path, json.dumps({"shapes": [list(s) for s in self.shapes]}).encode())
        except OSError as error:  # a read-only cache folder costs the next start its warm-up, nothing else
            LOGGER.warning("cannot remember warm-up shapes in %s (%s)", self.path, error)
        return True
