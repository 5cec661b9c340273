"""The int8 calibration table a checkpoint carries: measured once, keyed by the weights, enough for int8
with no dataset anywhere (a copy of the checkout moved away from ../shared/data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAMVID_DIR
from test_backends import random_frames

from bisenetv2_ros.inference import int8
from bisenetv2_ros.inference.backends import BackendError
from bisenetv2_ros.inference.calibration_store import (
    calibrate_checkpoint_file,
    deploy_calibration,
    embed_calibration_table,
    measure_calibration_table,
)
from bisenetv2_ros.inference.calibration_table import CALIBRATION_TABLE_VERSION, network_fingerprint, table_problem
from bisenetv2_ros.inference.onnx_graph import fused_onnx_bytes
from bisenetv2_ros.weights.checkpoint import load_checkpoint
from bisenetv2_ros.weights.known_weights import PACKAGE_WEIGHTS_DIR, load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_model(tiny_weights)


@pytest.fixture(scope="module")
def tiny_table(tiny):
    model, info = tiny
    frames = random_frames((4, *info.train_resolution), seed=11)
    return frames, measure_calibration_table(model, info.normalization, info.train_resolution,
                                             int8.CalibrationSet(frames), "random frames")


def test_stored_ranges_give_the_graph_that_calibrating_on_the_frames_gives(tiny, tiny_table):
    model, info = tiny
    frames, table = tiny_table
    assert table["version"] == CALIBRATION_TABLE_VERSION and table["frames"] == 4 and table["method"] == "MinMax"
    assert all(name.startswith("/") and low <= high for name, (low, high) in table["tensors"].items())
    graph = fused_onnx_bytes(model, info.normalization, info.train_resolution, "dynamic", channels_last_tail=True)
    settings = {"reduce_range": True, "keep_float": list(int8.KEEP_FLOAT)}
    from_frames = int8.quantize_fused_onnx(graph, frames, **settings)
    from_table = int8.quantize_fused_onnx(graph, None, ranges=table["tensors"], **settings)
    assert from_table == from_frames


def test_a_table_serves_other_frame_sizes_and_channel_orders(tiny, tiny_table):
    model, info = tiny
    _, table = tiny_table
    for frame_size, order in (((48, 80), "bgr"), (info.train_resolution, "rgb")):
        graph = fused_onnx_bytes(model, info.normalization, info.train_resolution, frame_size, order)
        assert b"QuantizeLinear" in int8.quantize_fused_onnx(graph, None, ranges=table["tensors"])


def test_a_table_is_keyed_by_the_weights_and_its_version(tiny, tiny_table, tiny_v1_weights):
    model, info = tiny
    _, table = tiny_table
    fingerprint = network_fingerprint(model, info.normalization)
    assert table_problem(table, fingerprint) is None
    other, other_info = load_model(tiny_v1_weights)
    assert "other weights" in table_problem(table, network_fingerprint(other, other_info.normalization))
    assert "version 2" in table_problem({**table, "version": 2}, fingerprint)
    assert "malformed" in table_problem({**table, "tensors": {"/x": [1.0, -1.0]}}, fingerprint)
    assert "not a mapping" in table_problem([1, 2], fingerprint)


def test_a_table_without_a_tensor_the_graph_needs_is_refused(tiny, tiny_table):
    model, info = tiny
    _, table = tiny_table
    graph = fused_onnx_bytes(model, info.normalization, info.train_resolution, "dynamic")
    partial = dict(list(table["tensors"].items())[1:])
    with pytest.raises(BackendError, match="no range for 1 tensors of this graph"):
        int8.quantize_fused_onnx(graph, None, ranges=partial)


def test_the_backend_uses_a_fitting_table_and_ignores_one_of_other_weights(tiny_weights, tiny_table, tmp_path,
                                                                         caplog):
    from bisenetv2_ros.inference.segmenter import Segmenter

    frames, table = tiny_table
    path = tmp_path / "tiny_with_table.pt"
    shutil.copyfile(tiny_weights, path)
    embed_calibration_table(path, table)
    segmenter = Segmenter(path, backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path)
    assert segmenter.backend.calibration.table == table  # no frames: the dataset "synthetic" is nowhere
    assert segmenter.segment(frames[0]).shape == frames.shape[1:3]
    stale = {**table, "network_sha256": "0" * 64}
    embed_calibration_table(path, stale)
    with pytest.raises(BackendError, match="needs calibration frames"):
        Segmenter(path, backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path)
    assert "calibration table is not used: the calibration table was measured on other weights" in caplog.text


def test_embedding_a_table_keeps_the_weights_bit_identical(tiny_weights, tmp_path):
    from bisenetv2_ros.weights.checkpoint import save_checkpoint

    path = save_checkpoint(load_checkpoint(tiny_weights), tmp_path / "half.pt", half=True)
    before = torch.load(path, weights_only=True)
    frames = random_frames((2, 64, 96), seed=2)
    table = calibrate_checkpoint_file(path, int8.CalibrationSet(frames), "random")
    after = torch.load(path, weights_only=True)
    assert after["info"]["calibration"] == table
    assert {k: v for k, v in after["info"].items() if k != "calibration"} == before["info"]
    assert before["state_dict"].keys() == after["state_dict"].keys()
    for key, tensor in before["state_dict"].items():
        assert tensor.dtype == after["state_dict"][key].dtype and torch.equal(tensor, after["state_dict"][key]), key
    # Measured on the weights as stored (fp16), so it fits them as they load.
    model, info = load_model(path)
    assert table_problem(info.calibration, network_fingerprint(model, info.normalization)) is None


def test_deploy_calibration_keeps_a_fitting_table_and_removes_a_stale_one(tiny_weights, tiny_table, tmp_path):
    _, table = tiny_table
    path = tmp_path / "deploy.pt"
    shutil.copyfile(tiny_weights, path)
    assert deploy_calibration(path) is None  # no table, no frames known for "synthetic": nothing to say
    embed_calibration_table(path, table)
    assert deploy_calibration(path).startswith("kept: int8 activation ranges of")
    embed_calibration_table(path, {**table, "network_sha256": "f" * 64})
    assert deploy_calibration(path).startswith("removed")
    assert load_checkpoint(path).info.calibration is None
    images = tmp_path / "frames"
    images.mkdir()
    import cv2

    for i, frame in enumerate(random_frames((3, 64, 96), seed=5)):
        cv2.imwrite(str(images / f"{i}.png"), frame)
    assert deploy_calibration(path, images).startswith("measured: int8 activation ranges")
    assert load_checkpoint(path).info.calibration["frames"] == 3


def test_bisenetv2_export_measures_the_table_from_calibration_images(tiny_weights, tmp_path, capsys):
    import cv2

    from bisenetv2_ros.cli.commands import main

    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in enumerate(random_frames((2, 64, 96), seed=6)):
        cv2.imwrite(str(images / f"{i}.png"), frame)
    assert main(["export", str(tiny_weights), "--output", str(tmp_path / "out.pt"), "--half",
                 "--calibration-images", str(images)]) == 0
    assert "int8 calibration table: measured: int8 activation ranges" in capsys.readouterr().out
    model, info = load_model(tmp_path / "out.pt")
    assert table_problem(info.calibration, network_fingerprint(model, info.normalization)) is None


def test_the_embedded_weights_carry_a_table_that_fits_them_and_no_frames():
    path = PACKAGE_WEIGHTS_DIR / "bisenetv2_camvid.pt"
    model, info = load_model("camvid")
    table = info.calibration
    assert table is not None and table_problem(table, network_fingerprint(model, info.normalization)) is None
    assert table["source"] == info.dataset and table["frames"] >= 16
    assert table["input_size"] == list(info.train_resolution)
    # Numbers only: two floats per tensor, nothing image-sized; the file stays small.
    assert all(len(pair) == 2 and all(isinstance(v, float) for v in pair) for pair in table["tensors"].values())
    assert len(json.dumps(table)) < 64 * 1024 and path.stat().st_size < 6 * 2**20


def _camvid_frames_or_synthetic(camvid_root: Path, count: int = 6) -> np.ndarray:
    """(N, 480, 640, 3) RGB: real CamVid val frames spread over the split when the data are here, else a
    synthetic street-like scene."""
    import cv2

    if (camvid_root / "val").is_dir():
        files = int8.calibration_files(camvid_root / "val", count)
        return np.stack([cv2.resize(cv2.imread(str(p)), (640, 480))[..., ::-1] for p in files])
    # Sky over road with sensor noise: a scene the network labels mostly with confidence (flat,
    # noiseless colours leave it undecided between classes, and then any rounding flips labels).
    rows = np.linspace(0, 1, 480)[:, None, None]
    sky, road = np.array([130, 170, 220]), np.array([90, 90, 95])
    frame = np.where(rows < 0.45, sky * (1 - 0.3 * rows), road * (0.7 + 0.5 * rows)) * np.ones((1, 640, 1))
    return np.clip(frame + np.random.default_rng(0).normal(0, 4, frame.shape), 0, 255).astype(np.uint8)[None]


SCRIPT = """
import logging, sys
import numpy as np
logging.basicConfig(level=logging.INFO)
from bisenetv2_ros.inference import int8
from bisenetv2_ros.inference.segmenter import Segmenter
assert int8.default_calibration_folder("camvid:drive_train") is None, "the dataset must not be found"
assert int8.__file__.startswith(sys.argv[2]), int8.__file__
frames = np.load(sys.argv[1])
fp32 = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="fp32")
quantised = Segmenter("camvid", backend="onnxruntime", device="cpu", precision="int8")
print("SOURCE", quantised.backend.calibration.source)
print("AGREEMENT", np.mean([(quantised.segment(f) == fp32.segment(f)).mean() for f in frames]))
"""


def test_int8_works_from_a_checkout_with_no_dataset_beside_it(tmp_path):
    """The package copied to a folder with no ../shared/data beside it (a robot's checkout); the frames
    are real CamVid val ones where the data are here (only to measure agreement), else synthetic."""
    checkout = tmp_path / "robot" / "checkout"
    shutil.copytree(REPO / "bisenetv2_ros", checkout / "bisenetv2_ros",
                    ignore=shutil.ignore_patterns("__pycache__"))
    frame_file = tmp_path / "frame.npy"
    np.save(frame_file, _camvid_frames_or_synthetic(CAMVID_DIR))
    env = {**os.environ, "PYTHONPATH": str(checkout), "BISENETV2_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(frame_file), str(checkout)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("SOURCE", "AGREEMENT")))
    assert lines["SOURCE"].startswith("the activation ranges the weights carry")
    assert float(lines["AGREEMENT"]) >= 0.99, result.stdout


def test_an_onnxruntime_without_stored_ranges_falls_back_to_frames(tiny, tiny_table, monkeypatch, caplog):
    model, info = tiny
    frames, table = tiny_table
    monkeypatch.setattr(int8, "stored_ranges_supported", lambda: False)
    assert int8.calibration_for(model, info.normalization, frames=frames, table=table).table is None
    with pytest.raises(BackendError, match="needs calibration frames"):  # "synthetic": no frames known
        int8.calibration_for(model, info.normalization, dataset=info.dataset, table=table)
    assert "cannot quantise from the weights' calibration table" in caplog.text
    graph = fused_onnx_bytes(model, info.normalization, info.train_resolution, "dynamic")
    with pytest.raises(BackendError, match="calibration_cache_path"):
        int8.quantize_fused_onnx(graph, None, ranges=table["tensors"])


def test_bisenetv2_info_shows_the_table(capsys):
    import re

    from bisenetv2_ros.cli.commands import main

    assert main(["info", "camvid"]) == 0
    assert re.search(r"int8 calibration: int8 activation ranges of \d+ tensors from \d+ frames of camvid",
                     capsys.readouterr().out)
    assert main(["info", "camvid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["int8_calibration"].startswith("int8 activation ranges of")
