"""Importers of public BiSeNetV1 checkpoints, proven functionally (as test_importers.py does for V2).

Synthetic state dicts carry each family's key names and shapes, read off its published code
(open-mmlab/mmsegmentation mmseg/models/backbones/bisenetv1.py + configs/_base_/models/bisenetv1_r18-d32.py
with mmseg's ResNet-18 naming; CoinCheung/BiSeNet lib/models/bisenetv1.py + lib/models/resnet.py).
A reference forward pass written here with torch.nn.functional on the FOREIGN keys, following that
family's published forward, must equal our imported model's output.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_importers import StateBuilder, _bn, _cbr, _conv

from bisenetv2_ros.classes import CITYSCAPES
from bisenetv2_ros.models.bisenetv1 import BiSeNetV1
from bisenetv2_ros.weights.checkpoint import CheckpointError, detect_family, load_checkpoint, save_checkpoint
from bisenetv2_ros.weights.importers import import_checkpoint, import_state_dict
from bisenetv2_ros.weights.importers_v1 import COINCHEUNG_V1, MMSEG_V1

# --------------------------------------------------------------------------------------------
# Synthetic foreign state dicts


def _resnet18(b: StateBuilder, prefix: str) -> None:
    """torchvision / mmseg ResNet-18 names: conv1, bn1, layerN.M.{conv1,bn1,conv2,bn2,downsample.0/.1}."""
    b.conv(f"{prefix}.conv1", 3, 64, 7)
    b.bn(f"{prefix}.bn1", 64)
    previous = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            key, cin = f"{prefix}.layer{stage}.{block}", previous if block == 0 else width
            b.conv(f"{key}.conv1", cin, width, 3)
            b.bn(f"{key}.bn1", width)
            b.conv(f"{key}.conv2", width, width, 3)
            b.bn(f"{key}.bn2", width)
            if block == 0 and stage > 1:
                b.conv(f"{key}.downsample.0", cin, width, 1)
                b.bn(f"{key}.downsample.1", width)
        previous = width


def _cm(b: StateBuilder, key: str, cin: int, cout: int, k: int) -> None:  # mmcv ConvModule / their ConvBNReLU
    b.conv(f"{key}.conv", cin, cout, k)
    b.bn(f"{key}.bn", cout)


def mmseg_v1_state_dict(num_classes: int = 19, seed: int = 0, aux: bool = True) -> dict[str, torch.Tensor]:
    b = StateBuilder(seed)
    cp = "backbone.context_path"
    _resnet18(b, f"{cp}.backbone")
    for arm, cin in (("arm16", 256), ("arm32", 512)):
        _cm(b, f"{cp}.{arm}.conv_layer", cin, 128, 3)
        _cm(b, f"{cp}.{arm}.atten_conv_layer.1", 128, 128, 1)
    _cm(b, f"{cp}.conv_head32", 128, 128, 3)
    _cm(b, f"{cp}.conv_head16", 128, 128, 3)
    _cm(b, f"{cp}.gap_conv.1", 512, 128, 1)
    for i, (cin, cout, k) in enumerate([(3, 64, 7), (64, 64, 3), (64, 64, 3), (64, 128, 1)], start=1):
        _cm(b, f"backbone.spatial_path.layer{i}", cin, cout, k)
    _cm(b, "backbone.ffm.conv1", 256, 256, 1)
    _cm(b, "backbone.ffm.conv_atten.0", 256, 256, 1)
    _cm(b, "decode_head.convs.0", 256, 256, 3)
    b.conv("decode_head.conv_seg", 256, num_classes, 1, bias=True)
    if aux:  # FCNHead(in 128, channels 64, num_convs 1) on the 1/8 and 1/16 context features
        for i in range(2):
            _cm(b, f"auxiliary_head.{i}.convs.0", 128, 64, 3)
            b.conv(f"auxiliary_head.{i}.conv_seg", 64, num_classes, 1, bias=True)
    return b.state


# CoinCheung/BiSeNet lib/models/bisenetv1.py over its git history (importers_v1 docstring):
# layout -> (FFM attention keys, head: outputs per class of the main/16/32 heads, head bias)
CC_LAYOUTS = {
    "2020": ("mlp", (1, 1, 1), False),  # 2018-11 .. 2020-09-29: bilinear align_corners=True to the input size
    "pixel_shuffle": ("mlp", (64, 64, 256), True),  # 2020-09-29 .. 2021-07-07: PixelShuffle(8 / 8 / 16)
    "2021-07-07": ("mlp", (1, 1, 1), True),  # nn.Upsample(x8 / x8 / x16, bilinear, align_corners=False)
    "current": ("conv_bn", (1, 1, 1), True),  # 2021-07-13 ..: FFM conv + BN, head as 2021-07-07
}


def coincheung_v1_state_dict(num_classes: int = 19, seed: int = 0, aux: bool = True,
                             layout: str = "current") -> dict[str, torch.Tensor]:
    ffm, per_class, bias = CC_LAYOUTS[layout]
    b = StateBuilder(seed)
    _resnet18(b, "cp.resnet")
    for arm, cin in (("arm16", 256), ("arm32", 512)):
        _cm(b, f"cp.{arm}.conv", cin, 128, 3)
        b.conv(f"cp.{arm}.conv_atten", 128, 128, 1)
        b.bn(f"cp.{arm}.bn_atten", 128)
    _cm(b, "cp.conv_head32", 128, 128, 3)
    _cm(b, "cp.conv_head16", 128, 128, 3)
    _cm(b, "cp.conv_avg", 512, 128, 1)
    for name, cin, cout, k in [("conv1", 3, 64, 7), ("conv2", 64, 64, 3), ("conv3", 64, 64, 3), ("conv_out", 64, 128, 1)]:
        _cm(b, f"sp.{name}", cin, cout, k)
    _cm(b, "ffm.convblk", 256, 256, 1)
    if ffm == "mlp":  # out_chan // 4 hidden, no biases
        b.conv("ffm.conv1", 256, 64, 1)
        b.conv("ffm.conv2", 64, 256, 1)
    else:
        b.conv("ffm.conv", 256, 256, 1)
        b.bn("ffm.bn", 256)

    def output(name: str, cin: int, mid: int, factor: int) -> None:
        _cm(b, f"{name}.conv", cin, mid, 3)
        b.conv(f"{name}.conv_out", mid, num_classes * factor, 1, bias=bias)

    output("conv_out", 256, 256, per_class[0])
    if aux:
        output("conv_out16", 128, 64, per_class[1])
        output("conv_out32", 128, 64, per_class[2])
    return b.state


# --------------------------------------------------------------------------------------------
# Reference forward passes on the foreign keys


def _resnet18_reference(sd, prefix, x):
    x = F.max_pool2d(_cbr(sd, prefix, x, stride=2, conv="conv1", bn="bn1"), 3, 2, 1)
    features = []
    for stage in range(1, 5):
        for block in range(2):
            key = f"{prefix}.layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = _cbr(sd, key, x, stride=stride, conv="conv1", bn="bn1")
            y = _cbr(sd, key, y, relu=False, conv="conv2", bn="bn2")
            shortcut = (_cbr(sd, f"{key}.downsample", x, stride=stride, relu=False, conv="0", bn="1")
                        if f"{key}.downsample.0.weight" in sd else x)
            x = F.relu(y + shortcut)
        features.append(x)
    return features[1:]  # 1/8, 1/16, 1/32


def mmseg_v1_reference(sd, x):
    cm = lambda key, t, **kw: _cbr(sd, key, t, **kw)  # noqa: E731
    cp = "backbone.context_path"
    c8, c16, c32 = _resnet18_reference(sd, f"{cp}.backbone", x)

    def arm(name, t):
        t = cm(f"{cp}.{name}.conv_layer", t)
        return t * torch.sigmoid(cm(f"{cp}.{name}.atten_conv_layer.1", F.adaptive_avg_pool2d(t, 1), relu=False))

    gap = cm(f"{cp}.gap_conv.1", F.adaptive_avg_pool2d(c32, 1))
    up32 = cm(f"{cp}.conv_head32", F.interpolate(arm("arm32", c32) + gap, size=c16.shape[2:], mode="nearest"))
    up16 = cm(f"{cp}.conv_head16", F.interpolate(arm("arm16", c16) + up32, size=c8.shape[2:], mode="nearest"))
    s = cm("backbone.spatial_path.layer1", x, stride=2)
    s = cm("backbone.spatial_path.layer2", s, stride=2)
    s = cm("backbone.spatial_path.layer3", s, stride=2)
    s = cm("backbone.spatial_path.layer4", s)
    fused = cm("backbone.ffm.conv1", torch.cat([s, up16], dim=1))
    attention = torch.sigmoid(cm("backbone.ffm.conv_atten.0", F.adaptive_avg_pool2d(fused, 1)))
    fused = fused * attention + fused
    logits = _conv(sd, "decode_head.conv_seg", cm("decode_head.convs.0", fused))  # FCNHead, dropout off
    return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def coincheung_v1_reference(sd, x):
    """The forward of CoinCheung's BiSeNetV1 in the layout the keys show (see CC_LAYOUTS)."""
    cbr = lambda key, t, **kw: _cbr(sd, key, t, **kw)  # noqa: E731
    before_2020_09 = "conv_out.conv_out.bias" not in sd
    pixel_shuffle = not before_2020_09 and sd["conv_out.conv_out.weight"].shape[0] % 64 == 0
    c8, c16, c32 = _resnet18_reference(sd, "cp.resnet", x)

    def arm(name, t):
        t = cbr(f"cp.{name}.conv", t)
        atten = _bn(sd, f"cp.{name}.bn_atten", _conv(sd, f"cp.{name}.conv_atten", t.mean(dim=(2, 3), keepdim=True)))
        return t * torch.sigmoid(atten)

    def up(t, like):  # F.interpolate(nearest, size) before 2020-09, nn.Upsample(scale_factor=2.) after
        if before_2020_09:
            return F.interpolate(t, size=like.shape[2:], mode="nearest")
        return F.interpolate(t, scale_factor=2.0, mode="nearest")

    avg = cbr("cp.conv_avg", c32.mean(dim=(2, 3), keepdim=True))
    up32 = cbr("cp.conv_head32", up(arm("arm32", c32) + avg, c16))
    up16 = cbr("cp.conv_head16", up(arm("arm16", c16) + up32, c8))
    s = x
    for name, stride in (("conv1", 2), ("conv2", 2), ("conv3", 2), ("conv_out", 1)):
        s = cbr(f"sp.{name}", s, stride=stride)
    feat = cbr("ffm.convblk", torch.cat([s, up16], dim=1))
    pooled = feat.mean(dim=(2, 3), keepdim=True)
    if "ffm.conv.weight" in sd:  # 2021-07-13 ..: conv + BN
        atten = _bn(sd, "ffm.bn", _conv(sd, "ffm.conv", pooled))
    else:  # the paper's two 1x1 convs with a ReLU
        atten = _conv(sd, "ffm.conv2", F.relu(_conv(sd, "ffm.conv1", pooled)))
    feat = feat * torch.sigmoid(atten) + feat
    out = _conv(sd, "conv_out.conv_out", cbr("conv_out.conv", feat))
    if before_2020_09:
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=True)
    if pixel_shuffle:
        return F.pixel_shuffle(out, 8)
    return F.interpolate(out, scale_factor=8.0, mode="bilinear", align_corners=False)  # nn.Upsample


