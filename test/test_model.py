"""The network: shapes at odd sizes, train/eval outputs, size of the model, variants."""

import pytest
import torch

from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BiSeNetV2(BiSeNetV2Config(num_classes=11)).eval()


@pytest.mark.parametrize("size", [(720, 1280), (1080, 1920), (375, 1242), (360, 480)])
def test_eval_output_matches_any_input_size(model, size):
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 11, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(375, 1242), (360, 480)])
def test_train_mode_returns_main_and_four_booster_outputs(size):
    model = BiSeNetV2(BiSeNetV2Config(num_classes=5)).train()
    main, aux = model(torch.randn(2, 3, *size))
    assert main.shape == (2, 5, *size)
    assert len(aux) == 4
    assert all(a.shape == (2, 5, *size) for a in aux)


def test_output_size_argument_upsamples_logits_once():
    model = BiSeNetV2(BiSeNetV2Config(num_classes=3)).eval()
    out = model(torch.randn(1, 3, 128, 256), output_size=(300, 500))
    assert out.shape == (1, 3, 300, 500)


def test_without_aux_heads_removes_every_booster_parameter():
    model = BiSeNetV2(BiSeNetV2Config())
    assert any(k.startswith("aux_heads.") for k in model.state_dict())
    model.without_aux_heads()
    assert not any(k.startswith("aux_heads.") for k in model.state_dict())
    assert model.config.aux_heads is False
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor)  # no aux outputs even in training mode


def test_default_parameter_count_is_the_public_figure():
    # Counted by hand from Table 1 / Figs. 4-7 with C_t = 1024; a public implementation
    # with the same head measures 3.36 M.
    model = BiSeNetV2(BiSeNetV2Config(aux_heads=False))
    assert sum(p.numel() for p in model.parameters()) == 3_358_883


def test_large_variant_builds_and_runs():
    config = BiSeNetV2Config.large(num_classes=4, aux_heads=False)
    assert (config.width_multiplier, config.depth_multiplier) == (2.0, 3.0)
    assert config.detail_channels == (128, 128, 256)
    assert config.semantic_channels == (32, 64, 128, 256)
    model = BiSeNetV2(config).eval()
    assert len(model.detail.s1) == 1 + 3 and len(model.semantic.s5) == 1 + 9
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 96, 160)).shape == (1, 4, 96, 160)


def test_config_round_trip_and_validation():
    config = BiSeNetV2Config(num_classes=7, head_channels=128, upsample_mode="nearest")
    assert BiSeNetV2Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown BiSeNetV2Config fields"):
        BiSeNetV2Config.from_dict({"num_classes": 3, "colour": 1})
    with pytest.raises(ValueError, match="upsample_mode"):
        BiSeNetV2Config(upsample_mode="bicubic")
    with pytest.raises(ValueError, match="num_classes"):
        BiSeNetV2Config(num_classes=0)
