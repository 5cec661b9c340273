"""Checkpoint contents validated as data (issue 32, rule 2): one registry of part checks that every
entry point runs; `info` says per part whether it is usable and why not."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from bisenetv2_ros.cli.commands import main
from bisenetv2_ros.inference.backends import BackendError
from bisenetv2_ros.inference.calibration_store import deploy_calibration, embed_calibration_table
from bisenetv2_ros.inference.calibration_table import network_fingerprint, table_problem
from bisenetv2_ros.weights import checkpoint_parts
from bisenetv2_ros.weights.checkpoint import CheckpointError, load_checkpoint
from bisenetv2_ros.weights.known_weights import load_model

INF = float("inf")


@pytest.fixture(scope="module")
def good_table(tiny_weights):
    """The tiny weights' table, measured on random frames (the broken cases below damage copies of it)."""
    from test_backends import random_frames

    from bisenetv2_ros.inference.calibration_store import measure_calibration_table
    from bisenetv2_ros.inference.int8 import CalibrationSet

    model, info = load_model(tiny_weights)
    return measure_calibration_table(model, info.normalization, info.train_resolution,
                                     CalibrationSet(random_frames((2, *info.train_resolution), seed=3)), "random")


def broken(table: dict, case: str):
    tensors = dict(table["tensors"])
    first = "/model/t0"  # a range the cases below damage, named alike whatever the graph's names are
    tensors = {first: [-1.0, 2.0], **tensors}
    if case == "all ranges infinite":
        return {**table, "tensors": {name: [-INF, INF] for name in tensors}}
    if case == "a string range":
        return {**table, "tensors": {**tensors, first: ["-1", 2.0]}}
    if case == "NaN":
        return {**table, "tensors": {**tensors, first: [float("nan"), 1.0]}}
    if case == "min above max":
        return {**table, "tensors": {**tensors, first: [3.0, 1.0]}}
    if case == "version 99":
        return {**table, "version": 99}
    if case == "a list":
        return [1, 2, 3]
    raise AssertionError(case)


CASES = ["all ranges infinite", "a string range", "NaN", "min above max", "version 99", "a list"]
EXPECTED = {"all ranges infinite": "{n} of its {n} ranges are not two finite numbers",
            "a string range": "1 of its {n} ranges are not two finite numbers (/model/t0)",
            "NaN": "1 of its {n} ranges are not two finite numbers", "min above max": "lowest > highest (/model/t0)",
            "version 99": "version 99", "a list": "it is a list, not a mapping"}


def with_table(tiny_weights, tmp_path, table) -> str:
    """The tiny checkpoint with ``table`` written as it is (as an edited or damaged file holds it)."""
    path = tmp_path / "with_table.pt"
    data = torch.load(tiny_weights, weights_only=True)
    data["info"]["calibration"] = table
    torch.save(data, path)
    return str(path)