FAMILIES = {
    MMSEG_V1: (mmseg_v1_state_dict, mmseg_v1_reference),
    COINCHEUNG_V1: (coincheung_v1_state_dict, coincheung_v1_reference),
}
AUX_PREFIXES = ("auxiliary_head.", "conv_out16.", "conv_out32.")


@pytest.fixture(scope="module")
def foreign():
    result = {}
    for family, (make, _) in FAMILIES.items():
        state = make(seed=1)
        result[family] = (state, import_state_dict(state, family))
    return result


@pytest.fixture(scope="module")
def inputs():
    # CoinCheung's context path upsamples by a fixed factor 2, so its reference needs multiples of 32.
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------------------------
# The imported model computes what the original computes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_v1_equals_reference_forward(family, foreign, inputs):
    state, checkpoint = foreign[family]
    model = checkpoint.build_model()
    assert isinstance(model, BiSeNetV1)
    with torch.inference_mode():
        ours, reference = model(inputs), FAMILIES[family][1](state, inputs)
    assert ours.shape == reference.shape == (1, 19, 64, 96)
    assert reference.abs().max() > 0.1
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)
    assert (ours.argmax(1) == reference.argmax(1)).float().mean().item() > 0.999


def test_mmseg_v1_import_at_odd_size(foreign):
    state, checkpoint = foreign[MMSEG_V1]
    x = torch.randn(1, 3, 45, 71, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(checkpoint.build_model()(x), mmseg_v1_reference(state, x), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("layout,settings", [
    ("2020", ("paper", "bilinear", True)),
    ("pixel_shuffle", ("paper", "pixel_shuffle", False)),
    ("2021-07-07", ("paper", "bilinear", False)),
    ("current", ("conv_bn", "bilinear", False)),
])
@pytest.mark.parametrize("aux", [True, False])
def test_every_coincheung_v1_layout_imports_to_the_same_logits(layout, settings, aux, inputs):
    state = coincheung_v1_state_dict(seed=5, aux=aux, layout=layout)
    checkpoint = import_state_dict(state, COINCHEUNG_V1)
    config = checkpoint.config
    assert (config.ffm_attention, config.head_upsample, config.align_corners) == settings
    assert config.num_classes == 19
    if layout == "2020":
        assert torch.count_nonzero(checkpoint.state_dict["head.classifier.bias"]) == 0  # it had none
    with torch.inference_mode():
        ours, reference = checkpoint.build_model()(inputs), coincheung_v1_reference(state, inputs)
    assert ours.shape == reference.shape == (1, 19, 64, 96)
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)


def test_coincheung_v1_171_and_150_class_heads(inputs):
    # CoinCheung's COCO-Stuff and ADE20K weights (today's layout): the class count comes from the head.
    for classes in (171, 150):
        state = coincheung_v1_state_dict(num_classes=classes, seed=6, layout="current")
        checkpoint = import_state_dict(state, COINCHEUNG_V1)
        assert checkpoint.config.num_classes == classes and checkpoint.config.head_upsample == "bilinear"
        with torch.inference_mode():
            torch.testing.assert_close(checkpoint.build_model()(inputs), coincheung_v1_reference(state, inputs),
                                       atol=2e-4, rtol=2e-4)


def test_coincheung_v1_ffm_of_no_layout_is_named(foreign):
    state = {k: v for k, v in foreign[COINCHEUNG_V1][0].items() if not k.startswith("ffm.conv.")}
    with pytest.raises(CheckpointError, match="FFM attention has neither ffm.conv .* nor ffm.conv1/ffm.conv2"):
        import_state_dict(state, COINCHEUNG_V1)


def test_coincheung_v1_current_ffm_without_head_bias_is_refused(foreign):
    state = {k: v for k, v in foreign[COINCHEUNG_V1][0].items() if k != "conv_out.conv_out.bias"}
    with pytest.raises(CheckpointError, match="conv_out.conv_out has no bias"):
        import_state_dict(state, COINCHEUNG_V1)


def test_v1_reference_detects_a_wrong_mapping(foreign, inputs):
    # Swap two same-shaped ResNet tensors: a shape-compatible but wrong mapping must change the output.
    state, _ = foreign[MMSEG_V1]
    a, b = "backbone.context_path.backbone.layer3.1.conv1.weight", "backbone.context_path.backbone.layer3.1.conv2.weight"
    swapped = {**state, a: state[b], b: state[a]}
    with torch.inference_mode():
        assert not torch.allclose(import_state_dict(swapped, MMSEG_V1).build_model()(inputs),
                                  mmseg_v1_reference(state, inputs), atol=1e-3)


# --------------------------------------------------------------------------------------------
# Exact key mapping


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_main_path_tensor_is_used_once_and_aux_heads_are_dropped(family, foreign):
    state, checkpoint = foreign[family]
    assert any(k.startswith(AUX_PREFIXES) for k in state)
    main = [k for k in state if not k.startswith(AUX_PREFIXES)]
    assert checkpoint.kind == "deploy" and checkpoint.config.aux_heads is False
    assert set(checkpoint.state_dict) == set(BiSeNetV1(checkpoint.config).state_dict())
    assert len(checkpoint.state_dict) == len(main)  # one of ours per foreign tensor, nothing filled
    assert checkpoint.architecture == "bisenetv1"
    assert checkpoint.info.classes == CITYSCAPES and checkpoint.info.train_resolution == (1024, 2048)


@pytest.mark.parametrize("family,ours,theirs", [
    (MMSEG_V1, "context.backbone.stem.0.weight", "backbone.context_path.backbone.conv1.weight"),
    (MMSEG_V1, "context.backbone.layer3.0.downsample.1.running_var",
     "backbone.context_path.backbone.layer3.0.downsample.1.running_var"),
    (MMSEG_V1, "context.arm32.attention.1.weight", "backbone.context_path.arm32.atten_conv_layer.1.bn.weight"),
    (MMSEG_V1, "context.global_context.0.weight", "backbone.context_path.gap_conv.1.conv.weight"),
    (MMSEG_V1, "spatial.conv_out.1.bias", "backbone.spatial_path.layer4.bn.bias"),
    (MMSEG_V1, "ffm.attention.0.weight", "backbone.ffm.conv_atten.0.conv.weight"),
    (MMSEG_V1, "head.classifier.bias", "decode_head.conv_seg.bias"),
    (COINCHEUNG_V1, "context.backbone.layer2.1.conv2.1.running_mean", "cp.resnet.layer2.1.bn2.running_mean"),
    (COINCHEUNG_V1, "context.arm16.attention.0.weight", "cp.arm16.conv_atten.weight"),
    (COINCHEUNG_V1, "context.refine32.0.weight", "cp.conv_head32.conv.weight"),
    (COINCHEUNG_V1, "ffm.attention.0.weight", "ffm.conv.weight"),
    (COINCHEUNG_V1, "ffm.attention.1.running_var", "ffm.bn.running_var"),
    (COINCHEUNG_V1, "head.classifier.weight", "conv_out.conv_out.weight"),
])
def test_key_mapping(family, ours, theirs, foreign):
    state, checkpoint = foreign[family]
    assert torch.equal(checkpoint.state_dict[ours], state[theirs])


def test_import_settings_per_family(foreign):
    mm, cc = foreign[MMSEG_V1][1].config, foreign[COINCHEUNG_V1][1].config
    assert (mm.ffm_attention, mm.head_upsample, mm.align_corners) == ("conv_bn_relu", "bilinear", False)
    assert (cc.ffm_attention, cc.head_upsample, cc.align_corners) == ("conv_bn", "bilinear", False)
    assert mm.num_classes == cc.num_classes == 19 and mm.head_channels == cc.head_channels == 256
    assert foreign[MMSEG_V1][1].info.normalization.mean == (0.485, 0.456, 0.406)
    assert foreign[COINCHEUNG_V1][1].info.normalization.mean == (0.3257, 0.3690, 0.3223)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_v1_file_is_detected_converted_and_round_trips(family, foreign, inputs, tmp_path):
    state, checkpoint = foreign[family]
    data = {"meta": {}, "state_dict": state} if family == MMSEG_V1 else state
    path = tmp_path / "public.pth"
    torch.save(data, path)
    assert detect_family(data) == family
    assert detect_family({f"module.{k}": v for k, v in state.items()}) == family
    with pytest.raises(CheckpointError, match=f"looks like a {family} checkpoint"):
        load_checkpoint(path)
    imported = import_checkpoint(path)
    assert imported.config == checkpoint.config
    saved = load_checkpoint(save_checkpoint(imported, tmp_path / "ours.pt"))
    assert saved.architecture == "bisenetv1" and saved.config == checkpoint.config
    with torch.inference_mode():
        assert torch.equal(saved.build_model()(inputs), checkpoint.build_model()(inputs))


# --------------------------------------------------------------------------------------------
# A wrong layout gets a clear error


@pytest.mark.parametrize("family,key", [
    (MMSEG_V1, "backbone.context_path.backbone.layer4.1.bn2.running_var"),
    (COINCHEUNG_V1, "cp.arm32.bn_atten.weight"),
])
def test_missing_key_is_named(family, key, foreign):
    state = dict(foreign[family][0])
    del state[key]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): " + key.replace(".", r"\.")):
        import_state_dict(state, family)


