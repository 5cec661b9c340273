"""Every size a user gives has an upper bound checked before allocation; errors name their cause (the
flag, key or variable, and the OS's reason); YAML numbers as the docs write them; the 0.1 aliases keep
their promise (issue 32, rules 3-5)."""

from __future__ import annotations

import sys
import warnings
from unittest import mock

import numpy as np
import pytest

from bisenetv2_ros.conventions import DEFAULT_MAX_INPUT_PIXELS, parse_size
from bisenetv2_ros.ros.messages import ImageConversionError

# --------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("text", ["8192x8192", "99999x99999", "40000x1", "4097x4097"])
def test_every_size_flag_has_an_upper_bound(text):
    with pytest.raises(ValueError, match=rf"a size must be at most 32768 a side and {DEFAULT_MAX_INPUT_PIXELS} pixels"):
        parse_size(text)
    assert parse_size("4096x4096") == (4096, 4096) and parse_size("1x32768") == (1, 32768)


@pytest.mark.parametrize("size", ["8192x8192", "99999x99999"])
def test_tune_refuses_a_huge_frame_size_before_measuring(size, capsys, monkeypatch):
    from bisenetv2_ros.cli import commands as cli
    from bisenetv2_ros.inference import segmenter

    monkeypatch.setattr(segmenter, "Segmenter", mock.Mock(side_effect=AssertionError("nothing may be built")))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["tune", "--frame-size", size])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"argument --frame-size: a size must be at most 32768 a side" in err


def test_a_huge_depth_image_is_refused_before_it_is_converted():
    rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags gives the message types")
    from bisenetv2_ros.ros import depth_cloud

    types = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY).types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="c")
    # 8192x8192 16UC1 declared, with a tiny payload: refused on its size, not on its data
    big = types["sensor_msgs/msg/Image"](header=header, height=8192, width=8192, encoding="16UC1", is_bigendian=0,
                                         step=16384, data=np.zeros(16, np.uint8))
    with pytest.raises(ImageConversionError, match="depth image of 8192x8192 pixels refused: above max_input_pixels"):
        depth_cloud.depth_to_metres(big)
    small = types["sensor_msgs/msg/Image"](header=header, height=4, width=4, encoding="16UC1", is_bigendian=0, step=8,
                                           data=np.zeros(32, np.uint8))
    with pytest.raises(ImageConversionError, match="above max_input_pixels 8 "):
        depth_cloud.depth_to_metres(small, max_pixels=8)
    assert depth_cloud.depth_to_metres(small, max_pixels=16).shape == (4, 4)


@pytest.mark.parametrize("k_value", [float("nan"), float("inf")])
@pytest.mark.parametrize("index", [0, 2, 4, 5])  # fx, cx, fy, cy
def test_camera_info_with_a_non_finite_intrinsic_is_refused(k_value, index):
    from bisenetv2_ros.ros import depth_cloud

    k = [100.0, 0, 3.5, 0, 110.0, 2.5, 0, 0, 1]
    k[index] = k_value
    def camera_info(k, width, height):  # the CameraInfo fields the intrinsics read (no roi, no binning)
        return mock.Mock(k=k, width=width, height=height, binning_x=0, binning_y=0, roi=None)

    with pytest.raises(ImageConversionError, match=r"no usable intrinsics .*finite K"):
        depth_cloud.intrinsics(camera_info(k, 8, 6))
    with pytest.raises(ImageConversionError, match="above 32768 a side"):
        depth_cloud.intrinsics(camera_info([100.0, 0, 3.5, 0, 110.0, 2.5, 0, 0, 1], 100000, 6))
    assert depth_cloud.intrinsics(camera_info([100.0, 0, 3.5, 0, 110.0, 2.5, 0, 0, 1], 8, 6)) == (
        100.0, 110.0, 3.5, 2.5, 8, 6)


# --------------------------------------------------------------------------------------------
# Training config: YAML numbers, bounds; a refused value leaves nothing behind


def config_with(*overrides: str):
    from training.config import load_config

    return load_config(None, list(overrides))


@pytest.mark.parametrize("text,value", [("5e-3", 5e-3), ("1E-2", 1e-2), ("+2.5e-1", 0.25), ("0.05", 0.05)])
def test_yaml_numbers_as_the_docs_write_them(text, value, tmp_path):
    from training.config import load_config

    assert config_with(f"optim.lr={text}").optim.lr == value
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {text}\n  weight_decay: 5e-4\n")
    config = load_config(path)
    assert (config.optim.lr, config.optim.weight_decay) == (value, 5e-4)