@pytest.mark.parametrize("case", CASES)
def test_info_export_and_int8_refuse_a_malformed_table_naming_why(tiny_weights, good_table, tmp_path, capsys, caplog,
                                                                  case):
    path = with_table(tiny_weights, tmp_path, broken(good_table, case))
    expected = EXPECTED[case].replace("{n}", str(len(good_table["tensors"]) + 1))
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("  int8 calibration table: ")]
    assert line.startswith("  int8 calibration table: NOT usable: ") and expected in line, out
    assert "\n  weights: usable" in out
    assert main(["info", path, "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["parts"]
    assert parts["weights"] == {"present": True, "usable": True, "problem": None}
    assert parts["int8 calibration table"]["usable"] is False and expected in parts[
        "int8 calibration table"]["problem"]
    # int8 never uses it: with no frames known for these weights it is a clear refusal, not "all sky"
    from bisenetv2_ros.inference.segmenter import Segmenter

    with pytest.raises(BackendError, match="needs calibration frames"):
        Segmenter(path, backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path / "c")
    assert expected in caplog.text
    # export removes it, saying why (not "measured on other weights")
    message = deploy_calibration(path)
    assert message.startswith("removed (the calibration table is malformed: ") and expected in message
    assert load_checkpoint(path).info.calibration is None


def test_import_keeps_going_with_a_table_stored_as_a_list(tiny_weights, good_table, tmp_path, capsys):
    path = with_table(tiny_weights, tmp_path, [1, 2])
    assert main(["import", path, str(tmp_path / "copy.pt")]) == 0, capsys.readouterr().err
    assert main(["info", str(tmp_path / "copy.pt")]) == 0
    assert "int8 calibration table: NOT usable: it is a list" in capsys.readouterr().out


def test_a_good_table_is_usable_and_one_of_other_weights_says_so(tiny_weights, good_table, tmp_path, capsys):
    path = with_table(tiny_weights, tmp_path, good_table)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "\n  int8 calibration table: usable" in out and "\n  weights: usable" in out
    embed_calibration_table(path, {**good_table, "network_sha256": "0" * 64})
    assert main(["info", path]) == 0
    assert "int8 calibration table: NOT usable: the calibration table was measured on other weights" in \
        capsys.readouterr().out
    model, info = load_model(path)
    assert "other weights" in table_problem(info.calibration, network_fingerprint(model, info.normalization))


def test_weights_of_the_wrong_shape_are_refused_by_info_and_import_in_one_line(tiny_weights, tmp_path, capsys):
    data = torch.load(tiny_weights, weights_only=True)
    key = next(k for k, v in data["state_dict"].items() if v.ndim == 4)
    data["state_dict"][key] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "wrong_shape.pt"
    torch.save(data, path)
    for argv in (["info", str(path)], ["import", str(path), str(tmp_path / "out.pt")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"{path}: the weights are unusable: they do not fit the bisenetv2 network: wrong shapes (1): {key} " \
               "(3, 3, 1, 1) instead of" in err
    assert not (tmp_path / "out.pt").exists()
    del data["state_dict"][key]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=rf"missing tensors \(1\): {key}"):
        load_checkpoint(path)


def test_a_new_part_registers_its_check_in_one_place(tiny_weights, monkeypatch, capsys):
    """What issue 30's OOD record does: one call, and `info` reports it."""
    monkeypatch.setattr(checkpoint_parts, "PARTS", dict(checkpoint_parts.PARTS))
    checkpoint_parts.register_part_check("ood threshold", lambda ck: True, lambda ck: "threshold is NaN")
    assert main(["info", str(tiny_weights)]) == 0
    assert "\n  ood threshold: NOT usable: threshold is NaN" in capsys.readouterr().out
    checkpoint_parts.register_part_check("ood threshold", lambda ck: True, lambda ck: None)
    reports = {r.name: r for r in checkpoint_parts.part_reports(load_checkpoint(tiny_weights))}
    assert reports["ood threshold"].problem == "threshold is NaN"  # every check of a part must pass
    assert reports["weights"].line() == "weights: usable"


def test_a_table_missing_ranges_the_graph_needs_is_reported_removed_and_not_used(tiny_weights, good_table, tmp_path,
                                                                                capsys, caplog, monkeypatch):
    """Half the tensors of a table deleted (the issue's 58 of 117): well formed, of these weights, and
    still unusable for the nodes the backends quantise; `info` says so without building an int8 graph, `export` removes it, int8 calibrates on
    frames instead where it knows some, else refuses naming the table."""
    from test_backends import random_frames

    from bisenetv2_ros.inference import int8
    from bisenetv2_ros.inference.segmenter import Segmenter

    names = sorted(good_table["tensors"])
    kept = names[::2]  # every other range: gaps in every part of the network
    path = with_table(tiny_weights, tmp_path, {**good_table, "tensors": {k: good_table["tensors"][k] for k in kept}})
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("  int8 calibration table: ")]
    found = re.fullmatch(r"  int8 calibration table: NOT usable: it has ranges for (\d+) of the (\d+) tensors the int8 "
                         r"graph needs \(missing: (.*), \.\.\. \((\d+) more\)\)", line)
    assert found, line
    covered, needed, listed, more = int(found[1]), int(found[2]), found[3].split(", "), int(found[4])
    # the good table covers every tensor the backends quantise (and the float parts': it is measured on all)
    assert 0 < covered < needed < len(names) and covered + len(listed) + more == needed
    assert set(listed) <= set(names) - set(kept)  # the missing ones named are ones deleted
    assert main(["info", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parts"]["int8 calibration table"]["usable"] is False
    # int8 with no frames known for these weights: refused, naming the table's gap
    with pytest.raises(BackendError, match=r"the calibration table has no range for \d+ tensors of this graph"):
        Segmenter(path, backend="onnxruntime", device="cpu", precision="int8",
                  engine_cache_dir=tmp_path / "c1").segment(random_frames((1, 64, 96), seed=9)[0])
    # ... and with frames known: the table is not used (said once), int8 runs on the frames
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    import cv2

    for i, frame in enumerate(random_frames((3, 64, 96), seed=8)):
        cv2.imwrite(str(frames_dir / f"{i}.png"), frame)
    monkeypatch.setattr(int8, "default_calibration_folder", lambda dataset, root=None: frames_dir)
    caplog.clear()
    segmenter = Segmenter(path, backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path / "c2")
    assert segmenter.segment(random_frames((1, 64, 96), seed=9)[0]).shape == (64, 96)
    assert "int8: the weights' calibration table is not used (the calibration table has no range for" in caplog.text
    monkeypatch.undo()
    message = deploy_calibration(path)
    assert message.startswith("removed (the calibration table is incomplete: it has ranges for "), message
    assert load_checkpoint(path).info.calibration is None


OOD_CASES = {  # a damaged OOD calibration -> what `info` says is wrong with it
    "a list": ([1, 2], "it is a list, not a mapping"),
    "format 99": ({"format": 99}, "it has format 99"),
    "NaN reference": ("nan", "its reference layouts hold values that are not finite numbers"),
    "other classes": ("width", "its reference layouts are not lists of 33 numbers (3 bands x 11 classes): measured for another class list?"),
    "zero scale": ("scale", "its scales must give each of layout, unsure, blur, clipped a finite number above 0"),
    "inf threshold": ("threshold", "its threshold inf is not a finite number above 0"),
}


def _good_ood() -> dict:
    return {"format": 1, "references": [[1 / 11] * 33, [0.5] + [0.05] * 32], "threshold": 1.5,
            "scales": {"layout": 0.3, "unsure": 0.2, "blur": 1.0, "clipped": 0.1},
            "references_from": {"split": "made up", "frames": 2}, "measured_on": {"split": "made up", "frames": 4}}


@pytest.mark.parametrize("case", sorted(OOD_CASES))
def test_a_damaged_ood_calibration_is_reported_not_used_and_removed_by_export(tiny_weights, tmp_path, capsys, caplog,
                                                                              case):
    from bisenetv2_ros.inference.ood import OODScorer
    from bisenetv2_ros.inference.ood_calibration import deploy_ood_calibration
    from bisenetv2_ros.weights.checkpoint import replace_info_entry

    value, expected = OOD_CASES[case]
    good = _good_ood()
    stored = {"nan": {**good, "references": [[float("nan")] * 33]}, "width": {**good, "references": [[0.1] * 30]},
              "scale": {**good, "scales": {**good["scales"], "blur": 0.0}},
              "threshold": {**good, "threshold": float("inf")}}.get(value, value) if isinstance(value, str) else value
    path = tmp_path / "ood.pt"
    path.write_bytes(open(tiny_weights, "rb").read())
    replace_info_entry(path, "ood", good)
    assert main(["info", str(path)]) == 0
    assert "\n  ood calibration: usable" in capsys.readouterr().out
    replace_info_entry(path, "ood", stored)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"\n  ood calibration: NOT usable: {expected}" in out, out
    assert f"ood calibration:  NOT usable: {expected}" in out
    scorer = OODScorer(load_checkpoint(path).info.ood, 11)
    assert not scorer.calibrated and f"ood: the weights' calibration is not used" in caplog.text and expected in caplog.text
    message = deploy_ood_calibration(path)
    assert message.startswith(f"removed ({expected}") and message.endswith("; measure one with `bisenetv2 calibrate-ood`)")
    assert load_checkpoint(path).info.ood is None


INFO_CASES = {  # an edited info entry -> the one line every command gives
    "NaN std": (("normalization", "std"), [float("nan"), 0.2, 0.2], "normalization mean and std must be finite numbers"),
    "string mean": (("normalization", "mean"), ["a", 0.2, 0.2], "normalization mean and std must be finite numbers"),
    "zero resolution": (("train_resolution",), [0, 5], "train_resolution must be [height, width] in whole pixels"),
    "huge resolution": (("train_resolution",), [10 ** 9, 10 ** 9], "train_resolution 1000000000x1000000000 is above"),
    "text metric": (("metrics",), {"val_miou": "high"}, "metrics must be numbers; val_miou is not"),
    "metrics as a list": (("metrics",), [1, 2], "metrics must be a mapping of names to values, got a list"),
    "info as a list": ((), [1], "info: it is a list, not a mapping"),
}


@pytest.mark.parametrize("case", sorted(INFO_CASES))
def test_every_info_entry_is_checked_as_the_file_is_read(tiny_weights, tmp_path, capsys, case):
    keys, value, expected = INFO_CASES[case]
    data = torch.load(tiny_weights, weights_only=True)
    if keys:
        holder = data["info"]
        for key in keys[:-1]:
            holder = holder[key]
        holder[keys[-1]] = value
    else:
        data["info"] = value
    path = tmp_path / "edited.pt"
    torch.save(data, path)
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((64, 96, 3), np.uint8))
    for argv in (["info", str(path)], ["segment", str(image), "--weights", str(path), "--output", str(tmp_path / "o")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{path}: malformed checkpoint: " in err and expected in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("kind", "zzz", "checkpoint kind must be one of ('deploy', 'train'), got 'zzz'"),
    ("version", "x", "has format version 'x'; this package reads up to 1"),
])
def test_the_format_fields_name_the_file(tiny_weights, tmp_path, field, value, expected):
    data = torch.load(tiny_weights, weights_only=True)
    data[field] = value
    path = tmp_path / "edited.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert str(raised.value).startswith(str(path)) and expected in str(raised.value)


def test_a_graph_that_cannot_be_built_makes_the_table_unusable_not_info_fail(tiny_weights, good_table, tmp_path, capsys,
                                                                             monkeypatch):
    from bisenetv2_ros.inference import calibration_store

    path = with_table(tiny_weights, tmp_path, good_table)

    def no_graph(*args, **kwargs):
        raise RuntimeError("exporter exploded\nsecond line")

    monkeypatch.setattr(calibration_store, "calibration_graph", no_graph)
    assert main(["info", path]) == 0
    assert ("\n  int8 calibration table: NOT usable: the int8 graph it is for cannot be built here (RuntimeError: "
            "exporter exploded)\n") in capsys.readouterr().out