def test_resnet50_backbone_is_refused_by_name(foreign):
    # mmsegmentation's R-50-D32 BiSeNetV1 has bottleneck blocks (conv3/bn3): not this network.
    state = dict(foreign[MMSEG_V1][0])
    state["backbone.context_path.backbone.layer1.0.conv3.weight"] = torch.zeros(256, 64, 1, 1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): backbone\.context_path\.backbone\.layer1\.0\.conv3"):
        import_state_dict(state, MMSEG_V1)


def test_wrong_shape_is_named(foreign):
    state = dict(foreign[COINCHEUNG_V1][0])
    state["cp.resnet.layer2.0.downsample.0.weight"] = torch.zeros(128, 64, 3, 3)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): cp\.resnet\.layer2\.0\.downsample\.0\.weight"):
        import_state_dict(state, COINCHEUNG_V1)


def test_a_v2_state_dict_is_not_a_v1_one():
    from test_importers import coincheung_state_dict, mmseg_state_dict

    with pytest.raises(CheckpointError, match="not a mmsegmentation-bisenetv1 BiSeNetV1 state dict.*context_path.arm16"):
        import_state_dict(mmseg_state_dict(aux=False), MMSEG_V1)
    with pytest.raises(CheckpointError, match="not a coincheung-bisenetv1 BiSeNetV1 state dict.*conv_out.conv_out"):
        import_state_dict(coincheung_state_dict(aux=False), COINCHEUNG_V1)
    assert detect_family(mmseg_state_dict(aux=False)) == "mmsegmentation"  # V2 files still go to V2


