"""Data safety (issue 20, "data lost"): no command deletes or replaces a file it did not write.

Each case of the issue is run as a user runs it, on small generated inputs in tmp_path; the inputs and
any unrelated file must be byte-for-byte intact afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from conftest import make_tiny_checkpoint
from test_cli import random_bgr, segment_args

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.output_safety import (
    FILE_RECORDS,
    FOLDER_RECORD,
    UnsafeOutput,
    check_output,
    check_run_folder,
    distinct_names,
)
from bisenetv2_ros.weights.checkpoint import load_checkpoint, save_checkpoint


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# segment


@pytest.mark.parametrize("name", ["street.jpg", "drive.mp4", "recording.mcap"])
def test_segment_into_the_folder_holding_the_input_is_refused_even_with_overwrite(tmp_path, tiny_weights, capsys,
                                                                                  name):
    """The issue's first case: `segment street.jpg -o <its folder> --overwrite` deleted the folder.
    The refusal comes before the input is read, so the image, video and bag need not be decodable."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / name).write_bytes(b"the input, precious")
    (folder / "notes.txt").write_text("unrelated")
    before = snapshot(folder)
    for extra in ((), ("--overwrite",)):
        assert cli.main(segment_args(str(folder / name), "-o", str(folder), *extra, weights=tiny_weights)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"holds the input {folder / name}" in err[0], err
        assert "pass --overwrite" not in err[0]
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder left either


def test_segment_folder_into_its_parent_names_the_real_problem(tmp_path, tiny_weights, capsys):
    """Was: "folder in/ holds no images" (its images were all under the output)."""
    images = tmp_path / "in"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), random_bgr(1))
    assert cli.main(segment_args(str(images), "-o", str(tmp_path), "--overwrite", weights=tiny_weights)) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"bisenetv2 segment: error: --output {tmp_path} holds the input {images}; choose an --output " \
                  "outside the inputs (an output folder is replaced as a whole)"
    assert (images / "a.png").is_file()


def test_segment_onto_the_input_itself_is_refused(tmp_path, tiny_weights, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_bgr(2))
    before = image.read_bytes()
    assert cli.main(segment_args(str(image), "-o", str(image), "--overwrite", weights=tiny_weights)) == 1
    assert f"is the input {image}" in capsys.readouterr().err
    assert image.read_bytes() == before


def test_images_sharing_a_stem_get_one_output_each(tmp_path, tiny_weights, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, suffix in enumerate((".jpg", ".png", ".jpeg")):
        cv2.imwrite(str(folder / f"frame{suffix}"), random_bgr(10 + i))
    cv2.imwrite(str(folder / "other.png"), random_bgr(20))
    out = tmp_path / "out"
    assert cli.main(segment_args(str(folder), "-o", str(out), "--outputs", "labels", weights=tiny_weights)) == 0
    assert "segmented 4 images" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "frame.jpeg.png", "frame.jpg.png", "frame.png.png", "other.png"]


def test_distinct_names_keep_the_extension_only_where_stems_collide():
    names = distinct_names([Path("a/x.jpg"), Path("a/X.png"), Path("b/x.jpg"), Path("y.tif")], ".png")
    assert names == [Path("a/x.jpg.png"), Path("a/X.png.png"), Path("b/x.png"), Path("y.png")]


def test_overwrite_replaces_only_an_unchanged_previous_output(tmp_path, tiny_weights, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_bgr(3))
    out = tmp_path / "out"
    assert cli.main(segment_args(str(image), "-o", str(out), weights=tiny_weights)) == 0
    record = json.loads((out / FOLDER_RECORD).read_text())
    assert record["command"] == "bisenetv2 segment" and "labels/x.png" in record["files"]
    (out / "labels" / "my_notes.txt").write_text("added by the user")
    assert cli.main(segment_args(str(image), "-o", str(out), "--overwrite", weights=tiny_weights)) == 1
    err = capsys.readouterr().err
    assert "labels/my_notes.txt in it was not written by `bisenetv2 segment`" in err and "remove it yourself" in err
    assert (out / "labels" / "my_notes.txt").read_text() == "added by the user"
    (out / "labels" / "my_notes.txt").unlink()
    assert cli.main(segment_args(str(image), "-o", str(out), "--overwrite", weights=tiny_weights)) == 0


