"""open_weights: one way to open weights by name or path (read once), the default name, and the clear
errors for an unknown name or a file that is no checkpoint (from the API and the CLI)."""

from __future__ import annotations

import json

import pytest
import torch
from test_download import make_mmseg_checkpoint

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.inference.segmenter import Segmenter
from bisenetv2_ros.weights.checkpoint import CheckpointError, load_checkpoint
from bisenetv2_ros.weights.known_weights import DEFAULT_WEIGHTS, KNOWN_WEIGHTS, PACKAGE_WEIGHTS_DIR, open_weights


@pytest.fixture
def torch_loads(monkeypatch) -> list:
    """The paths torch.load is asked to read, in order."""
    calls = []
    real_load = torch.load

    def counting_load(path, *args, **kwargs):
        calls.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return calls


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_path_opens_our_checkpoint_reading_it_once(tiny_weights, torch_loads):
    opened = open_weights(str(tiny_weights))
    assert torch_loads == [str(tiny_weights)]
    assert opened.name == str(tiny_weights) and opened.path == tiny_weights and opened.known is None
    assert opened.architecture == "bisenetv2" and opened.info.train_resolution == (64, 96)
    assert opened.checkpoint.config == load_checkpoint(tiny_weights).config
    model = opened.build_model()
    assert not model.training and model.aux_heads is None
    assert _same_weights(model, load_checkpoint(tiny_weights).build_model())


def test_a_name_opens_the_packaged_weights(torch_loads):
    opened = open_weights("camvid")
    assert opened.path == PACKAGE_WEIGHTS_DIR / KNOWN_WEIGHTS["camvid"].file_name
    assert opened.known is KNOWN_WEIGHTS["camvid"] and opened.name == "camvid"
    assert opened.info.classes.names[0] == "sky" and len(opened.info.classes) == 11
    assert len(torch_loads) == 1


@pytest.mark.parametrize("weights", [None, ""])
def test_no_weights_means_the_default(weights):
    assert DEFAULT_WEIGHTS == "camvid" and DEFAULT_WEIGHTS in KNOWN_WEIGHTS
    opened = open_weights(weights)
    assert opened.name == DEFAULT_WEIGHTS and opened.known is KNOWN_WEIGHTS[DEFAULT_WEIGHTS]


def test_unknown_name_lists_the_known_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        open_weights("cityscapes-huge")
    message = str(error.value)
    assert message.startswith("weights 'cityscapes-huge' is neither an existing file nor a known name (")
    assert all(name in message for name in KNOWN_WEIGHTS) and "\n" not in message


def test_an_onnx_file_says_what_it_is_and_what_to_pass(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(range(200)))
    with pytest.raises(CheckpointError) as error:
        open_weights(str(path))
    message = str(error.value)
    assert message.startswith(f"{path} is an ONNX model, not a checkpoint")
    assert "pass the checkpoint (.pt/.pth) or known weights name it was exported from" in message
    assert "onnxruntime backend" in message and "\n" not in message


def test_opened_weights_are_passed_through_and_serve_two_segmenters(tiny_weights, torch_loads):
    opened = open_weights(tiny_weights)
    assert open_weights(opened) is opened
    first = Segmenter(opened, backend="torch", device="cpu", precision="fp32")
    second = Segmenter(opened, backend="torch", device="cpu", precision="fp32")
    assert torch_loads == [str(tiny_weights)]
    assert first.weights == second.weights == str(tiny_weights)
    assert first.input_size == (64, 96) and first.classes == opened.info.classes


def test_a_segmenter_reads_its_weights_once(tiny_weights, torch_loads):
    Segmenter(str(tiny_weights), backend="torch", device="cpu", precision="fp32")
    assert torch_loads == [str(tiny_weights)]


def test_a_public_checkpoint_by_path_is_detected_and_converted(tmp_path, torch_loads):
    path, model = make_mmseg_checkpoint(tmp_path / "public.pth")
    opened = open_weights(path)
    assert len(torch_loads) == 1
    assert opened.info.provenance["imported_from"] == "mmsegmentation"
    assert opened.info.provenance["source_file"] == "public.pth"
    assert _same_weights(opened.build_model(), model)


def test_a_named_public_checkpoint_takes_its_entry_metadata(tmp_path, monkeypatch, torch_loads):
    entry = KNOWN_WEIGHTS["mmseg-cityscapes"]
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    make_mmseg_checkpoint(tmp_path / entry.file_name)
    opened = open_weights("mmseg-cityscapes")
    assert len(torch_loads) == 1 and opened.known is entry
    assert opened.info.metrics == entry.info.metrics and opened.info.train_resolution == (1024, 2048)
    assert opened.info.provenance["license"] == "Apache-2.0"


def test_an_unknown_dict_layout_is_refused_by_name(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer1.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout, neither a bisenetv2_ros checkpoint nor "
                                              r"a known public one \(first keys: layer1.weight\)"):
        open_weights(path)


# --------------------------------------------------------------------------------------------
# The command line


@pytest.mark.parametrize("argv", [["segment", "{img}", "--weights", "{weights}", "--backend", "torch", "--quiet"],
                                  ["info", "{weights}"], ["export", "{weights}", "--output", "{tmp}/out.pt"]])
@pytest.mark.parametrize("name,content,what", [
    ("model.onnx", b"\x08\x08\x12\x07pytorch" + bytes(range(200)), "is an ONNX model, not a checkpoint"),
    ("model.engine", b"ftrt" + bytes(range(200)), "is a TensorRT engine, not a checkpoint"),
    ("notes.txt", b"not weights\n", "is a text file (.txt), not a PyTorch checkpoint"),
])
def test_cli_weights_that_are_no_checkpoint_give_one_line(tmp_path, capsys, argv, name, content, what):
    import cv2
    import numpy as np

    weights = tmp_path / name
    weights.write_bytes(content)
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    args = [a.format(img=tmp_path / "x.png", weights=weights, tmp=tmp_path) for a in argv]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{weights} {what}" in err[0], err
    assert "Traceback" not in err[0] and "Python objects" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "x.png"])  # nothing written


def test_cli_info_reads_our_checkpoint_once(tiny_weights, torch_loads, capsys):
    assert cli.main(["info", str(tiny_weights)]) == 0
    assert torch_loads == [str(tiny_weights)]
    assert "kind:             deploy checkpoint" in capsys.readouterr().out


def test_cli_info_of_a_known_name_not_downloaded_shows_its_entry(tmp_path, monkeypatch, capsys, torch_loads):
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    assert cli.main(["info", "mmseg-cityscapes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] is None and "not downloaded yet" in data["note"]
    assert data["metrics"]["val_miou"] == KNOWN_WEIGHTS["mmseg-cityscapes"].info.metrics["val_miou"]
    assert "kind" not in data and torch_loads == []


def test_download_refuses_an_unknown_name_listing_the_known_ones(capsys):
    assert cli.main(["download", "cityscapes-huge"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown weights 'cityscapes-huge'; known: " + ", ".join(KNOWN_WEIGHTS) in err[0]

