"""One error boundary per entry point, values checked for range, no silent wrong result (issue 20).

Every expected failure of the training scripts and the CLI ends in one line naming the input and the
fix, exit status 1; --debug (or BISENETV2_DEBUG=1) shows the traceback; a bug still shows its traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import make_tiny_checkpoint
from test_cli import random_bgr, segment_args
from test_training import _synthetic_folder

from bisenetv2_ros.classes import IGNORE_INDEX
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.cli.arguments import error_line, guarded, run_script
from bisenetv2_ros.weights.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# The boundary itself


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(capsys, monkeypatch):
    def bad_input():
        raise ValueError("input x.png is empty; give another")

    monkeypatch.delenv("BISENETV2_DEBUG", raising=False)
    assert guarded("prog", bad_input) == 1
    assert capsys.readouterr().err == "prog: error: input x.png is empty; give another\n"
    with pytest.raises(ValueError):
        guarded("prog", bad_input, debug=True)
    monkeypatch.setenv("BISENETV2_DEBUG", "1")
    with pytest.raises(ValueError):
        guarded("prog", bad_input)
    monkeypatch.delenv("BISENETV2_DEBUG")
    with pytest.raises(KeyError):  # a bug is not dressed up as a user error
        guarded("prog", lambda: {}["missing"])
    assert guarded("prog", lambda: {"a": 1}) == 0 and guarded("prog", lambda: 3) == 3

    def ctrl_c():
        raise KeyboardInterrupt

    capsys.readouterr()
    assert guarded("training/train.py", ctrl_c, stopped="continue with --resume") == 130
    assert capsys.readouterr().err == "\ntraining/train.py: interrupted; continue with --resume\n"


def test_cli_debug_flag_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    assert cli.main(["info", missing]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    for argv in (["--debug", "info", missing], ["info", missing, "--debug"]):
        with pytest.raises(CheckpointError, match="is neither an existing file nor a known name"):
            cli.main(argv)


def test_error_line_takes_the_message_out_of_a_dataloader_worker_wrapper():
    wrapped = ValueError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\ntraining.datasets.DatasetError: label a.png contains "
                         "values [7] outside the 3 classes\n")
    assert error_line(wrapped) == "label a.png contains values [7] outside the 3 classes"
    assert error_line(ValueError("plain")) == "plain"


# --------------------------------------------------------------------------------------------
# training/train.py: each case of the issue, run through the script's entry


def write_config(tmp_path: Path, data_root: Path, **sections) -> Path:
    values = {
        "model": {"width_multiplier": 0.25, "head_channels": 16, "aux_head_channels": 8},
        "data": {"dataset": "folder", "root": str(data_root), "scales": [1.0], "crop_size": [32, 48],
                 "eval_size": [32, 48], "workers": 0, "val_split": None},
        "run": {"iterations": 2, "batch_size": 2, "device": "cpu", "threads": 1, "out_dir": str(tmp_path / "run"),
                "log_every": 1, "eval_every": 1000, "checkpoint_every": 1},
    }
    for section, keys in sections.items():
        values.setdefault(section, {}).update(keys)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def train(argv: list[str]) -> int:
    from training import train as train_module

    return run_script("training/train.py", train_module.main, argv + ["--no-progress"])


def one_error_line(capsys, prog: str = "training/train.py") -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, err
    return lines[0][len(f"{prog}: error: "):]


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> Path:
    return _synthetic_folder(tmp_path_factory.mktemp("stripes"), count=4)


@pytest.mark.parametrize("extra,message", [
    (["--set", "optim.lrr=0.1"], "unknown keys ['lrr'] in config section 'optim'"),
    (["--set", "optim.lr=-0.1"], "optim.lr must be > 0 and finite (at most 10), got -0.1"),
    (["--set", "optim.lr=.nan"], "optim.lr must be > 0 and finite (at most 10), got nan"),
    (["--set", "optim.lr=fast"], "optim.lr must be float, got 'fast'"),
    (["--set", "data.scales=[1.0, 0]"], "data.scales must be a non-empty list of factors > 0 and at most 8, got [1.0, 0]"),
    (["--set", "run.batch_size=two"], "run.batch_size must be int, got 'two'"),
    (["--set", "run.iterations=0"], "run.iterations must be >= 1, got 0"),  # --iterations 0: test_cli_property
    (["--set", "optim.lr=[0.1"], "override optim.lr: '[0.1' is not a YAML value"),
    (["--set", "data.scales=" + "[" * 3000], "override data.scales: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                                             "[[[[...' is not a YAML value (nested too deeply)"),
    (["--set", "data.crop_size={a: 1, a: 2}"], "override data.crop_size: '{a: 1, a: 2}' is not a YAML value (key 'a' "
                                               "is given twice)"),
])
def test_bad_settings_are_one_line(tmp_path, stripes, capsys, extra, message):
    assert train(["--config", str(write_config(tmp_path, stripes))] + extra) == 1
    assert one_error_line(capsys).startswith(message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8 text (byte 0): is it the right file?"),
    ("a: " + "[" * 5000 + "]" * 5000, "is not valid YAML: nested too deeply"),
    ("data:\n  crop_size: [32, 48]\n  crop_size: [64, 64]\n", "is not valid YAML at line 3, column 3: key 'crop_size' "
                                                            "is given twice"),
    (None, "is not a file"),
])
def test_a_config_file_that_is_not_a_config_names_the_file_and_why(tmp_path, capsys, content, message):
    """Found beyond the issue's list: a binary file gave a bare UTF-8 decode error, deep nesting a
    RecursionError traceback, and a key given twice silently kept the last value."""
    config = tmp_path / "config.yaml"
    if content is None:
        config.mkdir()
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    assert train(["--config", str(config), "--out-dir", str(tmp_path / "run")]) == 1
    line = one_error_line(capsys)
    assert str(config) in line and line.endswith(message), line
    assert not (tmp_path / "run").exists()


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("optim:\n  lr: 0.1\n  momentum: [0.9\nrun: {}\n")
    assert train(["--config", str(config)]) == 1
    assert one_error_line(capsys).startswith(f"config {config} is not valid YAML at line ")


def _copy_dataset(stripes: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(stripes, target)
    return target


def test_images_without_labels_are_one_line(tmp_path, stripes, capsys):
    data = _copy_dataset(stripes, tmp_path / "data")
    (data / "train" / "labels" / "001.png").unlink()
    assert train(["--config", str(write_config(tmp_path, data))]) == 1
    assert one_error_line(capsys).startswith(f"image {data / 'train' / 'images' / '001.png'} has no label")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_label_value_outside_the_classes_is_one_line(tmp_path, stripes, capsys, workers):
    """The last frame's label is bad, so the error comes from the training loop (the first labels pass the
    start-up check); through a DataLoader worker it arrives wrapped in the worker's traceback text."""
    data = _copy_dataset(stripes, tmp_path / "data")
    bad = data / "train" / "labels" / "003.png"
    cv2.imwrite(str(bad), np.full((32, 48), 7, np.uint8))
    assert train(["--config", str(write_config(tmp_path, data, data={"workers": workers}))]) == 1
    assert one_error_line(capsys) == (f"label {bad} contains values [7] outside the 3 classes (0..2) and the "
                                      "ignore value 255")