def test_pixel_shuffle_head_with_odd_channel_count_is_refused():
    state = coincheung_v1_state_dict(seed=2, layout="pixel_shuffle")
    state["conv_out.conv_out.weight"] = torch.zeros(19 * 64 + 1, 256, 1, 1)
    with pytest.raises(CheckpointError, match="PixelShuffle head has 1217 outputs"):
        import_state_dict(state, COINCHEUNG_V1)


def test_aux_heads_of_no_layout_are_named():
    state = coincheung_v1_state_dict(seed=2, layout="2021-07-07")
    state["conv_out32.conv_out.weight"] = torch.zeros(19 * 2, 64, 1, 1)
    with pytest.raises(CheckpointError, match="head outputs 19, conv_out16 19, conv_out32 38 fit no published layout"):
        import_state_dict(state, COINCHEUNG_V1)


def test_the_user_report_file_imports(tmp_path, capsys):
    """The issue's case: a state dict made by today's lib/models/bisenetv1.py (aux_mode='train')."""
    from bisenetv2_ros.cli.commands import main

    torch.save(coincheung_v1_state_dict(seed=9, layout="current"), tmp_path / "model_final_v1_city_new.pth")
    assert main(["import", str(tmp_path / "model_final_v1_city_new.pth"), str(tmp_path / "v1.pt")]) == 0
    assert "coincheung-bisenetv1, 19 classes" in capsys.readouterr().out


def test_cli_import_and_info_of_a_v1_file(foreign, tmp_path, capsys):
    from bisenetv2_ros.cli.commands import main

    state, _ = foreign[COINCHEUNG_V1]
    torch.save(state, tmp_path / "model_final_v1_city_new.pth")
    assert main(["import", str(tmp_path / "model_final_v1_city_new.pth"), str(tmp_path / "v1.pt")]) == 0
    assert "coincheung-bisenetv1, 19 classes" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "v1.pt")]) == 0
    out = capsys.readouterr().out
    assert "model:            bisenetv1: num_classes=19" in out and "ffm_attention=conv_bn," in out


def test_coincheung_2019_inplace_abn_file_is_refused_by_name():
    # Same key names as the 2020 layout, but InPlaceABNSync (leaky ReLU after every BN) keeps no
    # num_batches_tracked: a different function, so it must not import silently.
    state = {k: v for k, v in coincheung_v1_state_dict(seed=3, layout="2020").items()
             if not k.endswith("num_batches_tracked")}
    with pytest.raises(CheckpointError, match="the signature of CoinCheung's 2018-2019 model.py \\(InPlaceABNSync"):
        import_state_dict(state, COINCHEUNG_V1)
