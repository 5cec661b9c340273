"""Model size report: parameters and MACs, checked against numbers derived by hand."""

import argparse
import json

import pytest
import torch
from torch import nn

from bisenetv2_ros.cli.report import add_arguments, count_macs, count_parameters, format_report, model_report, run
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config

H, W = 512, 1024  # the paper's 1024 x 512 (width x height)


@pytest.fixture(scope="module")
def default_report():
    return model_report(BiSeNetV2Config(), H, W)


def test_default_model_size_is_the_measured_figure(default_report):
    # 3.36 M / 24.6 GMACs is also what a public implementation measures; the paper quotes 21.15 GFLOPs.
    assert default_report["params"] == 3_358_883
    assert default_report["macs"] == 24_603_312_128
    assert default_report["config"]["aux_heads"] is False
    assert sum(p["params"] for p in default_report["parts"].values()) == default_report["params"]
    assert sum(p["macs"] for p in default_report["parts"].values()) == default_report["macs"]


def test_detail_branch_macs_match_table_1_by_hand(default_report):
    # Table 1, Detail Branch: (Cin, Cout, output stride) of every 3x3 conv.
    layers = [(3, 64, 2), (64, 64, 2),
              (64, 64, 4), (64, 64, 4), (64, 64, 4),
              (64, 128, 8), (128, 128, 8), (128, 128, 8)]
    expected = sum(cin * cout * 9 * (H // s) * (W // s) for cin, cout, s in layers)
    assert expected == 11_702_108_160
    assert default_report["parts"]["detail"]["macs"] == expected
    expected_params = sum(cin * cout * 9 + 2 * cout for cin, cout, _ in layers)  # conv + BN gamma/beta
    assert default_report["parts"]["detail"]["params"] == expected_params


def test_head_macs_by_hand(default_report):
    # Fig. 7: 3x3 conv 128 -> C_t = 1024 and a 1x1 conv 1024 -> 19 classes, both at 1/8.
    pixels = (H // 8) * (W // 8)
    assert default_report["parts"]["head"]["macs"] == pixels * (128 * 1024 * 9 + 1024 * 19)
    assert default_report["parts"]["head"]["params"] == 128 * 1024 * 9 + 2 * 1024 + 1024 * 19 + 19


def test_counter_counts_conv_and_linear_exactly():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 9x11 -> 5x6: 8*5*6 outputs x 3*9
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depth-wise: 8*5*6 outputs x 1*9
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 6, 7),  # 7 outputs x 240
    )
    per_module = count_macs(model, 9, 11, per_module=True)
    assert per_module == {"0": 240 * 27, "1": 240 * 9, "4": 7 * 240}
    assert count_macs(model, 9, 11) == 240 * 27 + 240 * 9 + 7 * 240
    assert count_parameters(model) == (3 * 8 * 9 + 8) + (8 * 9 + 8) + (240 * 7 + 7)


def test_count_macs_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = BiSeNetV2(BiSeNetV2Config(width_multiplier=0.25, head_channels=16, num_classes=3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs = count_macs(model, 64, 96)
    assert macs > 0
    assert model.training
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_aux_heads_are_not_in_the_report():
    with_aux = BiSeNetV2Config(num_classes=11, aux_heads=True)
    report = model_report(with_aux, 64, 96)
    deploy = BiSeNetV2(with_aux.replace(aux_heads=False))
    assert report["params"] == count_parameters(deploy)
    assert report["params"] < count_parameters(BiSeNetV2(with_aux))


def test_large_variant_size():
    report = model_report(BiSeNetV2Config.large(), H, W)
    # Measured: 20.79 M parameters, 160.4 GMACs (the paper's Table 7 lists about 118.5 GFLOPs).
    assert report["params"] == 20_788_275
    assert report["macs"] == 160_374_063_104
    # Detail Branch of the large model by hand: widths doubled, stride-1 repeats tripled (1,2,2 -> 3,6,6).
    layers = [(3, 128, 2)] + [(128, 128, 2)] * 3 + [(128, 128, 4)] * 7 + [(128, 256, 8)] + [(256, 256, 8)] * 6
    assert report["parts"]["detail"]["macs"] == sum(ci * co * 9 * (H // s) * (W // s) for ci, co, s in layers)


def test_macs_scale_with_pixels_except_the_global_context_conv():
    # Every conv scales with the pixel count but the Context Embedding's 1x1 conv on the globally
    # pooled 1x1 feature: 128 x 128 MACs at any input size.
    small = model_report(BiSeNetV2Config(), 256, 512)["macs"]
    large = model_report(BiSeNetV2Config(), 512, 1024)["macs"]
    context = 128 * 128
    assert (small - context) * 4 == large - context


def test_format_report_shows_every_part_and_total(default_report):
    text = format_report(default_report)
    for word in ("detail", "semantic", "bga", "head", "3,358,883", "24.60 GMACs", "1024x512", "not counted"):
        assert word in text


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_json(capsys):
    assert run(_parse(["--json", "--num-classes", "11", "--input-size", "64x96"])) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["num_classes"] == 11
    assert report["input"] == {"height": 64, "width": 96}
    assert report["params"] == count_parameters(BiSeNetV2(BiSeNetV2Config(num_classes=11, aux_heads=False)))


def test_cli_weights_uses_checkpoint_config_and_resolution(tiny_weights, capsys):
    assert run(_parse(["--weights", str(tiny_weights), "--json"])) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["width_multiplier"] == 0.25
    assert report["config"]["num_classes"] == 11
    assert report["input"] == {"height": 64, "width": 96}  # the fixture's training resolution


def test_cli_large_variant_text(capsys):
    assert run(_parse(["--variant", "large", "--input-size", "64x128"])) == 0
    assert "alpha 2, d 3" in capsys.readouterr().out


def test_cli_rejects_weights_and_variant_together(tiny_weights):
    with pytest.raises(SystemExit):
        _parse(["--weights", str(tiny_weights), "--variant", "large"])


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        count_macs(nn.Conv2d(3, 3, 1), 0, 10)


# --------------------------------------------------------------------------------------------
# BiSeNetV1


def test_bisenetv1_report_at_1024x512_by_part(capsys):
    assert run(_parse(["--model", "bisenetv1", "--json"])) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "bisenetv1" and report["input"] == {"height": H, "width": W}
    # Measured: 13.24 M parameters, 29.58 GMACs (docs/checkpoints.md, next to BiSeNetV2's 3.36 M / 24.60 GMACs).
    assert report["params"] == 13_242_259
    assert report["macs"] == 29_584_654_336
    parts = report["parts"]
    assert list(parts) == ["spatial", "context", "arms", "ffm", "head"]
    # Spatial Path by hand: 7x7 3->64 at 1/2, 3x3 64->64 at 1/4 and 1/8, 1x1 64->128 at 1/8.
    px = lambda s: (H // s) * (W // s)  # noqa: E731
    assert parts["spatial"]["macs"] == px(2) * 64 * 3 * 49 + px(4) * 64 * 64 * 9 + px(8) * 64 * 64 * 9 + px(8) * 128 * 64
    # ResNet-18 without its classifier: 11,689,512 - 513,000 (fc) parameters.
    assert parts["context"]["params"] == 11_689_512 - 513_000
    # Head by hand: 3x3 256->256 (+BN), 1x1 256->19 with bias.
    assert parts["head"]["params"] == 256 * 256 * 9 + 2 * 256 + 256 * 19 + 19
    assert parts["head"]["macs"] == px(8) * (256 * 256 * 9 + 256 * 19)
    assert sum(p["params"] for p in parts.values()) == report["params"]


def test_bisenetv1_text_report_and_variant_refusal(capsys):
    assert run(_parse(["--model", "bisenetv1", "--input-size", "64x96"])) == 0
    text = capsys.readouterr().out
    assert "BiSeNetV1 (ResNet-18" in text and "spatial" in text and "ffm" in text
    with pytest.raises(SystemExit, match="--variant applies to bisenetv2 only"):
        run(_parse(["--model", "bisenetv1", "--variant", "large"]))


def test_old_height_width_flags_still_set_the_input_size(tiny_weights, capsys):
    assert run(_parse(["--json", "--height", "64", "--width", "96"])) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["input"] == {"height": 64, "width": 96}
    assert "--height is deprecated; use --input-size HxW" in captured.err
    # one side alone keeps the other side of the checkpoint's resolution (64x96 in the fixture)
    assert run(_parse(["--weights", str(tiny_weights), "--json", "--width", "128"])) == 0
    assert json.loads(capsys.readouterr().out)["input"] == {"height": 64, "width": 128}
