"""On-disk cache of built inference engines (TensorRT plans), independent of TensorRT itself.

One file per engine *slot* (model name, precision, frame shape, channel order). The file starts with a
header naming everything the engine depends on (ONNX hash, TensorRT version, GPU name, precision,
shapes) and the SHA-256 of the payload. A file whose header does not match the wanted key is stale;
one that cannot be parsed, fails its checksum or fails to deserialize is corrupt. Both are rebuilt
with a log line, never a crash. Files are written atomically (temporary file, fsync, rename), so a
crash mid-write never leaves a half file under the real name.

A cache is an optimisation, never a point of failure: a folder that cannot be written (read-only, a
file, no space, no permission) is one warning naming where the folder came from (``BISENETV2_CACHE``
or the option), and the run goes on with what it built, uncached. A payload built as ``Transient``
(e.g. an ``auto`` decision measured while the environment failed a candidate) is used, never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from ..fileio import write_atomic

LOGGER = logging.getLogger("bisenetv2_ros")
MAGIC = b"BSV2ENGINE\x01"
CACHE_ENV = "BISENETV2_CACHE"
Engine = TypeVar("Engine")
_warned_folders: set[str] = set()  # one warning per unusable folder and process
_warned_lock = threading.Lock()


class Transient(bytes):
    """A payload valid for this run only: ``load_or_build`` uses it and does not cache it."""


def folder_origin(directory: str | os.PathLike) -> str:
    """Where a cache folder came from, for messages: the variable, or the option that named it."""
    default = default_engine_cache_dir()
    if Path(directory) == default:
        variable = f"${CACHE_ENV}={os.environ[CACHE_ENV]}" if os.environ.get(CACHE_ENV) else f"${CACHE_ENV} unset"
        return f"the default cache folder ({variable})"
    return "the engine cache folder given (--engine-cache / engine_cache_dir)"


def warn_unusable_cache(directory: str | os.PathLike, error: OSError, kind: str) -> None:
    """One warning per folder and process: the cache is skipped, the run continues."""
    reason = error.strerror or str(error)
    with _warned_lock:
        if str(directory) in _warned_folders:
            return
        _warned_folders.add(str(directory))
    LOGGER.warning("%s cache %s is unusable (%s: %s); running uncached. Point %s or --engine-cache at a writable "
                   "folder to keep what is built", kind, directory, folder_origin(directory), reason, CACHE_ENV)


def default_engine_cache_dir() -> Path:
    """Where engines and int8 graphs are cached unless the user says: ``$BISENETV2_CACHE/engines``."""
    from ..weights.known_weights import cache_dir

    return cache_dir() / "engines"


class CacheEntryError(ValueError):
    """A cache file that is not a valid entry (truncated, bad header, bad checksum)."""


def slot_file_name(slot: Mapping[str, Any], suffix: str = ".engine") -> str:
    """A readable, filesystem-safe file name for a slot, e.g. 'tiny-fp16-1x720x1280-rgb.engine'."""
    text = "-".join(str(v) for v in slot.values())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) + suffix


def encode_entry(key: Mapping[str, Any], payload: bytes) -> bytes:
    header = json.dumps({"key": dict(key), "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)},
                        sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + payload


def decode_entry(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(key, payload) of a cache file's bytes; CacheEntryError if it is not intact."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise CacheEntryError("not an engine cache file (bad magic)")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + length].decode())
        key, digest, size = header["key"], header["sha256"], header["size"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CacheEntryError(f"unreadable header ({error})") from None
    payload = data[start + length:]
    if len(payload) != size:
        raise CacheEntryError(f"truncated payload ({len(payload)} of {size} bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CacheEntryError("payload checksum mismatch")
    return key, payload


class EngineCache:
    """``load_or_build(slot, key, build, deserialize)`` -> (engine, path).

    build() -> bytes makes a fresh serialized engine; deserialize(bytes) -> engine or None (None or an
    exception means the bytes are unusable). Keys are JSON-serialisable mappings. ``kind`` names what
    is cached in the log lines and ``suffix`` ends the file names: other artefacts than engines (the
    measured ``auto`` decisions) share the format.
    """

    def __init__(self, directory: str | os.PathLike, kind: str = "engine", suffix: str = ".engine") -> None:
        self.directory = Path(directory)
        self.kind, self.suffix = kind, suffix

    def path(self, slot: Mapping[str, Any]) -> Path:
        return self.directory / slot_file_name(slot, self.suffix)

    def load_or_build(self, slot: Mapping[str, Any], key: Mapping[str, Any], build: Callable[[], bytes],
                      deserialize: Callable[[bytes], Engine | None], rebuild: bool = False) -> tuple[Engine, Path]:
        """rebuild: ignore a cached entry; it is replaced only once the new one is complete."""
        path = self.path(slot)
        wanted = json.loads(json.dumps(dict(key), sort_keys=True))
        try:
            present, usable = path.is_file(), True
        except OSError as error:  # a folder name too long for the file system, a loop of links, ...
            warn_unusable_cache(self.directory, error, self.kind)
            present, usable = False, False
        if rebuild:
            LOGGER.info("%s: building %s again", self.kind, path)
        elif present:
            engine = self._try_load(path, wanted, deserialize)
            if engine is not None:
                LOGGER.info("%s cache hit: %s", self.kind, path)
                return engine, path
        else:
            LOGGER.info("%s cache miss: building %s", self.kind, path)
        built = build()
        payload = bytes(built)
        engine = deserialize(payload)
        if engine is None:
            raise RuntimeError(f"a freshly built {self.kind} for {path.name} could not be deserialized")
        if isinstance(built, Transient):
            LOGGER.warning("%s for %s used for this run only, not cached", self.kind, path.name)
            return engine, path
        if not usable:
            return engine, path
        try:
            write_atomic(path, encode_entry(wanted, payload))
        except OSError as error:
            warn_unusable_cache(self.directory, error, self.kind)
            return engine, path
        LOGGER.info("%s cached: %s (%.1f MiB)", self.kind, path, len(payload) / 2**20)
        return engine, path

    def _try_load(self, path: Path, wanted: dict, deserialize: Callable[[bytes], Engine | None]) -> Engine | None:
        try:
            key, payload = decode_entry(path.read_bytes())
        except (CacheEntryError, OSError) as error:
            LOGGER.warning("%s cache file %s is corrupt (%s); rebuilding", self.kind, path, error)
            return None
        if key != wanted:
            changed = sorted(k for k in set(key) | set(wanted) if key.get(k) != wanted.get(k))
            LOGGER.warning("%s cache file %s is stale (changed: %s); rebuilding", self.kind, path, ", ".join(changed))
            return None
        try:
            engine = deserialize(payload)
        except Exception as error:  # a plan from another build of the runtime may fail in many ways
            LOGGER.warning("%s cache file %s failed to deserialize (%s); rebuilding", self.kind, path, error)
            return None
        if engine is None:
            LOGGER.warning("%s cache file %s failed to deserialize; rebuilding", self.kind, path)
        return engine
