"""Checkpoint contents validated as data (issue 32, rule 2): one registry of part checks that every
entry point runs; `info` says per part whether it is usable and why not."""

from __future__ import annotations

import json

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
    """A well-formed table keyed by the tiny weights (ranges made up: the data checks do not run a graph)."""
    model, info = load_model(tiny_weights)
    return {"version": 1, "method": "MinMax", "network_sha256": network_fingerprint(model, info.normalization),
            "input_size": [64, 96], "frames": 4, "source": "made up", "onnxruntime": "1.0",
            "tensors": {f"/model/t{i}": [-1.0 - i, 2.0 + i] for i in range(117)}}


def broken(table: dict, case: str):
    tensors = dict(table["tensors"])
    first = next(iter(tensors))
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
EXPECTED = {"all ranges infinite": "117 of its 117 ranges are not two finite numbers",
            "a string range": "1 of its 117 ranges are not two finite numbers (/model/t0)",
            "NaN": "1 of its 117 ranges are not two finite numbers", "min above max": "lowest > highest (/model/t0)",
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
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("  int8 calibration table: ")]
    assert line.startswith("  int8 calibration table: NOT usable: ") and EXPECTED[case] in line, out
    assert "\n  weights: usable" in out
    assert main(["info", path, "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["parts"]
    assert parts["weights"] == {"present": True, "usable": True, "problem": None}
    assert parts["int8 calibration table"]["usable"] is False and EXPECTED[case] in parts[
        "int8 calibration table"]["problem"]
    # int8 never uses it: with no frames known for these weights it is a clear refusal, not "all sky"
    from bisenetv2_ros.inference.segmenter import Segmenter

    with pytest.raises(BackendError, match="needs calibration frames"):
        Segmenter(path, backend="onnxruntime", device="cpu", precision="int8", engine_cache_dir=tmp_path / "c")
    assert EXPECTED[case] in caplog.text
    # export removes it, saying why (not "measured on other weights")
    message = deploy_calibration(path)
    assert message.startswith("removed (the calibration table is malformed: ") and EXPECTED[case] in message
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
