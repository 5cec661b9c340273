"""Every published BiSeNet checkpoint is a known name (known_weights.KNOWN_WEIGHTS): its URL, checksum,
classes, normalisation, input size and published mIoU as its publisher states them, and a file of its
publisher's layout (random weights, made here: nothing downloads) opens under that name."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch
from test_download import QuietHandler
from test_importers import coincheung_state_dict, mmseg_state_dict
from test_importers_v1 import coincheung_v1_state_dict, mmseg_v1_state_dict

from bisenetv2_ros.class_tables import ADE20K, COCO_STUFF
from bisenetv2_ros.classes import CITYSCAPES
from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.weights.checkpoint import CheckpointError
from bisenetv2_ros.weights.download import DownloadError, download_weights
from bisenetv2_ros.weights.known_weights import KNOWN_WEIGHTS, open_weights

PUBLIC = {name: entry for name, entry in KNOWN_WEIGHTS.items() if not entry.embedded}
MAKERS = {"mmsegmentation": mmseg_state_dict, "mmsegmentation-bisenetv1": mmseg_v1_state_dict,
          "coincheung": coincheung_state_dict, "coincheung-bisenetv1": coincheung_v1_state_dict}

# (name, ss mIoU, ms+flip mIoU, classes) as the publishers' READMEs list them
PUBLISHED = [
    ("mmseg-cityscapes", 73.21, 75.74, 19), ("mmseg-cityscapes-ohem", 73.57, 75.80, 19),
    ("mmseg-cityscapes-4x8", 75.76, 77.79, 19), ("mmseg-cityscapes-fp16", 73.07, 75.13, 19),
    ("mmseg-v1-cityscapes", 74.37, 76.91, 19), ("mmseg-v1-cityscapes-scratch", 74.44, 77.05, 19),
    ("mmseg-v1-cityscapes-4x8", 75.16, 77.24, 19), ("mmseg-v1-coco-stuff", 28.55, 29.26, 171),
    ("mmseg-v1-coco-stuff-scratch", 25.45, 26.15, 171),
    ("coincheung-v1-cityscapes", 75.44, 77.45, 19), ("coincheung-v2-cityscapes", 74.95, 76.53, 19),
    ("coincheung-v1-coco-stuff", 31.49, 32.46, 171), ("coincheung-v2-coco-stuff", 30.49, 31.81, 171),
    ("coincheung-v1-ade20k", 36.15, 37.27, 150), ("coincheung-v2-ade20k", 32.53, 33.23, 150),
    ("coincheung-v1-cityscapes-2021-07", 75.10, 77.22, 19), ("coincheung-v1-coco-stuff-2021-07", 31.89, 32.81, 171),
]


def test_every_published_checkpoint_is_listed_with_its_figures():
    assert set(PUBLIC) == {name for name, *_ in PUBLISHED}
    for name, miou, ms_flip, classes in PUBLISHED:
        info = PUBLIC[name].info
        assert (info.metrics["val_miou"], info.metrics["val_miou_ms_flip"], len(info.classes)) == (miou, ms_flip, classes)
        assert info.classes == {19: CITYSCAPES, 171: COCO_STUFF, 150: ADE20K}[classes]
        assert PUBLIC[name].protocol == name.split("-")[0]


def test_mmseg_entries_carry_the_hash_of_their_file_name():
    for entry in PUBLIC.values():
        if entry.protocol == "mmseg":
            assert entry.sha256_prefix and entry.file_name.endswith(f"-{entry.sha256_prefix}.pth")
            assert entry.url.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/")
            assert entry.url.endswith("/" + entry.file_name) and entry.info.normalization.mean == (0.485, 0.456, 0.406)
        else:  # CoinCheung publishes no checksum
            assert entry.sha256_prefix is None
            assert entry.url == f"https://github.com/CoinCheung/BiSeNet/releases/download/0.0.0/{entry.file_name}"


def test_coincheung_normalisation_and_input_size_per_dataset():
    v1_ade, v2_ade = PUBLIC["coincheung-v1-ade20k"].info, PUBLIC["coincheung-v2-ade20k"].info
    assert v1_ade.normalization.mean == (0.49343230, 0.46819794, 0.43106043)
    assert PUBLIC["coincheung-v2-coco-stuff"].info.normalization.std == (0.27469736, 0.27012361, 0.28515933)
    assert PUBLIC["coincheung-v2-cityscapes"].info.normalization.mean == (0.3257, 0.3690, 0.3223)
    # A 4:3 photo with its short side at 512 / 640 (eval_start_shortside), rounded up to 32.
    assert (v1_ade.train_resolution, v2_ade.train_resolution) == ((512, 704), (640, 864))


def _publisher_file(entry, seed: int) -> dict:
    state = MAKERS[entry.family](num_classes=len(entry.info.classes), seed=seed)
    return {"meta": {}, "state_dict": state} if entry.family.startswith("mmseg") else state


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_file_of_the_publishers_layout_opens_under_its_name(name, tmp_path, monkeypatch):
    entry = PUBLIC[name]
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    torch.save(_publisher_file(entry, seed=3), tmp_path / entry.file_name)
    opened = open_weights(name)
    assert opened.known is entry and opened.info.classes == entry.info.classes
    assert opened.checkpoint.config.num_classes == len(entry.info.classes)
    assert opened.info.normalization == entry.info.normalization and opened.info.dataset == entry.info.dataset
    with torch.inference_mode():
        logits = opened.build_model()(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, len(entry.info.classes), 64, 64)


def test_a_file_with_another_class_count_fails_by_name(tmp_path, monkeypatch):
    entry = PUBLIC["coincheung-v1-ade20k"]
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    torch.save(coincheung_v1_state_dict(num_classes=19, seed=1), tmp_path / entry.file_name)
    with pytest.raises(CheckpointError, match=r"has a 19-class head, but coincheung-v1-ade20k is a 150-class "
                                              r"ade20k checkpoint: this is not model_final_v1_ade20k\.pth"):
        open_weights("coincheung-v1-ade20k")


def test_a_file_of_another_network_fails_by_name(tmp_path, monkeypatch):
    entry = PUBLIC["coincheung-v2-coco-stuff"]
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path))
    torch.save(coincheung_v1_state_dict(num_classes=171, seed=1), tmp_path / entry.file_name)
    with pytest.raises(CheckpointError, match="not a coincheung BiSeNetV2 state dict"):
        open_weights("coincheung-v2-coco-stuff")


def test_list_says_which_files_have_no_published_checksum(capsys):
    assert cli.main(["download", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("coincheung-v2-ade20k "))
    assert " 32.53 " in row and " 150 " in row and " none " in row
    row = next(line for line in lines if line.startswith("mmseg-v1-coco-stuff "))
    assert " 171 " in row and " f700dbf7 " in row
    assert "none: the publisher states none, so a download is checked by importing it" in lines[-1]


def test_a_download_without_published_checksum_is_checked_by_import(tmp_path, monkeypatch, capsys):
    """CoinCheung states no checksum: a served file of the wrong class count is discarded, the right one kept."""
    entry = PUBLIC["coincheung-v2-ade20k"]
    served, cache = tmp_path / "served", tmp_path / "cache"
    served.mkdir()
    monkeypatch.setenv("BISENETV2_CACHE", str(cache))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        torch.save(coincheung_state_dict(num_classes=19, seed=2, aux=False), served / entry.file_name)
        with pytest.raises(DownloadError, match="not a usable coincheung checkpoint: .* has a 19-class head, but "
                                                "coincheung-v2-ade20k is a 150-class ade20k checkpoint"):
            download_weights(entry.name)
        assert not (cache / entry.file_name).exists()
        torch.save(coincheung_state_dict(num_classes=150, seed=2, aux=False), served / entry.file_name)
        path, downloaded = download_weights(entry.name)
        assert downloaded and path == cache / entry.file_name
    finally:
        server.shutdown()
        server.server_close()


def test_checkpoints_doc_table_lists_every_published_checkpoint_with_its_figures():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs/checkpoints.md").read_text()
    for name, miou, ms_flip, classes in PUBLISHED:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/checkpoints.md has no table row for {name}"
        assert f"| {classes} | {miou:.2f} / {ms_flip:.2f} |" in row
        assert any(how in row for how in ("--protocol " + PUBLIC[name].protocol, "| same |", "as `coincheung"))
