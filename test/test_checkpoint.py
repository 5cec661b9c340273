"""Our checkpoint format: exact round trips, atomic writes, and errors that say what is wrong."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys

import pytest
import torch

from bisenetv2_ros.classes import CAMVID, ClassSet, default_palette
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights import known_weights
from bisenetv2_ros.weights.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    Normalization,
    load_checkpoint,
    save_checkpoint,
)
from bisenetv2_ros.weights.known_weights import KNOWN_WEIGHTS, load_model, resolve_weights

TINY = dict(width_multiplier=0.25, head_channels=16, aux_head_channels=8)


def _random_model(num_classes: int = 11, aux_heads: bool = False, seed: int = 0) -> BiSeNetV2:
    torch.manual_seed(seed)
    model = BiSeNetV2(BiSeNetV2Config(num_classes=num_classes, aux_heads=aux_heads, **TINY))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(123)
    return model.eval()


INFO = CheckpointInfo(
    CAMVID,
    Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bgr"),
    train_resolution=(360, 480),
    dataset="camvid",
    metrics={"val_miou": 0.625, "val_pixel_acc": 0.9},
    provenance={"source": "unit test", "commit": "abc123"},
)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(5))


def _outputs(model, x):
    with torch.inference_mode():
        return model.eval()(x)


# --------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_is_bit_exact(tmp_path, x):
    model = _random_model()
    original = Checkpoint.from_model(model, INFO)
    path = save_checkpoint(original, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.config == original.config
    assert loaded.info == original.info
    assert loaded.kind == "deploy"
    assert loaded.state_dict.keys() == original.state_dict.keys()
    for key, value in original.state_dict.items():
        assert loaded.state_dict[key].dtype == value.dtype, key
        assert torch.equal(loaded.state_dict[key], value), key
    assert torch.equal(_outputs(loaded.build_model(), x), _outputs(model, x))


def test_file_holds_only_plain_containers(tmp_path):
    path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    data = torch.load(path, weights_only=True)  # would raise on any pickled class
    assert data["format"] == "bisenetv2_ros" and data["version"] == 1
    assert data["info"]["classes"] == list(CAMVID.names)
    assert data["model_config"]["width_multiplier"] == 0.25


def test_training_state_round_trips(tmp_path):
    model = _random_model(aux_heads=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    optimizer.step()
    state = {"epoch": 7, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
    path = save_checkpoint(Checkpoint.from_model(model, INFO, kind="train", training_state=state), tmp_path / "t.pt")
    loaded = load_checkpoint(path)
    assert loaded.kind == "train"
    assert loaded.training_state["epoch"] == 7
    assert torch.equal(loaded.training_state["rng"], state["rng"])
    momentum = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    loaded_momentum = [s["momentum_buffer"] for s in loaded.training_state["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, loaded_momentum)) and len(momentum) > 0


def test_half_precision_file_loads_as_fp32(tmp_path, x):
    model = _random_model()
    path = save_checkpoint(Checkpoint.from_model(model, INFO), tmp_path / "half.pt", half=True)
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert raw["head.conv.0.weight"].dtype == torch.float16
    assert raw["head.conv.1.running_var"].dtype == torch.float32  # BN statistics keep full precision
    assert raw["head.conv.1.num_batches_tracked"].dtype == torch.int64
    full_size = os.path.getsize(save_checkpoint(Checkpoint.from_model(model, INFO), tmp_path / "full.pt"))
    assert os.path.getsize(path) < 0.7 * full_size
    loaded = load_checkpoint(path)
    assert all(v.dtype in (torch.float32, torch.int64) for v in loaded.state_dict.values())
    reference = model.state_dict()
    for key, value in loaded.state_dict.items():
        assert torch.allclose(value.float(), reference[key].float(), rtol=1e-3, atol=1e-4), key
    assert torch.equal(loaded.state_dict["head.conv.1.running_mean"], reference["head.conv.1.running_mean"])
    ours, exact = _outputs(loaded.build_model(), x), _outputs(model, x)
    assert not torch.equal(ours, exact)  # it really was rounded
    assert (ours - exact).abs().max() < 1e-2 * exact.abs().max()


def test_load_model_returns_eval_model_and_info(tmp_path):
    path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    model, info = load_model(path)
    assert not model.training
    assert info == INFO
    assert model.aux_heads is None


# --------------------------------------------------------------------------------------------
# Atomic writes


def test_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "a" / "model.pt")
    save_checkpoint(Checkpoint.from_model(_random_model(seed=1), INFO), tmp_path / "a" / "model.pt")  # overwrite
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model.pt"]


def test_failed_save_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    before = path.read_bytes()

    def save_half_then_fail(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(Checkpoint.from_model(_random_model(seed=1), INFO), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert load_checkpoint(path).info == INFO


def test_interrupted_save_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    before = path.read_bytes()

    def interrupted(obj, stream, *args, **kwargs):
        stream.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(Checkpoint.from_model(_random_model(seed=1), INFO), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# --------------------------------------------------------------------------------------------
# Damaged or wrong files


def test_truncated_file_is_reported(tmp_path):
    path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, damaged"):
        load_checkpoint(path)


def test_text_file_is_reported(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt is a text file \(\.pt\), not a PyTorch checkpoint; "
                                              r"pass a checkpoint \(\.pt/\.pth\) or a known weights name"):
        load_checkpoint(path)


# A file that is no torch.save file at all: (name, content, what the one-line message must say).
NOT_CHECKPOINTS = [
    # An ONNX model is protobuf: field 1 (ir_version) varint first.
    ("model.onnx", b"\x08\x08\x12\x07pytorch\x1a\x032.1" + bytes(range(256)),
     r"model\.onnx is an ONNX model, not a checkpoint; pass the checkpoint \(\.pt/\.pth\) or known weights name "
     r"it was exported from and choose the onnxruntime backend"),
    ("model.engine", b"ftrt\x00\x00\x00\x00" + bytes(range(256)),
     r"model\.engine is a TensorRT engine, not a checkpoint; pass the checkpoint .* it was built from and choose "
     r"the tensorrt backend"),
    ("config.yaml", "weights: camvid  # é\n".encode(), r"config\.yaml is a text file \(\.yaml\), not a PyTorch"),
    ("empty.pt", b"", r"empty\.pt is empty, not a checkpoint"),
    ("noise.bin", bytes(range(1, 256)) * 4, r"noise\.bin is not a PyTorch checkpoint \(unrecognised binary data\)"),
]


@pytest.mark.parametrize("name,content,message", NOT_CHECKPOINTS, ids=[n for n, _, _ in NOT_CHECKPOINTS])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    assert "Python objects" not in str(error.value) and "truncated" not in str(error.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.pt does not exist"):
        load_checkpoint(tmp_path / "nothere.pt")


def _raw(model_config: dict, info: dict, state: dict, **extra) -> dict:
    return {"format": "bisenetv2_ros", "version": 1, "kind": "deploy", "model_config": model_config,
            "info": info, "state_dict": state, **extra}


def test_class_names_must_match_the_class_count(tmp_path):
    model = _random_model(num_classes=11)
    five = ClassSet(tuple("abcde"), default_palette(5))
    info = dataclasses.replace(INFO, classes=five)
    path = tmp_path / "bad.pt"
    torch.save(_raw(model.config.to_dict(), info.to_dict(), model.state_dict()), path)
    with pytest.raises(CheckpointError, match="5 class names but its model has 11 classes"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="5 class names"):
        Checkpoint(model.config, info, model.state_dict())


def test_classifier_with_another_class_count_names_key_and_shapes():
    five_class_weights = _random_model(num_classes=5).state_dict()
    checkpoint = Checkpoint(_random_model(num_classes=11).config, INFO, five_class_weights)
    with pytest.raises(CheckpointError) as error:
        checkpoint.build_model()
    message = str(error.value)
    assert "head.classifier.weight: checkpoint (5, 16, 1, 1) vs model (11, 16, 1, 1)" in message
    assert "head.classifier.bias: checkpoint (5,) vs model (11,)" in message


def test_missing_and_unexpected_keys_are_listed_by_name():
    state = dict(_random_model().state_dict())
    del state["bga.fuse.1.running_var"]
    del state["detail.s2.1.0.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as error:
        Checkpoint(_random_model().config, INFO, state).build_model()
    message = str(error.value)
    assert "missing keys (2): detail.s2.1.0.weight, bga.fuse.1.running_var" in message
    assert "unexpected keys (1): decoder.extra.weight" in message


def test_foreign_bare_state_dict_is_refused(tmp_path):
    path = tmp_path / "random.pth"
    torch.save({"layer1.weight": torch.randn(3, 3), "layer1.bias": torch.randn(3)}, path)
    with pytest.raises(CheckpointError, match="is not a bisenetv2_ros checkpoint") as error:
        load_checkpoint(path)
    assert "looks like" not in str(error.value)  # no family to name


def test_foreign_mmseg_checkpoint_is_named(tmp_path):
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"CLASSES": ["road"]},
                "state_dict": {"backbone.detail.detail_branch.0.0.conv.weight": torch.zeros(64, 3, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match=r"looks like a mmsegmentation checkpoint.*bisenetv2 import"):
        load_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    model = _random_model()
    path = tmp_path / "future.pt"
    torch.save(_raw(model.config.to_dict(), INFO.to_dict(), model.state_dict(), version=2), path)
    with pytest.raises(CheckpointError, match="format version 2; this package reads up to 1"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["no_config", "unknown_field", "bad_info"])
def test_malformed_metadata_is_refused(tmp_path, damage):
    model = _random_model()
    config, info = model.config.to_dict(), INFO.to_dict()
    if damage == "no_config":
        data = _raw(config, info, model.state_dict())
        del data["model_config"]
    elif damage == "unknown_field":
        data = _raw({**config, "dilation": 2}, info, model.state_dict())
    else:
        data = _raw(config, {k: v for k, v in info.items() if k != "normalization"}, model.state_dict())
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(path)


def test_unknown_kind_is_refused():
    with pytest.raises(CheckpointError, match="kind must be one of"):
        Checkpoint(_random_model().config, INFO, {}, kind="final")


# --------------------------------------------------------------------------------------------
# Train checkpoints and booster heads


def test_train_checkpoint_keeps_aux_heads_and_deploy_drops_them(x):
    train_model = _random_model(aux_heads=True)
    train = Checkpoint.from_model(train_model, INFO, kind="train")
    assert any(k.startswith("aux_heads.") for k in train.state_dict)
    assert train.config.aux_heads is True
    deploy = Checkpoint.from_model(train_model, INFO, kind="deploy")
    assert not any(k.startswith("aux_heads.") for k in deploy.state_dict)
    assert deploy.config.aux_heads is False

    inference = train.build_model(for_inference=True)
    assert inference.aux_heads is None and not inference.training
    assert not any(name.startswith("aux_heads.") for name, _ in inference.named_parameters())
    assert torch.equal(_outputs(inference, x), _outputs(train_model, x))  # the main output of the eval model

    training = train.build_model(for_inference=False)
    assert training.aux_heads is not None and len(training.aux_heads) == 4
    assert training.state_dict().keys() == train_model.state_dict().keys()
    training.train()
    main, aux = training(x)
    assert len(aux) == 4 and main.shape == (2, 11, 64, 96)


# --------------------------------------------------------------------------------------------
# Named weights


def test_unknown_weights_name_lists_known_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        resolve_weights("cityscapes-huge")
    message = str(error.value)
    assert "'cityscapes-huge' is neither an existing file nor a known name" in message
    for name in KNOWN_WEIGHTS:
        assert name in message


def test_known_weights_not_downloaded_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BISENETV2_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=r"not downloaded yet: run `bisenetv2 download mmseg-cityscapes`"):
        resolve_weights("mmseg-cityscapes")
    entry = KNOWN_WEIGHTS["mmseg-cityscapes"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / entry.file_name).write_bytes(b"x")
    assert resolve_weights("mmseg-cityscapes") == tmp_path / "cache" / entry.file_name


def test_missing_embedded_weights_say_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(known_weights, "PACKAGE_WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="embedded weights .* are missing; reinstall"):
        resolve_weights("camvid")


def test_a_path_resolves_to_itself(tiny_weights):
    assert resolve_weights(str(tiny_weights)) == tiny_weights


def test_known_weights_entries_are_consistent():
    for name, entry in KNOWN_WEIGHTS.items():
        assert entry.name == name
        assert entry.family in ("bisenetv2_ros", "mmsegmentation", "coincheung", "mmsegmentation-bisenetv1",
                                "coincheung-bisenetv1")
        assert entry.embedded == (entry.url is None)
        if entry.url:
            assert entry.url.startswith("https://") and entry.url.endswith(entry.file_name)
            # mmsegmentation states a hash (in the file name); CoinCheung none (test_known_weights_zoo.py)
            assert (entry.sha256_prefix is not None) == entry.family.startswith("mmsegmentation")
            assert entry.sha256_prefix is None or entry.sha256_prefix in entry.file_name
        assert len(entry.info.classes) in (11, 19, 150, 171)


def test_saved_file_gets_the_usual_permissions(tmp_path):
    # Not the 0600 of a temporary file: other users (e.g. a node run as another user) must read it.
    old = os.umask(0o022)
    try:
        path = save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


class _Pickled:
    """A class a checkpoint must not make us import and run."""


def test_file_with_pickled_objects_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"meta": {"config": _Pickled()}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"Python objects beyond tensors .*_Pickled.*weights_only=True") as error:
        load_checkpoint(path)
    assert "truncated" not in str(error.value)


def test_save_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_checkpoint(Checkpoint.from_model(_random_model(), INFO), tmp_path / "model.pt")
    assert synced == [False, True]  # the file's data, then the folder entry that names it


def test_reading_a_checkpoint_loads_no_compiler(tiny_weights):
    """The weights' shape check (weights/checkpoint_parts.py) builds the network on the CPU: on the meta
    device PyTorch's Python references import torch._dynamo, 1.3 s in every fresh process that reads
    weights (each node start, each CLI run)."""
    code = ("import sys\nfrom bisenetv2_ros.weights.checkpoint import load_checkpoint\n"
            f"load_checkpoint({str(tiny_weights)!r})\nprint('torch._dynamo' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