def test_a_regular_file_is_never_replaced_by_a_folder(tmp_path, tiny_weights, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_bgr(4))
    (tmp_path / "out").write_text("a file of the user")
    assert cli.main(segment_args(str(image), "-o", str(tmp_path / "out"), "--overwrite", weights=tiny_weights)) == 1
    assert "is a file, and this output is a folder" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "a file of the user"


def test_an_output_written_by_another_command_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / FOLDER_RECORD).write_text(json.dumps({"command": "bisenetv2 other", "files": {}}))
    with pytest.raises(UnsafeOutput, match="it was written by `bisenetv2 other`"):
        check_output(out, "bisenetv2 segment", overwrite=True)
    assert check_output(out, "bisenetv2 other", overwrite=True) == out


# --------------------------------------------------------------------------------------------
# export, import, evaluate


@pytest.fixture
def train_checkpoint(tmp_path) -> Path:
    return make_tiny_checkpoint(tmp_path / "ck.pt", kind="train")


def test_export_onto_its_own_checkpoint_is_refused(train_checkpoint, capsys):
    before = train_checkpoint.read_bytes()
    for extra in ((), ("--overwrite",)):
        assert cli.main(["export", str(train_checkpoint), "-o", str(train_checkpoint), *extra]) == 1
        assert capsys.readouterr().err.strip() == (f"bisenetv2 export: error: --output {train_checkpoint} is the input "
                                                   f"{train_checkpoint}; write the output to another path")
    assert train_checkpoint.read_bytes() == before and load_checkpoint(train_checkpoint).kind == "train"


def test_training_export_onto_its_own_checkpoint_is_refused(train_checkpoint, capsys):
    from training.export import run

    before = train_checkpoint.read_bytes()
    assert run([str(train_checkpoint), str(train_checkpoint)]) == 1
    assert capsys.readouterr().err.strip() == (f"training/export.py: error: --output {train_checkpoint} is the input "
                                               f"{train_checkpoint}; write the output to another path")
    assert train_checkpoint.read_bytes() == before


def test_export_refuses_an_onnx_path_named_like_a_checkpoint_and_one_file_for_two_outputs(train_checkpoint, capsys):
    folder = train_checkpoint.parent
    assert cli.main(["export", str(train_checkpoint), "--onnx", str(folder / "x.pt")]) == 1
    assert "--onnx " + str(folder / "x.pt") + ": that is a checkpoint's name" in capsys.readouterr().err
    assert cli.main(["export", str(train_checkpoint), "-o", str(folder / "x.pt"), "--onnx", str(folder / "x.pt")]) == 1
    assert "--output and --onnx name the same file" in capsys.readouterr().err
    assert cli.main(["export", str(train_checkpoint), "-o", str(folder / "x.onnx")]) == 1
    assert "that is an ONNX model's name" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["ck.pt"]


def test_export_replaces_only_its_own_previous_files(train_checkpoint, capsys):
    folder = train_checkpoint.parent
    unrelated = folder / "deploy.pt"
    unrelated.write_bytes(b"someone else's file")
    for extra in ((), ("--overwrite",)):
        assert cli.main(["export", str(train_checkpoint), "-o", str(unrelated), *extra]) == 1
        assert "remove it yourself" in capsys.readouterr().err
    assert unrelated.read_bytes() == b"someone else's file"
    unrelated.unlink()
    assert cli.main(["export", str(train_checkpoint), "-o", str(unrelated)]) == 0
    assert json.loads((folder / FILE_RECORDS).read_text())["deploy.pt"]["command"] == "bisenetv2 export"
    assert cli.main(["export", str(train_checkpoint), "-o", str(unrelated)]) == 1
    assert "or pass --overwrite to replace it" in capsys.readouterr().err
    assert cli.main(["export", str(train_checkpoint), "-o", str(unrelated), "--half", "--overwrite"]) == 0
    assert next(iter(torch.load(unrelated, weights_only=True)["state_dict"].values())).dtype == torch.float16