def test_all_void_training_labels_are_an_error(tmp_path, stripes, capsys):
    data = _copy_dataset(stripes, tmp_path / "data")
    for label in (data / "train" / "labels").iterdir():
        cv2.imwrite(str(label), np.full((32, 48), IGNORE_INDEX, np.uint8))
    assert train(["--config", str(write_config(tmp_path, data))]) == 1
    assert one_error_line(capsys) == (f"folder:{data / 'train'}: every pixel of its 4 labels is void (ignore value 255 or a "
                                      "value mapped to it), so there is nothing to learn; check the label files")
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_resume_with_a_changed_model_is_one_line(tmp_path, stripes, capsys):
    config = write_config(tmp_path, stripes)
    assert train(["--config", str(config)]) == 0
    latest = (tmp_path / "run" / "latest.pt").read_bytes()
    assert train(["--config", str(config), "--resume", "--set", "model.head_channels=8"]) == 1
    assert one_error_line(capsys) == (f"--resume would change the model of the run in {tmp_path / 'run' / 'latest.pt'} "
                                      "(model.head_channels: 16 -> 8); keep its model settings, or start a new run in "
                                      "another --out-dir")
    assert (tmp_path / "run" / "latest.pt").read_bytes() == latest


# --------------------------------------------------------------------------------------------
# evaluate.py and promote.py


@pytest.mark.parametrize("argv,message", [
    (["--scales", "0"], "argument --scales: expected a finite number above 0, got '0'"),
    (["--scales", "1", "-0.5"], "argument --scales: expected a finite number above 0, got '-0.5'"),
    (["--limit", "0"], "argument --limit: expected a positive integer, got '0'"),
    (["--threads", "-1"], "argument --threads: expected a positive integer, got '-1'"),
])
def test_evaluate_refuses_values_out_of_range(tiny_weights, tmp_path, capsys, argv, message):
    from training.evaluate import main

    with pytest.raises(SystemExit) as raised:
        main(["--weights", str(tiny_weights), "--dataset", "camvid", "--root", str(tmp_path)] + argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_promote_errors_are_one_line(tmp_path, capsys):
    from training import promote

    checkpoint = make_tiny_checkpoint(tmp_path / "ck.pt", kind="train")
    assert run_script("training/promote.py", promote.main, [str(checkpoint), "--output", str(checkpoint)]) == 1
    assert "is the checkpoint to promote" in one_error_line(capsys, "training/promote.py")
    assert run_script("training/promote.py", promote.main, [str(tmp_path / "none.pt")]) == 1
    assert "does not exist" in one_error_line(capsys, "training/promote.py")


# --------------------------------------------------------------------------------------------
# Weights that cannot segment


def damaged_checkpoint(path: Path, damage: str) -> tuple[Path, str]:
    """A tiny checkpoint with one NaN weight or one negative batch-norm variance -> (path, damaged key)."""
    make_tiny_checkpoint(path)
    data = torch.load(path, weights_only=True)
    state = data["state_dict"]
    if damage == "nan":
        key = next(k for k, v in state.items() if k.endswith("weight") and v.ndim == 4)
        state[key][0, 0, 0, 0] = float("nan")
    else:
        key = next(k for k in state if k.endswith("running_var"))
        state[key][0] = -1.0
    torch.save(data, path)
    return path, key


@pytest.mark.parametrize("damage,problem", [
    ("nan", "tensors hold NaN or infinite values"),
    ("negative_var", "batch-norm running_var tensors hold negative variances"),
])
def test_unusable_weights_are_refused_everywhere(tmp_path, capsys, damage, problem):
    path, key = damaged_checkpoint(tmp_path / "bad.pt", damage)
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_bgr(1))
    for argv in (["info", str(path)], ["import", str(path), str(tmp_path / "out.pt")],
                 segment_args(str(image), weights=path)):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{path}: the weights are unusable: 1 {problem} ({key})" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "x.png"]


