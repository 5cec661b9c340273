"""Engine cache logic with a stand-in builder: no TensorRT needed."""

from __future__ import annotations

import logging
import os

import pytest

from bisenetv2_ros.inference import engine_cache
from bisenetv2_ros.inference.engine_cache import EngineCache, decode_entry, encode_entry

SLOT = {"name": "tiny", "precision": "fp16", "shape": "1x720x1280", "order": "rgb"}
KEY = {"onnx_sha256": "ab" * 32, "tensorrt": "10.3.0", "gpu": "NVIDIA Orin", "precision": "fp16",
       "frame_shape": [1, 720, 1280]}


class StandInBuilder:
    """Counts builds; 'engines' are byte strings that deserialize to themselves when well-formed."""

    def __init__(self, payload: bytes = b"ENGINE:v1") -> None:
        self.payload = payload
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return self.payload

    @staticmethod
    def deserialize(data: bytes):
        return data.decode() if data.startswith(b"ENGINE:") else None


def load(cache: EngineCache, builder: StandInBuilder, key=KEY):
    return cache.load_or_build(SLOT, key, builder.build, builder.deserialize)


def test_miss_builds_and_hit_reuses(tmp_path, caplog):
    cache, builder = EngineCache(tmp_path / "engines"), StandInBuilder()
    with caplog.at_level(logging.INFO, logger="bisenetv2_ros"):
        engine, path = load(cache, builder)
        again, path2 = load(cache, builder)
    assert engine == again == "ENGINE:v1" and path == path2
    assert builder.builds == 1
    assert path.name == "tiny-fp16-1x720x1280-rgb.engine"
    assert decode_entry(path.read_bytes()) == (KEY, b"ENGINE:v1")
    assert "engine cache hit" in caplog.text


@pytest.mark.parametrize("field,value", [("tensorrt", "10.4.0"), ("gpu", "NVIDIA RTX 4090"),
                                         ("onnx_sha256", "cd" * 32), ("frame_shape", [2, 720, 1280])])
def test_stale_entry_is_rebuilt_with_a_log_line(tmp_path, caplog, field, value):
    cache = EngineCache(tmp_path)
    load(cache, StandInBuilder(b"ENGINE:old"))
    builder = StandInBuilder(b"ENGINE:new")
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        engine, path = load(cache, builder, {**KEY, field: value})
    assert engine == "ENGINE:new" and builder.builds == 1
    assert f"stale (changed: {field})" in caplog.text
    assert decode_entry(path.read_bytes())[0][field] == value


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "empty", "bad_header"])
def test_corrupt_entry_is_rebuilt_never_a_crash(tmp_path, caplog, damage):
    cache = EngineCache(tmp_path)
    _, path = load(cache, StandInBuilder())
    data = path.read_bytes()
    damaged = {
        "truncate": data[:-3],
        "flip_byte": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "garbage": os.urandom(64),
        "empty": b"",
        "bad_header": engine_cache.MAGIC + (5).to_bytes(4, "little") + b"{nope" + b"ENGINE:v1",
    }[damage]
    path.write_bytes(damaged)
    builder = StandInBuilder()
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        engine, _ = load(cache, builder)
    assert engine == "ENGINE:v1" and builder.builds == 1
    assert "corrupt" in caplog.text
    assert decode_entry(path.read_bytes()) == (KEY, b"ENGINE:v1")


def test_entry_that_fails_to_deserialize_is_rebuilt(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    # An intact file whose plan the runtime rejects (e.g. written by another TensorRT build).
    cache.path(SLOT).write_bytes(encode_entry(KEY, b"PLAN-FROM-ELSEWHERE"))
    builder = StandInBuilder()
    with caplog.at_level(logging.WARNING, logger="bisenetv2_ros"):
        engine, _ = load(cache, builder)
    assert engine == "ENGINE:v1" and builder.builds == 1
    assert "failed to deserialize" in caplog.text


def test_write_is_atomic(tmp_path, monkeypatch, caplog):
    cache = EngineCache(tmp_path)
    _, path = load(cache, StandInBuilder(b"ENGINE:old"))
    before = path.read_bytes()

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_cache.os, "fsync", crash)
    monkeypatch.setattr(engine_cache, "_warned_folders", set())
    # a cache that cannot be written is a warning, not a failure: the fresh engine is used uncached
    engine, _ = load(cache, StandInBuilder(b"ENGINE:new"), {**KEY, "tensorrt": "10.9.0"})
    assert engine is not None and "No space left on device" in caplog.text and "running uncached" in caplog.text
    assert path.read_bytes() == before  # the old entry is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind


def test_builder_failure_propagates_and_writes_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def failing_build() -> bytes:
        raise RuntimeError("TensorRT failed to build")

    with pytest.raises(RuntimeError, match="failed to build"):
        cache.load_or_build(SLOT, KEY, failing_build, StandInBuilder.deserialize)
    assert list(tmp_path.iterdir()) == []
