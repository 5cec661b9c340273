"""Importers of public BiSeNetV2 checkpoints, proven functionally.

For each family we build a synthetic state dict with that family's exact key names and shapes
(read off its published model code: open-mmlab/mmsegmentation mmseg/models/backbones/bisenetv2.py
with an FCNHead decode head and four FCNHead auxiliary heads as in configs/_base_/models/bisenetv2.py;
CoinCheung/BiSeNet lib/models/bisenetv2.py). A reference forward pass, written here with
torch.nn.functional directly on the FOREIGN keys and following that family's published forward,
must give the same output as our model after import. A mapping that is merely shape-compatible
(two same-shaped tensors swapped, a missing ReLU, another upsampling) fails this.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bisenetv2_ros.classes import CITYSCAPES
from bisenetv2_ros.weights.checkpoint import CheckpointError, detect_family, load_checkpoint, save_checkpoint
from bisenetv2_ros.weights.importers import import_checkpoint, import_state_dict

# --------------------------------------------------------------------------------------------
# Synthetic foreign state dicts


class StateBuilder:
    """Random tensors under foreign key names: convs with He-scaled weights, BNs with random statistics."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def _rand(self, *shape):
        return torch.randn(*shape, generator=self.generator)

    def _uniform(self, low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=self.generator)

    def conv(self, key: str, cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> None:
        fan_in = cin // groups * k * k
        self.state[f"{key}.weight"] = self._rand(cout, cin // groups, k, k) * math.sqrt(2.0 / fan_in)
        if bias:
            self.state[f"{key}.bias"] = self._rand(cout) * 0.1

    def bn(self, key: str, channels: int) -> None:
        self.state[f"{key}.weight"] = self._uniform(0.5, 1.5, channels)
        self.state[f"{key}.bias"] = self._rand(channels) * 0.1
        self.state[f"{key}.running_mean"] = self._rand(channels) * 0.2
        self.state[f"{key}.running_var"] = self._uniform(0.5, 2.0, channels)
        self.state[f"{key}.num_batches_tracked"] = torch.tensor(1000)


# mmsegmentation: every conv+norm(+act) is an mmcv ConvModule with children ".conv" and ".bn".
def _conv_module(b: StateBuilder, key: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
    b.conv(f"{key}.conv", cin, cout, k, groups)
    b.bn(f"{key}.bn", cout)


def _mmseg_ge(b: StateBuilder, key: str, cin: int, cout: int, stride: int) -> None:
    mid = cin * 6
    _conv_module(b, f"{key}.conv1", cin, cin, 3)
    if stride == 1:
        _conv_module(b, f"{key}.dwconv.0", cin, mid, 3, groups=cin)
    else:
        _conv_module(b, f"{key}.dwconv.0", cin, mid, 3, groups=cin)
        _conv_module(b, f"{key}.dwconv.1", mid, mid, 3, groups=mid)
        _conv_module(b, f"{key}.shortcut.0.depthwise_conv", cin, cin, 3, groups=cin)
        _conv_module(b, f"{key}.shortcut.0.pointwise_conv", cin, cout, 1)
    _conv_module(b, f"{key}.conv2.0", mid, cout, 1)


def mmseg_state_dict(num_classes: int = 19, head_channels: int = 1024, seed: int = 0,
                     aux: bool = True) -> dict[str, torch.Tensor]:
    b = StateBuilder(seed)
    detail = "backbone.detail.detail_branch"
    for i, (cin, cout, layers) in enumerate([(3, 64, 2), (64, 64, 3), (64, 128, 3)]):
        for j in range(layers):
            _conv_module(b, f"{detail}.{i}.{j}", cin if j == 0 else cout, cout, 3)
    stem = "backbone.semantic.stage1"
    _conv_module(b, f"{stem}.conv_first", 3, 16, 3)
    _conv_module(b, f"{stem}.convs.0", 16, 8, 1)
    _conv_module(b, f"{stem}.convs.1", 8, 16, 3)
    _conv_module(b, f"{stem}.fuse_last", 32, 16, 3)
    for stage, cin, cout, layers in [("stage2", 16, 32, 2), ("stage3", 32, 64, 2), ("stage4", 64, 128, 4)]:
        for j in range(layers):
            _mmseg_ge(b, f"backbone.semantic.{stage}.{j}", cin if j == 0 else cout, cout, 2 if j == 0 else 1)
    ce = "backbone.semantic.stage4_CEBlock"
    b.bn(f"{ce}.gap.1", 128)
    _conv_module(b, f"{ce}.conv_gap", 128, 128, 1)
    _conv_module(b, f"{ce}.conv_last", 128, 128, 3)
    bga = "backbone.bga"
    for name in ("detail_dwconv", "semantic_dwconv"):  # DepthwiseSeparableConvModule, no pw norm -> pw bias
        _conv_module(b, f"{bga}.{name}.0.depthwise_conv", 128, 128, 3, groups=128)
        b.conv(f"{bga}.{name}.0.pointwise_conv.conv", 128, 128, 1, bias=True)
    _conv_module(b, f"{bga}.detail_down.0", 128, 128, 3)
    _conv_module(b, f"{bga}.semantic_conv.0", 128, 128, 3)
    _conv_module(b, f"{bga}.conv", 128, 128, 3)
    _conv_module(b, "decode_head.convs.0", 128, head_channels, 3)
    b.conv("decode_head.conv_seg", head_channels, num_classes, 1, bias=True)
    if aux:  # FCNHead(num_convs=2) on stage1..stage4
        for i, (cin, channels) in enumerate([(16, 16), (32, 64), (64, 256), (128, 1024)]):
            _conv_module(b, f"auxiliary_head.{i}.convs.0", cin, channels, 3)
            _conv_module(b, f"auxiliary_head.{i}.convs.1", channels, channels, 3)
            b.conv(f"auxiliary_head.{i}.conv_seg", channels, num_classes, 1, bias=True)
    return b.state


# CoinCheung: ConvBNReLU has ".conv"/".bn"; the other blocks are bare nn.Sequential(conv, bn, ...).
def _cc_cbr(b: StateBuilder, key: str, cin: int, cout: int, k: int) -> None:
    b.conv(f"{key}.conv", cin, cout, k)
    b.bn(f"{key}.bn", cout)


def _cc_seq(b: StateBuilder, key: str, index: int, cin: int, cout: int, k: int, groups: int = 1) -> None:
    b.conv(f"{key}.{index}", cin, cout, k, groups)
    b.bn(f"{key}.{index + 1}", cout)


def _cc_ge(b: StateBuilder, key: str, cin: int, cout: int, stride: int) -> None:
    mid = cin * 6
    _cc_cbr(b, f"{key}.conv1", cin, cin, 3)
    if stride == 1:
        _cc_seq(b, f"{key}.dwconv", 0, cin, mid, 3, groups=cin)
    else:
        _cc_seq(b, f"{key}.dwconv1", 0, cin, mid, 3, groups=cin)
        _cc_seq(b, f"{key}.dwconv2", 0, mid, mid, 3, groups=mid)
        _cc_seq(b, f"{key}.shortcut", 0, cin, cin, 3, groups=cin)
        _cc_seq(b, f"{key}.shortcut", 2, cin, cout, 1)
    _cc_seq(b, f"{key}.conv2", 0, mid, cout, 1)


# CoinCheung/BiSeNet lib/models/bisenetv2.py over its git history (importers_v2 docstring): the main
# head's classifier key and outputs per class, and the aux heads' conv_out layout.
CC_V2_LAYOUTS = {
    "2020": ("head.conv_out", 1),  # 2020-05 .. 2020-09-29: bilinear align_corners=True in BGA and head
    "pixel_shuffle": ("head.conv_out.0", 64),  # 2020-09-29 .. 2021-07-07: PixelShuffle(8)
    "current": ("head.conv_out.1", 1),  # 2021-07-07 ..: Identity, conv, Upsample(x8, bilinear)
}


def coincheung_state_dict(num_classes: int = 19, seed: int = 0, aux: bool = True,
                          layout: str = "current") -> dict[str, torch.Tensor]:
    classifier, per_class = CC_V2_LAYOUTS[layout]
    b = StateBuilder(seed)
    for i, (cin, cout, layers) in enumerate([(3, 64, 2), (64, 64, 3), (64, 128, 3)], start=1):
        for j in range(layers):
            _cc_cbr(b, f"detail.S{i}.{j}", cin if j == 0 else cout, cout, 3)
    _cc_cbr(b, "segment.S1S2.conv", 3, 16, 3)
    _cc_cbr(b, "segment.S1S2.left.0", 16, 8, 1)
    _cc_cbr(b, "segment.S1S2.left.1", 8, 16, 3)
    _cc_cbr(b, "segment.S1S2.fuse", 32, 16, 3)
    for stage, cin, cout, layers in [("S3", 16, 32, 2), ("S4", 32, 64, 2), ("S5_4", 64, 128, 4)]:
        for j in range(layers):
            _cc_ge(b, f"segment.{stage}.{j}", cin if j == 0 else cout, cout, 2 if j == 0 else 1)
    b.bn("segment.S5_5.bn", 128)
    _cc_cbr(b, "segment.S5_5.conv_gap", 128, 128, 1)
    _cc_cbr(b, "segment.S5_5.conv_last", 128, 128, 3)
    for name in ("left1", "right2"):  # dw 3x3 conv, BN, 1x1 conv without bias
        _cc_seq(b, f"bga.{name}", 0, 128, 128, 3, groups=128)
        b.conv(f"bga.{name}.2", 128, 128, 1)
    _cc_seq(b, "bga.left2", 0, 128, 128, 3)
    _cc_seq(b, "bga.right1", 0, 128, 128, 3)
    _cc_seq(b, "bga.conv", 0, 128, 128, 3)
    _cc_cbr(b, "head.conv", 128, 1024, 3)
    b.conv(classifier, 1024, num_classes * per_class, 1, bias=True)
    for name, cin, up in [("aux2", 16, 4), ("aux3", 32, 8), ("aux4", 64, 16), ("aux5_4", 128, 32)] if aux else []:
        _cc_cbr(b, f"{name}.conv", cin, 128, 3)
        if layout == "current":  # SegmentHead(aux=True): conv, [upsample, ConvBNReLU(mid, up^2)], 1x1 conv
            _cc_cbr(b, f"{name}.conv_out.0.1", 128, up * up, 3)
            b.conv(f"{name}.conv_out.1", up * up, num_classes, 1, bias=True)
        elif layout == "pixel_shuffle":  # ConvBNReLU(mid, up^2), 1x1 conv to classes x up^2, PixelShuffle
            _cc_cbr(b, f"{name}.conv_out.0", 128, up * up, 3)
            b.conv(f"{name}.conv_out.1", up * up, num_classes * up * up, 1, bias=True)
        else:  # the plain SegmentHead
            b.conv(f"{name}.conv_out", 128, num_classes, 1, bias=True)
    return b.state


# --------------------------------------------------------------------------------------------
# Reference forward passes on the foreign keys


def _conv(sd, key, x, stride=1, depthwise=False):
    weight = sd[f"{key}.weight"]
    groups = x.shape[1] if depthwise else 1
    return F.conv2d(x, weight, sd.get(f"{key}.bias"), stride, weight.shape[-1] // 2, groups=groups)


def _bn(sd, key, x):
    return F.batch_norm(x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                        sd[f"{key}.bias"], training=False, eps=1e-5)


def _cbr(sd, key, x, stride=1, depthwise=False, relu=True, conv="conv", bn="bn"):
    """conv -> BN (-> ReLU) with the conv at key.<conv> and the BN at key.<bn>."""
    x = _bn(sd, f"{key}.{bn}", _conv(sd, f"{key}.{conv}", x, stride, depthwise))
    return F.relu(x) if relu else x


def mmseg_reference(sd, x):
    cm = _cbr  # mmcv ConvModule
    d = x
    for i, layers in enumerate((2, 3, 3)):
        for j in range(layers):
            d = cm(sd, f"backbone.detail.detail_branch.{i}.{j}", d, stride=2 if j == 0 else 1)
    stem = "backbone.semantic.stage1"
    s = cm(sd, f"{stem}.conv_first", x, stride=2)
    left = cm(sd, f"{stem}.convs.1", cm(sd, f"{stem}.convs.0", s), stride=2)
    s = cm(sd, f"{stem}.fuse_last", torch.cat([left, F.max_pool2d(s, 3, 2, 1)], dim=1))
    for stage, layers in (("stage2", 2), ("stage3", 2), ("stage4", 4)):
        for j in range(layers):
            key = f"backbone.semantic.{stage}.{j}"
            y = cm(sd, f"{key}.conv1", s)
            if j == 0:  # stride 2
                y = cm(sd, f"{key}.dwconv.0", y, stride=2, depthwise=True, relu=False)
                y = cm(sd, f"{key}.dwconv.1", y, depthwise=True)  # "ReLU in ConvModule not shown in paper"
                shortcut = cm(sd, f"{key}.shortcut.0.depthwise_conv", s, stride=2, depthwise=True, relu=False)
                shortcut = cm(sd, f"{key}.shortcut.0.pointwise_conv", shortcut, relu=False)
            else:
                y = cm(sd, f"{key}.dwconv.0", y, depthwise=True)
                shortcut = s
            s = F.relu(cm(sd, f"{key}.conv2.0", y, relu=False) + shortcut)
    ce = "backbone.semantic.stage4_CEBlock"
    gap = cm(sd, f"{ce}.conv_gap", _bn(sd, f"{ce}.gap.1", F.adaptive_avg_pool2d(s, 1)))
    s = cm(sd, f"{ce}.conv_last", s + gap)
    bga = "backbone.bga"

    def dw_separable(name, t):  # depth-wise ConvModule (BN, no act), point-wise conv with bias
        t = cm(sd, f"{bga}.{name}.0.depthwise_conv", t, depthwise=True, relu=False)
        return _conv(sd, f"{bga}.{name}.0.pointwise_conv.conv", t)

    detail_dwconv = dw_separable("detail_dwconv", d)
    detail_down = F.avg_pool2d(cm(sd, f"{bga}.detail_down.0", d, stride=2, relu=False), 3, 2, 1)
    semantic_conv = cm(sd, f"{bga}.semantic_conv.0", s, relu=False)
    semantic_dwconv = dw_separable("semantic_dwconv", s)
    semantic_conv = F.interpolate(semantic_conv, size=detail_dwconv.shape[2:], mode="bilinear", align_corners=False)
    fuse_1 = detail_dwconv * torch.sigmoid(semantic_conv)
    fuse_2 = detail_down * torch.sigmoid(semantic_dwconv)
    fuse_2 = F.interpolate(fuse_2, size=fuse_1.shape[2:], mode="bilinear", align_corners=False)
    feature = cm(sd, f"{bga}.conv", fuse_1 + fuse_2)
    logits = _conv(sd, "decode_head.conv_seg", cm(sd, "decode_head.convs.0", feature))  # FCNHead, dropout off
    return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)  # EncoderDecoder resize


def coincheung_reference(sd, x):
    cbr = _cbr  # their ConvBNReLU

    def seq(key, index, t, stride=1, depthwise=False, relu=False):  # bare Sequential(conv, bn[, relu])
        return _cbr(sd, key, t, stride, depthwise, relu, conv=str(index), bn=str(index + 1))

    d = x
    for i, layers in enumerate((2, 3, 3), start=1):
        for j in range(layers):
            d = cbr(sd, f"detail.S{i}.{j}", d, stride=2 if j == 0 else 1)
    s = cbr(sd, "segment.S1S2.conv", x, stride=2)
    left = cbr(sd, "segment.S1S2.left.1", cbr(sd, "segment.S1S2.left.0", s), stride=2)
    s = cbr(sd, "segment.S1S2.fuse", torch.cat([left, F.max_pool2d(s, 3, 2, 1)], dim=1))
    for stage, layers in (("S3", 2), ("S4", 2), ("S5_4", 4)):
        for j in range(layers):
            key = f"segment.{stage}.{j}"
            y = cbr(sd, f"{key}.conv1", s)
            if j == 0:  # GELayerS2
                y = seq(f"{key}.dwconv1", 0, y, stride=2, depthwise=True)
                y = seq(f"{key}.dwconv2", 0, y, depthwise=True, relu=True)  # "not shown in paper"
                shortcut = seq(f"{key}.shortcut", 0, s, stride=2, depthwise=True)
                shortcut = seq(f"{key}.shortcut", 2, shortcut)
            else:  # GELayerS1
                y = seq(f"{key}.dwconv", 0, y, depthwise=True, relu=True)
                shortcut = s
            s = F.relu(seq(f"{key}.conv2", 0, y) + shortcut)
    gap = cbr(sd, "segment.S5_5.conv_gap", _bn(sd, "segment.S5_5.bn", torch.mean(s, dim=(2, 3), keepdim=True)))
    s = cbr(sd, "segment.S5_5.conv_last", gap + s)
    left1 = _conv(sd, "bga.left1.2", seq("bga.left1", 0, d, depthwise=True))
    left2 = F.avg_pool2d(seq("bga.left2", 0, d, stride=2), 3, 2, 1)
    right1 = seq("bga.right1", 0, s)
    right2 = _conv(sd, "bga.right2.2", seq("bga.right2", 0, s, depthwise=True))
    if "head.conv_out.weight" in sd:  # before 2020-09-29: F.interpolate(bilinear, align_corners=True, size)
        up = lambda t: F.interpolate(t, size=d.shape[2:], mode="bilinear", align_corners=True)  # noqa: E731
    else:  # nn.Upsample(scale_factor=4)
        up = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
    left = left1 * torch.sigmoid(up(right1))
    right = up(left2 * torch.sigmoid(right2))
    feature = seq("bga.conv", 0, left + right, relu=True)
    feature = cbr(sd, "head.conv", feature)  # dropout off
    if "head.conv_out.weight" in sd:
        logits = _conv(sd, "head.conv_out", feature)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)
    if "head.conv_out.0.weight" in sd:
        return F.pixel_shuffle(_conv(sd, "head.conv_out.0", feature), 8)
    logits = _conv(sd, "head.conv_out.1", feature)  # conv_out.0 = Identity
    return F.interpolate(logits, scale_factor=8, mode="bilinear", align_corners=False)


FAMILIES = {
    "mmsegmentation": (mmseg_state_dict, mmseg_reference),
    "coincheung": (coincheung_state_dict, coincheung_reference),
}


@pytest.fixture(scope="module")
def foreign():
    """{family: (state dict, imported checkpoint)} for the default 19-class Cityscapes layout."""
    result = {}
    for family, (make, _) in FAMILIES.items():
        state = make(seed=1)
        result[family] = (state, import_state_dict(state, family))
    return result


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def outputs(foreign, inputs):
    """{family: (our imported model's output, the reference output)} on ``inputs``, computed once."""
    result = {}
    with torch.inference_mode():
        for family, (state, checkpoint) in foreign.items():
            result[family] = (checkpoint.build_model()(inputs), FAMILIES[family][1](state, inputs))
    return result


# --------------------------------------------------------------------------------------------
# The imported model computes what the original model computes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_model_equals_reference_forward(family, outputs):
    ours, reference = outputs[family]
    assert ours.shape == reference.shape == (2, 19, 64, 96)
    assert reference.abs().max() > 0.1  # a meaningful, non-degenerate signal
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    # And the predictions, which is what users see:
    agreement = (ours.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement > 0.999


def test_mmseg_import_at_size_not_multiple_of_32(foreign):
    state, checkpoint = foreign["mmsegmentation"]
    x = torch.randn(1, 3, 50, 70, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(checkpoint.build_model()(x), mmseg_reference(state, x), atol=1e-4, rtol=1e-4)


def test_reference_detects_a_wrong_mapping(foreign, inputs, outputs):
    # Control: the reference is sensitive. Swap two same-shaped tensors of the foreign dict and the
    # output must change, so passing the equality test above means the mapping is right.
    state, _ = foreign["coincheung"]
    swapped = dict(state)
    swapped["segment.S5_4.1.conv1.conv.weight"], swapped["segment.S5_4.2.conv1.conv.weight"] = (
        state["segment.S5_4.2.conv1.conv.weight"], state["segment.S5_4.1.conv1.conv.weight"])
    model = import_state_dict(swapped, "coincheung").build_model()
    with torch.inference_mode():
        assert not torch.allclose(model(inputs), outputs["coincheung"][1], atol=1e-3)


def test_import_settings_per_family(foreign):
    mm, cc = foreign["mmsegmentation"][1], foreign["coincheung"][1]
    assert mm.config.upsample_mode == "bilinear" and cc.config.upsample_mode == "nearest"
    for checkpoint in (mm, cc):
        assert checkpoint.config.ge_depthwise_relu is True
        assert checkpoint.config.head_channels == 1024
        assert checkpoint.config.num_classes == 19
        assert checkpoint.info.classes == CITYSCAPES
        assert checkpoint.info.train_resolution == (1024, 2048)
    assert mm.info.normalization.mean == (0.485, 0.456, 0.406)  # ImageNet mean, RGB
    assert cc.info.normalization.mean == (0.3257, 0.3690, 0.3223)  # their Cityscapes mean, RGB
    assert mm.info.provenance["imported_from"] == "mmsegmentation"


# --------------------------------------------------------------------------------------------
# Booster heads, files, round trip


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_aux_heads_are_dropped(family, foreign):
    state, checkpoint = foreign[family]
    assert any(k.startswith(("auxiliary_head.", "aux")) for k in state)  # the source has them
    assert checkpoint.kind == "deploy"
    assert checkpoint.config.aux_heads is False
    assert not any("aux" in k for k in checkpoint.state_dict)
    main_tensors = sum(1 for k in state if not k.startswith(("auxiliary_head.", "aux")))
    bias_fill = 2 if family == "coincheung" else 0  # our BGA 1x1 convs have a bias; theirs has none
    assert len(checkpoint.state_dict) == main_tensors + bias_fill


def test_coincheung_missing_bga_bias_becomes_zero(foreign):
    _, checkpoint = foreign["coincheung"]
    assert torch.count_nonzero(checkpoint.state_dict["bga.detail_high.1.bias"]) == 0
    assert torch.count_nonzero(checkpoint.state_dict["bga.semantic_low_gate.1.bias"]) == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_save_load_gives_identical_outputs(family, foreign, inputs, outputs, tmp_path):
    _, checkpoint = foreign[family]
    path = save_checkpoint(checkpoint, tmp_path / "converted.pt")
    loaded = load_checkpoint(path)
    assert loaded.config == checkpoint.config and loaded.info == checkpoint.info
    with torch.inference_mode():
        assert torch.equal(loaded.build_model()(inputs), outputs[family][0])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_checkpoint_detects_the_family_from_the_file(family, foreign, tmp_path):
    state, checkpoint = foreign[family]
    # mmsegmentation saves {meta, state_dict}; CoinCheung saves the bare state dict.
    data = {"meta": {"mmseg_version": "1.2.2", "dataset_meta": {}}, "state_dict": state} \
        if family == "mmsegmentation" else state
    path = tmp_path / "public.pth"
    torch.save(data, path)
    assert detect_family(data) == family
    imported = import_checkpoint(path)
    assert imported.config == checkpoint.config
    assert imported.info.provenance["source_file"] == "public.pth"
    assert all(torch.equal(imported.state_dict[k], v) for k, v in checkpoint.state_dict.items())
    # Our own loader refuses it but names the family and the way to convert it.
    with pytest.raises(CheckpointError, match=f"looks like a {family} checkpoint.*bisenetv2 import"):
        load_checkpoint(path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ddp_module_prefix_is_accepted(family, foreign):
    state, checkpoint = foreign[family]
    wrapped = {f"module.{k}": v for k, v in state.items()}
    assert detect_family(wrapped) == family
    imported = import_state_dict(wrapped, family)
    assert imported.state_dict.keys() == checkpoint.state_dict.keys()
    assert all(torch.equal(imported.state_dict[k], v) for k, v in checkpoint.state_dict.items())


def test_missing_num_batches_tracked_is_tolerated(foreign):
    state, checkpoint = foreign["mmsegmentation"]
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # older PyTorch
    imported = import_state_dict(old, "mmsegmentation")
    for key, value in checkpoint.state_dict.items():  # the counter does not enter the forward pass
        expected = torch.zeros_like(value) if key.endswith("num_batches_tracked") else value
        assert torch.equal(imported.state_dict[key], expected), key


def test_foreign_head_with_other_class_count_gets_numbered_names():
    for family, (make, _) in FAMILIES.items():
        checkpoint = import_state_dict(make(num_classes=11, seed=2, aux=False), family)
        assert checkpoint.config.num_classes == 11
        assert checkpoint.info.classes.names == tuple(f"class_{i}" for i in range(11))
        assert len(checkpoint.info.classes.palette) == 11


def test_foreign_head_channels_are_read_from_the_weights(inputs):
    state = mmseg_state_dict(num_classes=5, head_channels=64, seed=4, aux=False)
    checkpoint = import_state_dict(state, "mmsegmentation")
    assert checkpoint.config.head_channels == 64
    with torch.inference_mode():
        torch.testing.assert_close(checkpoint.build_model()(inputs[:1]), mmseg_reference(state, inputs[:1]),
                                   atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Errors name the problem


@pytest.mark.parametrize("family,key", [
    ("mmsegmentation", "backbone.semantic.stage3.1.dwconv.0.bn.running_var"),
    ("coincheung", "segment.S5_4.0.shortcut.2.weight"),
])
def test_missing_key_is_named(family, key, foreign):
    state = dict(foreign[family][0])
    del state[key]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): " + key.replace(".", r"\.")):
        import_state_dict(state, family)


@pytest.mark.parametrize("family,key", [
    ("mmsegmentation", "backbone.bga.conv.conv.weight"),
    ("coincheung", "detail.S2.1.bn.running_mean"),
])
def test_wrong_shape_is_named(family, key, foreign):
    state = dict(foreign[family][0])
    expected = tuple(state[key].shape)
    state[key] = torch.zeros(3, *state[key].shape[1:]) if state[key].dim() > 1 else torch.zeros(3)
    with pytest.raises(CheckpointError, match="shape mismatches") as error:
        import_state_dict(state, family)
    assert key in str(error.value) and str(expected) in str(error.value)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_extra_unknown_key_is_named(family, foreign):
    state = dict(foreign[family][0])
    state["backbone.extra_block.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): backbone\.extra_block\.weight"):
        import_state_dict(state, family)


def test_state_dict_of_another_network_is_refused():
    with pytest.raises(CheckpointError, match="not a coincheung BiSeNetV2 state dict.*head.conv.conv.weight"):
        import_state_dict({"fc.weight": torch.zeros(2, 2)}, "coincheung")
    with pytest.raises(CheckpointError, match="unknown checkpoint family 'timm'"):
        import_state_dict({}, "timm")


def test_unknown_file_layout_lists_the_known_families(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, path)
    assert detect_family(torch.load(path)) is None
    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*conv1.weight.*coincheung.*mmsegmentation"):
        import_checkpoint(path)


def test_import_checkpoint_passes_our_own_format_through(tiny_weights):
    checkpoint = import_checkpoint(tiny_weights)
    assert checkpoint.state_dict.keys() == load_checkpoint(tiny_weights).state_dict.keys()


# --------------------------------------------------------------------------------------------
# CoinCheung's earlier BiSeNetV2 layouts (its git history, importers_v2 docstring)


@pytest.mark.parametrize("layout,settings", [
    ("2020", ("bilinear", "bilinear", True)),
    ("pixel_shuffle", ("nearest", "pixel_shuffle", False)),
    ("current", ("nearest", "bilinear", False)),
])
def test_every_coincheung_v2_layout_imports_to_the_same_logits(layout, settings, inputs):
    state = coincheung_state_dict(seed=4, layout=layout)
    checkpoint = import_state_dict(state, "coincheung")
    config = checkpoint.config
    assert (config.upsample_mode, config.head_upsample, config.align_corners) == settings
    assert config.num_classes == 19 and detect_family(state) == "coincheung"
    with torch.inference_mode():
        ours, reference = checkpoint.build_model()(inputs), coincheung_reference(state, inputs)
    assert ours.shape == reference.shape == (2, 19, 64, 96)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_coincheung_v2_pixel_shuffle_head_of_odd_width_is_refused():
    state = coincheung_state_dict(seed=4, aux=False, layout="pixel_shuffle")
    state["head.conv_out.0.weight"] = torch.zeros(19 * 64 - 1, 1024, 1, 1)
    with pytest.raises(CheckpointError, match="PixelShuffle head head.conv_out.0 has 1215 outputs"):
        import_state_dict(state, "coincheung")


def test_coincheung_v2_without_a_classifier_names_the_three_layouts():
    state = {k: v for k, v in coincheung_state_dict(seed=4, aux=False).items() if not k.startswith("head.conv_out")}
    with pytest.raises(CheckpointError, match=r"no classifier head\.conv_out\.1 .* head\.conv_out\.0 .* head\.conv_out "):
        import_state_dict(state, "coincheung")


@pytest.mark.parametrize("value,shown", [(7, "int 7"), ("weights", "str 'weights'"), (None, "NoneType None"),
                                         ([1.0, 2.0], "list [1.0, 2.0]")])
def test_a_non_tensor_value_in_a_state_dict_is_one_line(tmp_path, tiny_weights, capsys, value, shown):
    """`bisenetv2 import` of a public (mmsegmentation) file and of one of ours holding a non-tensor value."""
    from test_download import make_mmseg_checkpoint

    from bisenetv2_ros.cli import commands as cli

    public, _ = make_mmseg_checkpoint(tmp_path / "public.pth")
    data = torch.load(public, weights_only=True)
    key = sorted(data["state_dict"])[0]
    data["state_dict"][key] = value
    torch.save(data, public)
    ours = torch.load(tiny_weights, weights_only=True)
    our_key = sorted(ours["state_dict"])[0]
    ours["state_dict"][our_key] = value
    torch.save(ours, tmp_path / "ours.pt")
    for source, name in ((public, key), (tmp_path / "ours.pt", our_key)):
        assert cli.main(["import", str(source), str(tmp_path / "out.pt")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"bisenetv2 import: error: {source}: state dict entry '{name}' holds {shown}, not a tensor; "
                       "the file is damaged or holds more than weights: save only the model's state_dict()"]
        assert not (tmp_path / "out.pt").exists()


def test_check_tensors_counts_every_bad_entry():
    from bisenetv2_ros.weights.checkpoint import check_tensors

    check_tensors({"a": torch.zeros(1)}, "x.pt")  # fine: nothing raised
    with pytest.raises(CheckpointError, match=r"^x\.pt: state dict entry 'b' holds int 1, not a tensor "
                                              r"\(2 such entries: b, c\)"):
        check_tensors({"a": torch.zeros(1), "b": 1, "c": 2.0}, "x.pt")
    with pytest.raises(CheckpointError, match="^x.pt: the state dict is a list, not a mapping"):
        check_tensors([torch.zeros(1)], "x.pt")