def test_the_node_refuses_unusable_weights_at_start(tmp_path):
    from bisenetv2_ros.ros import pipeline as node_core
    from bisenetv2_ros.ros.parameters import NodeSettings

    path, key = damaged_checkpoint(tmp_path / "bad.pt", "nan")
    with pytest.raises(node_core.StartupError) as caught:
        node_core.create_segmenter(NodeSettings(weights=str(path), device="cpu"))
    assert str(caught.value) == (f"cannot start the segmentation node: {path}: the weights are unusable: 1 tensors "
                                 f"hold NaN or infinite values ({key}); take an earlier checkpoint of the run, or "
                                 "lower optim.lr if training diverged")


# --------------------------------------------------------------------------------------------
# A video shorter than its container claims


def test_a_damaged_video_says_how_many_frames_it_read(tmp_path, tiny_weights, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (56, 40))
    for i in range(10):
        writer.write(np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle - 600:middle + 600] = bytes(1200)  # a corrupt middle: frames after it cannot be decoded
    video.write_bytes(bytes(data))
    capture = cv2.VideoCapture(str(video))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 10
    capture.release()
    assert cli.main(segment_args(str(video), "-o", str(tmp_path / "out"), weights=tiny_weights)) == 1
    captured = capsys.readouterr()
    read = int(captured.out.split("segmented ")[1].split()[0])
    assert 0 < read < 10
    assert (f"skipped: video {video}: read {read} of the 10 frames its container claims; the other {10 - read} "
            "cannot be decoded") in captured.err
    assert f"{10 - read} of 10 frames were skipped" in captured.err
    assert cli.main(segment_args(str(video), "-o", str(tmp_path / "out2"), "--skip-bad", weights=tiny_weights)) == 0


# --------------------------------------------------------------------------------------------
# Misleading messages


def test_node_help_prints_help_and_exits_without_starting_the_node():
    # with or without ROS: the arguments are read before rclpy is imported (test_node_without_ros)
    result = subprocess.run([sys.executable, "-m", "bisenetv2_ros.ros.node", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ros2 run bisenetv2_ros segmentation_node [--lifecycle]")
    assert "  max_batch (int, default 0, 0 .. 64, runtime)" in result.stdout
    result = subprocess.run([sys.executable, "-m", "bisenetv2_ros.ros.node", "--bogus"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "segmentation_node: error: unknown arguments ['--bogus']" in result.stderr


def test_a_missing_file_url_does_not_blame_the_network(tmp_path, capsys):
    url = (tmp_path / "missing.pth").as_uri()
    assert cli.main(["download", "mmseg-cityscapes", "--url", url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bisenetv2 download: error: cannot read {url} (") and "offline" not in err
    assert "check the path given by --url or $BISENETV2_DOWNLOAD_BASE" in err


def test_a_dataloader_worker_does_not_hang_on_opencv_after_fork(tmp_path, stripes):
    """torch imported and OpenCV's pthread pool busy in the parent, then a forked DataLoader worker that
    resizes: the worker used to wait forever on the parent's pool threads (seen as a hung CI run)."""
    config = write_config(tmp_path, stripes, data={"workers": 1})
    script = (
        "import sys, cv2, numpy as np, torch\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'test')!r}]\n"
        "torch.nn.functional.conv2d(torch.randn(1, 3, 256, 256), torch.randn(8, 3, 3, 3))\n"
        "cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (3000, 3000))  # starts OpenCV's thread pool\n"
        "from training import train\n"
        f"train.main(['--config', {str(config)!r}, '--no-progress'])\n"
        "print('trained')\n"
    )
    import os
    import signal

    # its own session, so a hung run's forked worker is killed with it
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=REPO, start_new_session=True)
    try:
        out, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        pytest.fail("training with one DataLoader worker hung for 120 s")
    assert run.returncode == 0, err
    assert "trained" in out
