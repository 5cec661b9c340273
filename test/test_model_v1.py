"""BiSeNetV1: shapes at odd sizes, train/eval outputs, the V2 output contract, and the architecture field
of checkpoints (files written before it existed still load as BiSeNetV2)."""

import pytest
import torch

from bisenetv2_ros.classes import CAMVID, ClassSet, default_palette
from bisenetv2_ros.models.architectures import architecture_of, build_model, config_from_dict
from bisenetv2_ros.models.bisenetv1 import BiSeNetV1, BiSeNetV1Config
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2
from bisenetv2_ros.weights.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from bisenetv2_ros.weights.known_weights import PACKAGE_WEIGHTS_DIR, load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BiSeNetV1(BiSeNetV1Config(num_classes=11)).eval()


@pytest.mark.parametrize("size", [(375, 1242), (97, 131), (33, 45), (64, 96)])
def test_eval_output_matches_any_input_size(model, size):
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 11, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(61, 83), (64, 96)])
def test_train_mode_returns_main_and_two_auxiliary_outputs(size):
    model = BiSeNetV1(BiSeNetV1Config(num_classes=5)).train()
    main, aux = model(torch.randn(2, 3, *size))
    assert main.shape == (2, 5, *size)
    assert len(aux) == 2 and all(a.shape == (2, 5, *size) for a in aux)


def test_both_paths_meet_at_one_eighth_for_odd_sizes(model):
    x = torch.randn(1, 3, 61, 83)  # ceil(61/8) = 8, ceil(83/8) = 11
    with torch.inference_mode():
        spatial = model.spatial(x)
        context8, context16 = model.context(x)
        logits, _ = model.forward_logits(x)
    assert spatial.shape[2:] == context8.shape[2:] == logits.shape[2:] == (8, 11)
    assert context16.shape[2:] == (4, 6)


def test_output_size_and_pixel_shuffle_head():
    model = BiSeNetV1(BiSeNetV1Config(num_classes=3, head_upsample="pixel_shuffle")).eval()
    assert model.head.classifier.out_channels == 3 * 64
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)
        assert model(torch.randn(1, 3, 64, 96), output_size=(100, 150)).shape == (1, 3, 100, 150)


def test_without_aux_heads_and_deploy_checkpoint_drop_them():
    model = BiSeNetV1(BiSeNetV1Config(num_classes=4))
    assert any(k.startswith("aux_heads.") for k in model.state_dict())
    classes = ClassSet(("a", "b", "c", "d"), default_palette(4))
    deploy = Checkpoint.from_model(model, CheckpointInfo(classes))
    assert not any(k.startswith("aux_heads.") for k in deploy.state_dict)
    assert deploy.config.aux_heads is False
    model.without_aux_heads()
    assert model.aux_heads is None and model.config.aux_heads is False
    assert not any(k.startswith("aux_heads.") for k in model.state_dict())


def test_paper_default_size():
    # ResNet-18 without fc (11.18 M) + both paths, ARMs, FFM and the 256-channel head for 19 classes.
    model = BiSeNetV1(BiSeNetV1Config(aux_heads=False))
    assert sum(p.numel() for p in model.parameters()) == 13_242_259


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="ffm_attention must be one of"):
        BiSeNetV1Config(ffm_attention="se")
    with pytest.raises(ValueError, match="head_upsample must be one of"):
        BiSeNetV1Config(head_upsample="deconv")
    with pytest.raises(ValueError, match=r"unknown BiSeNetV1Config fields \['width_multiplier'\]"):
        BiSeNetV1Config.from_dict({"width_multiplier": 1.0})
    config = BiSeNetV1Config(num_classes=7, ffm_attention="conv_bn_relu")
    assert config_from_dict("bisenetv1", config.to_dict()) == config
    assert architecture_of(config) == "bisenetv1" and isinstance(build_model(config), BiSeNetV1)
    with pytest.raises(ValueError, match="unknown architecture 'bisenetv3'"):
        config_from_dict("bisenetv3", {})


def test_v1_checkpoint_names_its_architecture_and_loads(tmp_path):
    torch.manual_seed(1)
    model = BiSeNetV1(BiSeNetV1Config(num_classes=11, aux_heads=False)).eval()
    path = save_checkpoint(Checkpoint.from_model(model, CheckpointInfo(CAMVID, train_resolution=(64, 96))),
                           tmp_path / "v1.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["architecture"] == "bisenetv1"
    loaded, info = load_model(path)
    assert isinstance(loaded, BiSeNetV1) and info.train_resolution == (64, 96)
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_checkpoints_without_the_field_are_bisenetv2(tmp_path):
    # Files written before the field existed (the embedded weights until 2026-11-30) have no "architecture".
    data = torch.load(PACKAGE_WEIGHTS_DIR / "bisenetv2_camvid.pt", weights_only=True)
    assert data.pop("architecture") == "bisenetv2"
    torch.save(data, tmp_path / "legacy.pt")
    checkpoint = load_checkpoint(tmp_path / "legacy.pt")
    assert checkpoint.architecture == "bisenetv2"
    model, _ = load_model(tmp_path / "legacy.pt")
    assert isinstance(model, BiSeNetV2)


def test_unknown_architecture_in_a_file_is_named(tmp_path):
    model = BiSeNetV1(BiSeNetV1Config(num_classes=11, aux_heads=False))
    data = Checkpoint.from_model(model, CheckpointInfo(CAMVID)).to_dict()
    torch.save({**data, "architecture": "segformer"}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="holds architecture 'segformer'; this package knows bisenetv2, bisenetv1"):
        load_checkpoint(tmp_path / "x.pt")
    # A V1 config under the V2 name (a file edited by hand) fails on its fields, by name.
    torch.save({**data, "architecture": "bisenetv2"}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="unknown BiSeNetV2Config fields"):
        load_checkpoint(tmp_path / "y.pt")