@pytest.mark.parametrize("override,message", [
    ("optim.lr=nan", "optim.lr must be > 0 and finite (at most 10), got nan"),
    ("optim.lr=inf", "optim.lr must be > 0 and finite (at most 10), got inf"),
    ("optim.lr=1e308", "optim.lr must be > 0 and finite (at most 10), got 1e+308"),
    ("optim.momentum=nan", "optim.momentum must be in [0, 1), got nan"),
    ("data.crop_size=[100000,100000]", "data.crop_size must be at most 32768 a side and 16777216 pixels"),
    ("data.eval_size=[8192,8192]", "data.eval_size must be at most 32768 a side"),
    ("data.base_size=[1,40000]", "data.base_size must be at most 32768 a side"),
    ("data.train_size=[5000,5000]", "data.train_size must be at most"),
    ("data.scales=[1.0,1000]", "data.scales must be a non-empty list of factors > 0 and at most 8"),
    ("data.scales=[.nan]", "data.scales must be a non-empty list of factors > 0 and at most 8"),
    ("data.scale_range=[0.5,100]", "data.scale_range must be [lo, hi] with 0 < lo <= hi <= 8"),
    ("data.std=[0.2,0.2,inf]", "data.std must be three finite values > 0"),
    ("data.workers=100000", "data.workers must be in [0, 256]"),
    ("run.batch_size=1000000", "run.batch_size must be in [1, 4096]"),
    # the network's own sizes (found beyond the list: 147 GB asked for, or a hang building 1000x the layers)
    ("model.width_multiplier=1000", "model.width_multiplier must be a number from 0.0625 to 4, got 1000"),
    ("model.depth_multiplier=1000", "model.depth_multiplier must be a number from 0.0625 to 6, got 1000"),
    ("model.head_channels=10000000", "model.head_channels must be an integer from 1 to 4096, got 10000000"),
    ("model.expansion_ratio=100000", "model.expansion_ratio must be an integer from 1 to 16, got 100000"),
    ("model.semantic_ratio=.nan", "model.semantic_ratio must be a number from 0.015625 to 1, got nan"),
    ("model.aux_heads=5", "model.aux_heads must be true or false, got 5"),
])
def test_every_number_of_the_config_is_bounded_and_finite(override, message):
    with pytest.raises(ValueError) as refused:
        config_with(override)
    assert str(refused.value).startswith(message), str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_refused_crop_leaves_no_run_folder_that_blocks_the_corrected_command(tmp_path, capsys):
    from bisenetv2_ros.cli.arguments import run_script
    from training import train

    out, config = tmp_path / "run", tmp_path / "config.yaml"
    config.write_text("data:\n  dataset: folder\n  root: nowhere\n")
    assert run_script("training/train.py", train.main, ["--config", str(config), "--out-dir", str(out),
                                                         "--no-progress", "--set",
                                                         "data.crop_size=[100000,100000]"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.crop_size must be at most" in err and "Traceback" not in err
    assert not out.exists()


def test_export_metrics_from_a_binary_file_names_the_flag_and_the_file(tiny_weights, tmp_path, capsys):
    from training import export

    binary = tmp_path / "metrics.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81binary")
    assert export.run([str(tiny_weights), str(tmp_path / "out.pt"), "--metrics", str(binary)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--metrics {binary} is not the JSON of training/evaluate.py --output (not UTF-8 text)" in err
    assert not (tmp_path / "out.pt").exists()


# --------------------------------------------------------------------------------------------
# Environment variables: a bad value names the variable


def test_a_bad_torch_compile_variable_is_named(tiny_weights, monkeypatch):
    from bisenetv2_ros.inference.backends import BackendError
    from bisenetv2_ros.inference.segmenter import Segmenter

    monkeypatch.setenv("BISENETV2_TORCH_COMPILE", "fastest")
    with pytest.raises(BackendError, match=r"^\$BISENETV2_TORCH_COMPILE: unknown torch compile mode 'fastest'"):
        Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32")
    monkeypatch.setenv("BISENETV2_TORCH_COMPILE", " OFF ")
    assert Segmenter(tiny_weights, backend="torch", device="cpu", precision="fp32").backend.compile_mode == "off"


@pytest.mark.parametrize("value", ["mirror.example.org/weights", "ftp://mirror/x", "::"])
def test_a_bad_download_base_variable_is_named(monkeypatch, value):
    from bisenetv2_ros.weights.download import DownloadError, source_url
    from bisenetv2_ros.weights.known_weights import KNOWN_WEIGHTS

    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", value)
    entry = next(e for e in KNOWN_WEIGHTS.values() if e.url)
    with pytest.raises(DownloadError, match=r"^\$BISENETV2_DOWNLOAD_BASE=.* is not an http\(s\):// or file:// URL"):
        source_url(entry)
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", "https://mirror.example.org/w/")
    assert source_url(entry) == "https://mirror.example.org/w/" + entry.file_name


# --------------------------------------------------------------------------------------------
# The 0.1 aliases: star imports, patching, dir()


def fresh_alias(name: str):
    import importlib

    sys.modules.pop(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module(name)


def test_a_star_import_of_an_old_path_imports_the_public_names():
    fresh_alias("bisenetv2_ros.segmenter")
    namespace: dict = {}
    exec("from bisenetv2_ros.segmenter import *", namespace)
    from bisenetv2_ros.inference.segmenter import Segmenter

    assert namespace["Segmenter"] is Segmenter
    fresh_alias("bisenetv2_ros.checkpoint")
    namespace = {}
    exec("from bisenetv2_ros.checkpoint import *", namespace)
    from bisenetv2_ros.weights.checkpoint import load_checkpoint
    from bisenetv2_ros.weights.known_weights import load_model

    assert namespace["load_checkpoint"] is load_checkpoint and namespace["load_model"] is load_model
    assert not any(isinstance(v, type(sys)) for k, v in namespace.items() if k != "__builtins__")


def test_patching_an_old_path_patches_what_the_package_runs():
    alias = fresh_alias("bisenetv2_ros.checkpoint")
    from bisenetv2_ros.weights import checkpoint, known_weights

    original = checkpoint.load_checkpoint
    with mock.patch("bisenetv2_ros.checkpoint.load_checkpoint") as patched:
        assert checkpoint.load_checkpoint is patched and alias.load_checkpoint is patched
    assert checkpoint.load_checkpoint is original and alias.load_checkpoint is original
    with mock.patch("bisenetv2_ros.checkpoint.cache_dir", return_value="x"):  # a name that had moved before 0.2
        assert known_weights.cache_dir() == "x"
    assert known_weights.cache_dir() != "x"
    assert {"Segmenter", "__all__"} <= set(dir(fresh_alias("bisenetv2_ros.segmenter")))
    assert {"load_checkpoint", "load_model"} <= set(dir(alias))



def test_a_failed_write_names_the_path_and_the_os_reason(tmp_path):
    from bisenetv2_ros.cli import media
    from bisenetv2_ros.fileio import WriteError

    too_long = tmp_path / ("x" * 300 + ".png")
    with pytest.raises(WriteError, match=r"cannot write .*xxx\.png: File name too long$"):
        media._write_png(too_long, np.zeros((4, 4, 3), np.uint8))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(WriteError, match=r"cannot write .*a-file/f\.png: .*a-file is a file, where a folder is needed$"):
        media._write_png(blocker / "f.png", np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("shape", [[1, 99999, 99999, "rgb"], [100000, 10, 10, "rgb"], [1, 8192, 8192, "bgr"]])
def test_remembered_warmup_shapes_are_bounded(tmp_path, shape):
    """A tampered warm-up memory must not make the next start allocate a huge warm-up."""
    import json

    from bisenetv2_ros.ros.warmup import RememberedShapes, WarmupShape

    path = tmp_path / "warmup-node.json"
    path.write_text(json.dumps({"shapes": [[1, 480, 640, "bgr"], shape]}))
    assert RememberedShapes(path).shapes == []
    path.write_text(json.dumps({"shapes": [[2, 4096, 4096, "bgr"]]}))
    assert RememberedShapes(path).shapes == [WarmupShape(2, 4096, 4096, "bgr")]


@pytest.mark.parametrize("architecture, field, value", [
    ("bisenetv2", "width_multiplier", True), ("bisenetv2", "width_multiplier", float("inf")),
    ("bisenetv2", "head_channels", 4097), ("bisenetv2", "expansion_ratio", 2.5), ("bisenetv2", "num_classes", 256),
    ("bisenetv1", "context_channels", 100000), ("bisenetv1", "ffm_reduction", 0), ("bisenetv1", "aux_heads", "yes"),
])
def test_every_model_config_field_is_typed_and_bounded(architecture, field, value):
    """Checkpoints and configs alike: the config refuses the value before a layer is built."""
    from bisenetv2_ros.models.architectures import config_from_dict

    with pytest.raises(ValueError, match=rf"^{field} must be "):
        config_from_dict(architecture, {"num_classes": 11, field: value})


def test_a_stopped_training_run_says_what_it_left(tmp_path, monkeypatch, capsys):
    """`terminated; the last checkpoint is kept` only when there is one (a stop while building a model that
    never saved claimed one)."""
    import signal

    from bisenetv2_ros.cli.arguments import guarded
    from training import train

    monkeypatch.setattr(train, "STARTED_RUN", [tmp_path])
    for saved in (False, True):
        if saved:
            (tmp_path / "latest.pt").write_bytes(b"x")
        assert guarded("training/train.py", lambda: signal.raise_signal(signal.SIGTERM),
                       stopped=train.what_a_stop_leaves) == 143
        err = capsys.readouterr().err
        assert ("latest.pt) is kept" in err) is saved and ("no checkpoint was saved yet" in err) is not saved, err
