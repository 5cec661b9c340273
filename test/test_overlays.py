"""training/overlays.py: before/after overlay pictures, on synthetic frames and tiny weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_tiny_checkpoint

from bisenetv2_ros.classes import CAMVID, IGNORE_INDEX
from bisenetv2_ros.inference.segmenter import Segmenter
from training.overlays import GAP, TITLE_HEIGHT, compose, frame_panels, legend, main, spread_indices


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A folder dataset of 5 smooth 40x56 frames with CamVid's classes; some label pixels ignored."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for i in range(5):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{i}.png"), cv2.resize(small, (56, 40)))
        label = rng.integers(0, 11, (40, 56), dtype=np.uint8)
        label[:5] = IGNORE_INDEX
        cv2.imwrite(str(root / "labels" / f"{i}.png"), label)
    (root / "classes.txt").write_text("\n".join(CAMVID.names) + "\n")
    return root


@pytest.fixture(scope="module")
def two_weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("w")
    return (make_tiny_checkpoint(folder / "before.pt", seed=0), make_tiny_checkpoint(folder / "after.pt", seed=1))


def test_the_picture_holds_ground_truth_before_and_after_side_by_side(synthetic, two_weights, tmp_path, capsys):
    from training.datasets import folder

    out = main(["--before", str(two_weights[0]), "--after", str(two_weights[1]), "--dataset", "folder",
                "--root", str(synthetic), "--split", "none", "--frames", "2", "--max-width", "1000",
                "--output", str(tmp_path / "pics" / "grid.png")])
    assert "frames [0, 4] of folder:" in capsys.readouterr().out
    picture = cv2.imread(str(out))[..., ::-1]
    before, after = (Segmenter(w, backend="torch", device="cpu", precision="fp32") for w in two_weights)
    dataset = folder(synthetic)
    legend_height = legend(CAMVID, picture.shape[1]).shape[0]
    assert picture.shape == (TITLE_HEIGHT + 2 * (40 + GAP) + legend_height, GAP + 3 * (56 + GAP), 3)
    for row, index in enumerate([0, 4]):
        image, label = dataset[index]
        truth, expected_before, expected_after = frame_panels(before, after, image, label)
        for column, expected in enumerate([truth, expected_before, expected_after]):
            top, left = TITLE_HEIGHT + row * (40 + GAP), GAP + column * (56 + GAP)
            np.testing.assert_array_equal(picture[top:top + 40, left:left + 56], expected)
        np.testing.assert_array_equal(expected_before, before.overlay(image, before.segment(image)))
        assert not np.array_equal(expected_before, expected_after)  # two different models
        np.testing.assert_array_equal(truth[:5], image[:5])  # unlabelled pixels show the plain frame
        np.testing.assert_array_equal(truth[5:], before.overlay(image, label)[5:])


def test_jpeg_output_is_scaled_to_the_width_and_small(synthetic, two_weights, tmp_path):
    out = main(["--before", str(two_weights[0]), "--after", str(two_weights[1]), "--dataset", "folder",
                "--root", str(synthetic), "--split", "none", "--indices", "1", "3", "--max-width", "120",
                "--output", str(tmp_path / "grid.jpg")])
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 120 and out.stat().st_size < 30 * 1024


@pytest.mark.parametrize("extra, message", [
    (["--frames", "0"], "argument --frames: expected an integer from 1 to 1000, got '0'"),
    (["--indices", "2", "9"], r"--indices \[9\] are outside folder:.*'s 5 frames \(0..4\)"),
    (["--quality", "0"], "--quality must be in 1..100"),
])
def test_bad_arguments_are_one_clear_error(synthetic, two_weights, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--before", str(two_weights[0]), "--after", str(two_weights[1]), "--dataset", "folder",
              "--root", str(synthetic), "--split", "none", "--output", str(tmp_path / "x.jpg"), *extra])
    assert exit_info.value.code == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x.jpg").exists()


def test_weights_of_other_classes_and_odd_outputs_are_refused(synthetic, two_weights, tmp_path, capsys):
    other = make_tiny_checkpoint(tmp_path / "three.pt", num_classes=3)
    common = ["--dataset", "folder", "--root", str(synthetic), "--split", "none"]
    with pytest.raises(SystemExit):
        main(["--before", str(two_weights[0]), "--after", str(other), *common, "--output", str(tmp_path / "x.jpg")])
    assert "predicts ['class_0', 'class_1', 'class_2'], not the classes of folder:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--before", str(two_weights[0]), "--after", str(two_weights[1]), *common, "--output", str(tmp_path / "x.gif")])
    assert "must end in .jpg, .jpeg or .png" in capsys.readouterr().err


def test_compose_and_spread_helpers():
    assert spread_indices(62, 3) == [0, 30, 61] and spread_indices(2, 5) == [0, 1] and spread_indices(7, 1) == [0]
    panel = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="rows of 3 panels each"):
        compose([[panel, panel]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="one size"):
        compose([[panel, np.zeros((11, 12, 3), np.uint8)]], ["a", "b"])
    grid = compose([[panel, panel]], ["a", "b"])
    assert grid.shape == (TITLE_HEIGHT + 10 + GAP, GAP + 2 * (12 + GAP), 3)
    assert (grid[TITLE_HEIGHT:TITLE_HEIGHT + 10, GAP:GAP + 12] == 0).all() and (grid[:, :GAP] == 255).all()
    strip = legend(CAMVID, 200)
    assert strip.shape[1] == 200 and strip.shape[0] > 26  # wrapped onto several lines
    colours = {tuple(c) for c in strip.reshape(-1, 3)}
    assert all(tuple(c) in colours for c in CAMVID.palette)  # every class has its swatch
