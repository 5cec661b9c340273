"""The publishers' test pipelines (training/protocols.py) against small reference implementations
written here from the documented steps (mmsegmentation v0.x test pipeline + EncoderDecoder whole /
slide inference + aug_test; CoinCheung/BiSeNet tools/evaluate.py MscEvalV0 / MscEvalCrop / Metrics),
with a tiny random network standing in for theirs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights.checkpoint import CITYSCAPES_NORMALIZATION, IMAGENET_NORMALIZATION
from training.protocols import (
    CoinCheungSettings,
    MmsegSettings,
    choose_protocol,
    coincheung_probabilities,
    mmseg_probabilities,
    mmseg_rescale_size,
    publisher_miou,
    publisher_predictor,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = BiSeNetV2(BiSeNetV2Config(num_classes=4, head_channels=8, aux_heads=False)).eval()
    with torch.no_grad():  # non-trivial batch norms so the logits vary across the image
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)


def _mean_std_255(normalization):
    return (np.array(normalization.mean, np.float32) * 255, np.array(normalization.std, np.float32) * 255)


# --------------------------------------------------------------------------------------------
# mmsegmentation


def test_mmseg_keep_ratio_sizes():
    assert mmseg_rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)  # Cityscapes: unchanged
    assert mmseg_rescale_size(480, 640, (2048, 512)) == (512, 683)  # a COCO photo: short side 512, 682.67 -> 683
    assert mmseg_rescale_size(640, 427, (2048, 512)) == (767, 512)  # portrait
    assert mmseg_rescale_size(512, 4096, (2048, 512)) == (256, 2048)  # long side limits


def reference_mmseg(model, image, normalization, scale, mode="whole", crop=None, stride=None, ratios=(1.0,),
                    flip=False):
    """mmseg v0.x: per (ratio, flip) view: Resize keep_ratio (mmcv rescale_size, cv2 INTER_LINEAR on the
    uint8 image), RandomFlip, Normalize; encode_decode (logits resized to the input), whole or slide;
    resize to ori_shape; softmax, flip back; the views' mean (aug_test)."""
    h, w = image.shape[:2]
    mean, std = _mean_std_255(normalization)
    outputs = []
    for ratio in ratios:
        long_edge, short_edge = int(max(scale) * ratio), int(min(scale) * ratio)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
        size = (int(w * factor + 0.5), int(h * factor + 0.5))
        for mirrored in ([False, True] if flip else [False]):
            img = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            if mirrored:
                img = np.flip(img, 1)
            x = torch.from_numpy(((img.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())[None]
            with torch.no_grad():
                if mode == "whole":
                    logit = model(x)
                else:
                    H, W = x.shape[2:]
                    logit = torch.zeros(1, model.config.num_classes, H, W)
                    count = torch.zeros(1, 1, H, W)
                    ys = sorted({min(max(0, min(i * stride[0] + crop[0], H) - crop[0]), H)
                                 for i in range(max(H - crop[0] + stride[0] - 1, 0) // stride[0] + 1)})
                    xs = sorted({max(0, min(j * stride[1] + crop[1], W) - crop[1])
                                 for j in range(max(W - crop[1] + stride[1] - 1, 0) // stride[1] + 1)})
                    for y1 in ys:
                        for x1 in xs:
                            y2, x2 = min(y1 + crop[0], H), min(x1 + crop[1], W)
                            logit[:, :, y1:y2, x1:x2] += model(x[:, :, y1:y2, x1:x2])
                            count[:, :, y1:y2, x1:x2] += 1
                    assert count.min() >= 1
                    logit = logit / count
                logit = F.interpolate(logit, size=(h, w), mode="bilinear", align_corners=False)
            probs = logit.softmax(1)
            outputs.append(probs.flip(3) if mirrored else probs)
    return torch.stack(outputs).mean(0)


@pytest.mark.parametrize("scale", [(140, 90), (70, 45), (100, 33)])
def test_mmseg_whole_equals_the_reference(model, image, scale):
    settings = MmsegSettings(scale)
    ours = mmseg_probabilities(model, image, IMAGENET_NORMALIZATION, settings)
    reference = reference_mmseg(model, image, IMAGENET_NORMALIZATION, scale)
    torch.testing.assert_close(ours.softmax(1), reference, atol=1e-5, rtol=1e-4)


def test_mmseg_resizes_the_uint8_image_not_floats(model, image):
    # The difference the issue measured: cv2 on uint8 (rounded) then normalise, against normalising first.
    settings = MmsegSettings((140, 90))
    ours = mmseg_probabilities(model, image, IMAGENET_NORMALIZATION, settings)
    mean, std = _mean_std_255(IMAGENET_NORMALIZATION)
    floats = cv2.resize((image.astype(np.float32) - mean) / std, (140, 90), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        logits = model(torch.from_numpy(floats.transpose(2, 0, 1).copy())[None])
        other = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    assert not torch.allclose(ours, other, atol=1e-4)
    assert (ours - other).abs().max() < 1.0  # the same network, only the rounding differs


def test_mmseg_slide_equals_the_reference(model, image):
    settings = MmsegSettings((140, 90), mode="slide", crop_size=(64, 64), stride=(32, 48))
    ours = mmseg_probabilities(model, image, IMAGENET_NORMALIZATION, settings)
    reference = reference_mmseg(model, image, IMAGENET_NORMALIZATION, (140, 90), "slide", (64, 64), (32, 48))
    torch.testing.assert_close(ours.softmax(1), reference, atol=1e-5, rtol=1e-4)
    whole = mmseg_probabilities(model, image, IMAGENET_NORMALIZATION, MmsegSettings((140, 90)))
    assert not torch.allclose(ours, whole, atol=1e-3)  # windows see less context: a different result


def test_mmseg_ms_flip_equals_the_reference(model, image):
    ratios = (0.5, 1.0, 1.5)
    ours = mmseg_probabilities(model, image, IMAGENET_NORMALIZATION, MmsegSettings((140, 90), ratios=ratios, flip=True))
    reference = reference_mmseg(model, image, IMAGENET_NORMALIZATION, (140, 90), ratios=ratios, flip=True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# CoinCheung/BiSeNet


def reference_coincheung(model, image, normalization, scales=(1.0,), flip=False, crop=None, short_side=None):
    """tools/evaluate.py: ToTensor ((x/255 - mean) / std), SizePreprocessor(shortside), then MscEvalV0
    (round up to 32, align_corners=True both ways, softmax sum) or MscEvalCrop (pad, 2/3-stride crops,
    exp(softmax + flipped softmax), resize back)."""
    mean, std = np.array(normalization.mean, np.float32), np.array(normalization.std, np.float32)
    img = torch.from_numpy(((image.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1).copy())[None]
    size = image.shape[:2]
    if short_side:
        h, w = img.shape[2:]
        new = (short_side, int(short_side / h * w)) if h < w else (int(short_side / w * h), short_side)
        img = F.interpolate(img, size=new, mode="bilinear", align_corners=False)
    H, W = img.shape[2:]
    classes = model.config.num_classes
    probs = torch.zeros(1, classes, *size)
    with torch.no_grad():
        for scale in scales:
            if crop is None:
                sH, sW = (math.ceil(int(scale * s) / 32) * 32 for s in (H, W))
                im = F.interpolate(img, size=(sH, sW), mode="bilinear", align_corners=True)
                probs += F.interpolate(model(im), size=size, mode="bilinear", align_corners=True).softmax(1)
                if flip:
                    logits = model(im.flip(3)).flip(3)
                    probs += F.interpolate(logits, size=size, mode="bilinear", align_corners=True).softmax(1)
                continue
            im = F.interpolate(img, [int(H * scale), int(W * scale)], mode="bilinear", align_corners=True)
            h, w = im.shape[2:]
            ph, pw = max(crop, h), max(crop, w)
            if crop < h and crop < w:
                padded, (top, left) = im, (0, 0)
            else:
                top, left = (ph - h) // 2, (pw - w) // 2
                padded = torch.zeros(1, 3, ph, pw)
                padded[:, :, top:top + h, left:left + w] = im
            PH, PW = padded.shape[2:]
            step = math.ceil(crop * 2 / 3)
            acc = torch.zeros(1, classes, PH, PW)
            for i in range(math.ceil((PH - crop) / step) + 1):
                for j in range(math.ceil((PW - crop) / step) + 1):
                    y2, x2 = min(PH, step * i + crop), min(PW, step * j + crop)
                    chip = padded[:, :, y2 - crop:y2, x2 - crop:x2]
                    p = model(chip).softmax(1)
                    if flip:
                        p = torch.exp(p + model(chip.flip(3)).flip(3).softmax(1))
                    acc[:, :, y2 - crop:y2, x2 - crop:x2] += p
            acc = acc[:, :, top:top + h, left:left + w]
            probs += F.interpolate(acc, size, mode="bilinear", align_corners=True)
    return probs


@pytest.mark.parametrize("case", [
    dict(),  # ss
    dict(scales=(0.5, 0.75, 1.0, 1.25), flip=True),  # msf
    dict(crop=32),  # ssc: crops smaller than the image
    dict(crop=64),  # ssc: the image padded to the crop
    dict(scales=(0.5, 1.25), flip=True, crop=32),  # mscf
    dict(short_side=40),  # ADE20K's eval_start_shortside
])
def test_coincheung_equals_the_reference(model, image, case):
    settings = CoinCheungSettings(scales=case.get("scales", (1.0,)), flip=case.get("flip", False),
                                  crop=(case["crop"], case["crop"]) if "crop" in case else None,
                                  short_side=case.get("short_side"))
    ours = coincheung_probabilities(model, image, CITYSCAPES_NORMALIZATION, settings, num_classes=4)
    reference = reference_coincheung(model, image, CITYSCAPES_NORMALIZATION, **case)
    assert ours.shape == (1, 4, 45, 70)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_coincheung_ss_rounds_the_input_up_to_32(image):
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return torch.zeros(1, 4, *x.shape[2:])

    coincheung_probabilities(Recorder(), image, CITYSCAPES_NORMALIZATION, CoinCheungSettings(), 4)
    coincheung_probabilities(Recorder(), np.zeros((375, 500, 3), np.uint8), CITYSCAPES_NORMALIZATION,
                             CoinCheungSettings(short_side=512), 4)
    assert seen == [(64, 96), (512, 704)]  # 45x70 -> 64x96; ADE 375x500 -> 512x682 -> 512x704


def test_publisher_miou_adds_one_to_every_denominator():
    matrix = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    # class 0: 3 / (3 + 0 + 1 + 1); class 1: 2 / (2 + 1 + 0 + 1); class 2 (absent): 0 / 1
    assert publisher_miou(matrix) == pytest.approx((3 / 5 + 2 / 4 + 0) / 3)


# --------------------------------------------------------------------------------------------
# Choosing the settings


def test_protocol_settings_per_publisher_and_dataset():
    mm = choose_protocol("mmseg", "coco-stuff164k", "bisenetv1", ms_flip=True).settings
    assert mm.scale == (2048, 512) and mm.mode == "whole" and mm.flip and mm.ratios == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    cc = choose_protocol("coincheung", "ade20k", "bisenetv2", coincheung_mode="mscf").settings
    assert cc.crop == (640, 640) and cc.short_side == 640 and cc.flip and len(cc.scales) == 6
    assert choose_protocol("coincheung", "cityscapes", "bisenetv1").settings == CoinCheungSettings()
    assert choose_protocol("paper", "cityscapes", "bisenetv2").input_size == (512, 1024)
    with pytest.raises(ValueError, match="the paper states no evaluation resolution for ade20k; pass --input-size"):
        choose_protocol("paper", "ade20k", "bisenetv2")
    with pytest.raises(ValueError, match="mmsegmentation has no BiSeNet test pipeline for camvid"):
        choose_protocol("mmseg", "camvid", "bisenetv2")
    with pytest.raises(ValueError, match="slide inference needs a crop size and a stride"):
        choose_protocol("mmseg", "cityscapes", "bisenetv2", mmseg_mode="slide")


def test_predictor_gives_uint8_labels_at_the_image_size(model, image):
    choice = choose_protocol("coincheung", "cityscapes", "bisenetv2")
    labels = publisher_predictor(choice, model, CITYSCAPES_NORMALIZATION)(image)
    assert labels.shape == (45, 70) and labels.dtype == np.uint8 and labels.max() < 4