def test_import_onto_its_source_is_refused(tmp_path, capsys):
    source = make_tiny_checkpoint(tmp_path / "src.pt")
    before = source.read_bytes()
    assert cli.main(["import", str(source), str(source), "--overwrite"]) == 1
    assert f"OUT {source} is the input {source}" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_evaluate_output_onto_the_weights_is_refused(tmp_path, tiny_weights):
    from training.evaluate import main

    weights = make_tiny_checkpoint(tmp_path / "w.pt")
    with pytest.raises(UnsafeOutput, match="is the input"):
        main(["--weights", str(weights), "--dataset", "camvid", "--root", str(tmp_path), "--output", str(weights)])
    assert load_checkpoint(weights).kind == "deploy"


# --------------------------------------------------------------------------------------------
# training run folders


def test_run_folder_rule(tmp_path):
    check_run_folder(tmp_path, resume=False)  # an empty folder is fine
    (tmp_path / "log.jsonl").write_text("{}")
    with pytest.raises(UnsafeOutput, match=r"holds a run already \(log.jsonl\)"):
        check_run_folder(tmp_path, resume=False)
    check_run_folder(tmp_path, resume=True)
    with pytest.raises(UnsafeOutput, match="is a file"):
        check_run_folder(tmp_path / "log.jsonl", resume=True)


def test_training_refuses_an_existing_run_and_keeps_a_better_best(tmp_path, capsys):
    from test_training import _synthetic_folder, _tiny_config

    from training import train

    data = _synthetic_folder(tmp_path / "data", count=4)
    run = tmp_path / "run"
    train.Trainer(_tiny_config(data, run, 2, eval_every=2), progress=False).train()
    best = run / "best.pt"
    before = best.read_bytes()
    with pytest.raises(UnsafeOutput, match=r"holds a run already \(latest.pt, best.pt, log.jsonl, config.yaml\); "
                                           r"pass --resume to continue it, or --out-dir NEW_FOLDER"):
        train.Trainer(_tiny_config(data, run, 2), progress=False)
    assert best.read_bytes() == before
    # the same through the script's entry: one line, exit status 1
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: folder, root: %s}\n" % data)
    assert train_script(["--config", str(config), "--out-dir", str(run)]) == 1
    assert capsys.readouterr().err.strip().startswith(f"training/train.py: error: run folder {run} holds a run already")
    # best.pt of a resumed run whose latest.pt is gone: a new best must beat the recorded one
    checkpoint = load_checkpoint(best)
    checkpoint.info.metrics["val_miou"] = 0.99
    save_checkpoint(checkpoint, best)
    kept = best.read_bytes()
    (run / "latest.pt").unlink()
    result = train.Trainer(_tiny_config(data, run, 2, eval_every=2), resume=True, progress=False).train()
    assert result["best_miou"] == 0.99 and result["last"]["miou"] < 0.99
    assert best.read_bytes() == kept


def train_script(argv: list[str]) -> int:
    from bisenetv2_ros.cli.arguments import run_script
    from training import train

    return run_script("training/train.py", train.main, argv)


def test_records_do_not_count_as_images(tmp_path, tiny_weights, capsys):
    """A previous output inside the input folder is skipped, record and all."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), random_bgr(5))
    out = folder / "seg"
    for extra in ((), ("--overwrite",)):
        assert cli.main(segment_args(str(folder), "-o", str(out), *extra, weights=tiny_weights)) == 0
        assert "segmented 1 images" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "seg"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png"]
