"""`bisenetv2` in-process (main([...])): help, segment on images / folders / videos, info, import,
export, interruption. Bags and downloads have their own test files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_tiny_checkpoint

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]



def random_bgr(seed: int, height: int = 40, width: int = 56) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth blobs rather than pure noise, so the tiny network predicts more than one class
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def segmenter(tiny_weights) -> Segmenter:
    return Segmenter(weights=tiny_weights, backend="torch", device="cpu")


def segment_args(*extra: str, weights: Path) -> list[str]:
    # the eager torch backend: quickest to start, and the same backend as the `segmenter` fixture
    return ["segment", *extra, "--weights", str(weights), "--backend", "torch", "--device", "cpu", "--quiet"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("segment", "download", "info", "import", "export", "benchmark", "report", "benchmark-messages"):
        assert f"    {command} " in text or f"    {command}\n" in text, command
    assert "examples:" in text


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "bisenetv2_ros.cli.commands", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bisenetv2")
    assert "segment" in result.stdout and "download" in result.stdout


def test_every_delegated_subcommand_ships_with_the_package():
    """They are imported without a guard, so each must exist and provide add_arguments and run."""
    import importlib

    for name, (module_name, summary) in cli.DELEGATED.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
        assert summary and not summary.endswith("."), name


def test_delegated_subcommand_gets_its_own_arguments(monkeypatch, capsys, tmp_path):
    module = tmp_path / "fake_bench_mod.py"
    module.write_text("def add_arguments(p):\n    p.add_argument('--iterations', type=int)\n"
                      "def run(args):\n    print('ran', args.iterations)\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.DELEGATED, "benchmark", ("fake_bench_mod", "x"))
    assert cli.main(["benchmark", "--iterations", "7"]) == 3
    assert capsys.readouterr().out.strip() == "ran 7"


def test_segment_one_image_writes_labels_color_overlay(tmp_path, tiny_weights, segmenter):
    frame = random_bgr(1)
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), frame)
    assert cli.main(segment_args(str(image), weights=tiny_weights)) == 0
    out = tmp_path / "street_segmented"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "color/street.png", "labels/street.png", "overlay/street.png"]
    labels = cv2.imread(str(out / "labels" / "street.png"), cv2.IMREAD_UNCHANGED)
    expected = segmenter.segment(frame[..., ::-1].copy(), channel_order="rgb")
    assert labels.dtype == np.uint8 and labels.ndim == 2
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(expected)) > 1  # the check above is not trivially all zeros
    color = cv2.imread(str(out / "color" / "street.png"))[..., ::-1]
    np.testing.assert_array_equal(color, segmenter.colorize(expected))
    overlay = cv2.imread(str(out / "overlay" / "street.png"))
    np.testing.assert_array_equal(overlay, segmenter.overlay(frame, expected, channel_order="bgr"))
    # nothing staged is left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.png", "street_segmented"]


def test_segment_folder_batches_mixed_sizes_and_keeps_tree(tmp_path, tiny_weights, segmenter, capsys):
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    frames = {"a.png": random_bgr(2), "b.jpg": random_bgr(3), "sub/c.png": random_bgr(4, 32, 48),
              "d.png": random_bgr(5)}
    for name, frame in frames.items():
        cv2.imwrite(str(folder / name), frame)
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "result"
    code = cli.main(segment_args(str(folder), "--output", str(out), "--batch", "3", "--outputs", "labels",
                                 weights=tiny_weights))
    assert code == 1  # an image was skipped: the output is kept, the run says so and fails
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("skipped: cannot read image") and "broken.png" in err[0]
    assert err[1] == ("bisenetv2 segment: error: 1 of 5 images were skipped (listed above; the others are "
                      "written); pass --skip-bad to accept that")
    assert "segmented 4 images" in captured.out and "Traceback" not in captured.err
    for name in frames:
        written = cv2.imread(str(out / "labels" / Path(name).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        decoded = cv2.imread(str(folder / name))  # the JPEG as decoded, not as generated
        np.testing.assert_array_equal(written, segmenter.segment(decoded, channel_order="bgr"))
    assert not (out / "color").exists()
    # --skip-bad accepts the skipped image; an output inside the input folder is not read back as input
    assert cli.main(segment_args(str(folder), "-o", str(folder / "seg"), "--outputs", "labels", "--skip-bad",
                                 weights=tiny_weights)) == 0
    assert "error" not in capsys.readouterr().err
    assert cli.main(segment_args(str(folder), "-o", str(folder / "seg"), "--outputs", "labels", "--overwrite",
                                 "--skip-bad", weights=tiny_weights)) == 0
    assert sorted(p.relative_to(folder / "seg").as_posix() for p in (folder / "seg").rglob("*.png")) == [
        "labels/a.png", "labels/b.png", "labels/d.png", "labels/sub/c.png"]
    # confidence: round(255 x the labelled class's probability), one exact PNG per image
    assert cli.main(segment_args(str(folder / "a.png"), "-o", str(tmp_path / "conf"), "--outputs", "confidence",
                                 weights=tiny_weights)) == 0
    written = cv2.imread(str(tmp_path / "conf" / "confidence" / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, segmenter.segment(cv2.imread(str(folder / "a.png")), "bgr", confidence=True)[1])
    assert cli.main(segment_args(str(folder / "a.png"), "-o", str(tmp_path / "bad"), "--outputs", "labels/compressed",
                                 weights=tiny_weights)) == 1
    assert "--outputs labels/compressed applies to bags" in capsys.readouterr().err


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_segment_video(tmp_path, tiny_weights, segmenter, fourcc, suffix):
    video = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*fourcc), 12.0, (56, 40))
    assert writer.isOpened()
    for i in range(5):
        writer.write(random_bgr(10 + i))
    writer.release()
    capture = cv2.VideoCapture(str(video))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    assert len(decoded) == 5

    assert cli.main(segment_args(str(video), "--batch", "2", "--outputs", "labels,overlay,confidence",
                                 weights=tiny_weights)) == 0
    out = tmp_path / "clip_segmented"
    labels = sorted((out / "labels").glob("*.png"))
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(5)]
    for path, frame in zip(labels, decoded):
        want_labels, want_confidence = segmenter.segment(frame, channel_order="bgr", confidence=True)
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), want_labels)
        np.testing.assert_array_equal(cv2.imread(str(out / "confidence" / path.name), cv2.IMREAD_UNCHANGED),
                                      want_confidence)
    result = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert result.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    count = 0
    while True:
        ok, frame = result.read()
        if not ok:
            break
        assert frame.shape == (40, 56, 3)
        count += 1
    assert count == 5
    assert not (out / "color.mp4").exists()


def test_interrupted_segment_leaves_no_output(tmp_path, tiny_weights, monkeypatch, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), random_bgr(20 + i))
    real = Segmenter.segment_batch
    calls = []

    def interrupt_after_two(self, frames, channel_order="rgb", **options):
        calls.append(len(frames))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(self, frames, channel_order, **options)

    monkeypatch.setattr(Segmenter, "segment_batch", interrupt_after_two)
    assert cli.main(segment_args(str(folder), weights=tiny_weights)) == 130
    assert len(calls) == 3
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_existing_output_is_kept_unless_overwrite(tmp_path, tiny_weights, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_bgr(7))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):  # a folder this command did not write: kept, --overwrite or not
        assert cli.main(segment_args(str(image), "-o", str(out), *extra, weights=tiny_weights)) == 1
        assert "remove it yourself" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "keep.txt").unlink()
    out.rmdir()
    assert cli.main(segment_args(str(image), "-o", str(out), weights=tiny_weights)) == 0
    assert cli.main(segment_args(str(image), "-o", str(out), weights=tiny_weights)) == 1
    assert "or pass --overwrite to replace it" in capsys.readouterr().err  # its own previous output
    assert cli.main(segment_args(str(image), "-o", str(out), "--overwrite", weights=tiny_weights)) == 0
    assert (out / "labels" / "x.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.png"]


@pytest.mark.parametrize("argv,message", [
    (["segment", "nothing_here.png"], "does not exist"),
    (["segment", "{tmp}/notes.txt"], "cannot tell what"),
    (["segment", "{tmp}/empty"], "holds no images"),
    (["segment", "{tmp}/empty", "-o", "{tmp}"], "holds the input"),
    (["info", "no-such-weights"], "neither an existing file nor a known name"),
    (["download"], "name the weights to download"),
    (["download", "camvid"], "ship inside the package"),
])
def test_bad_input_gives_one_specific_error(tmp_path, capsys, argv, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_option_values_are_rejected_by_the_parser(tmp_path, capsys):
    for argv in (["segment", "x.png", "--input-size", "12"], ["segment", "x.png", "--batch", "0"],
                 ["segment", "x.png", "--outputs", "labels,depth"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err


def test_info_text_and_json(tiny_weights, capsys):
    assert cli.main(["info", str(tiny_weights)]) == 0
    text = capsys.readouterr().out
    assert "kind:             deploy checkpoint" in text
    assert "train resolution: 64x96 (HxW)" in text
    assert "classes (11):" in text and "sky" in text
    assert "provenance:       source=test fixture" in text
    assert cli.main(["info", str(tiny_weights), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["train_resolution"] == [64, 96]
    assert data["model_config"]["num_classes"] == 11 and data["model_config"]["aux_heads"] is False
    assert data["classes"][0] == "sky" and len(data["palette"]) == 11
    assert data["normalization"]["channel_order"] == "rgb"
    assert data["parameters"] == sum(v.numel() for k, v in load_checkpoint(tiny_weights).state_dict.items()
                                     if v.is_floating_point() and "running_" not in k)


def test_info_of_a_known_name_not_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    assert cli.main(["info", "mmseg-cityscapes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] is None and "bisenetv2 download mmseg-cityscapes" in data["note"]
    assert data["metrics"]["val_miou"] == pytest.approx(73.21)
    assert len(data["classes"]) == 19 and data["train_resolution"] == [1024, 2048]
    assert data["known_weights"]["sha256_prefix"] == "bcf10f09"


def test_export_train_checkpoint_to_half_deploy(tmp_path, capsys):
    train = make_tiny_checkpoint(tmp_path / "train.pt", kind="train")
    assert any(k.startswith("aux_heads.") for k in load_checkpoint(train).state_dict)
    out = tmp_path / "deploy.pt"
    assert cli.main(["export", str(train), "--output", str(out), "--half"]) == 0
    assert "train -> deploy, fp16" in capsys.readouterr().out
    deploy = load_checkpoint(out)
    assert deploy.kind == "deploy" and not deploy.config.aux_heads
    assert not any(k.startswith("aux_heads.") for k in deploy.state_dict)
    stored = torch.load(out, weights_only=True)["state_dict"]
    assert stored["head.classifier.weight"].dtype == torch.float16
    source = load_checkpoint(train).state_dict
    torch.testing.assert_close(deploy.state_dict["head.classifier.weight"],
                               source["head.classifier.weight"].half().float())


def test_export_without_a_target_says_so(tiny_weights, capsys):
    assert cli.main(["export", str(tiny_weights)]) == 1
    assert "nothing to do" in capsys.readouterr().err


def test_import_converts_a_public_checkpoint(tmp_path, capsys):
    from test_download import make_mmseg_checkpoint

    source, model = make_mmseg_checkpoint(tmp_path / "public.pth")
    out = tmp_path / "ours.pt"
    assert cli.main(["import", str(source), str(out)]) == 0
    assert "(mmsegmentation, 19 classes)" in capsys.readouterr().out
    converted = load_checkpoint(out)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict[key], value, msg=key)


def test_export_onnx_writes_a_checked_model(tiny_weights, tmp_path, capsys):
    import onnx

    out = tmp_path / "tiny.onnx"
    assert cli.main(["export", str(tiny_weights), "--onnx", str(out), "--input-size", "32x64"]) == 0
    assert "network 32x64" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(out)))


def test_examples_name_the_checkpoints_training_writes():
    import re

    train = (Path(__file__).resolve().parents[1] / "training" / "train.py").read_text()
    written = set(re.findall(r'"(\w+\.pt)"', train))
    assert {"latest.pt", "best.pt"} <= written
    help_text = cli.EPILOG + cli.build_parser()._subparsers._group_actions[0].choices["export"].epilog
    named = re.findall(r"runs/\w+/(\w+\.pt)", help_text)
    assert "latest.pt" in named and set(named) <= written, named


def test_segment_help_documents_skip_bad(capsys):
    with pytest.raises(SystemExit):
        cli.main(["segment", "--help"])
    assert "--skip-bad" in capsys.readouterr().out
