"""The heads the publishers' layouts need (pixel shuffle, align_corners) in both networks, and the one
logits upsampling every caller shares (``upsample_logits``: the model's forward and the fused
pipeline's reduced-precision path)."""

from __future__ import annotations

import pytest
import torch

from bisenetv2_ros.inference.fused import FusedSegmentation
from bisenetv2_ros.models.bisenetv1 import BiSeNetV1, BiSeNetV1Config
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights.checkpoint import IMAGENET_NORMALIZATION


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0, generator=generator)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return model.eval()


CASES = [
    (BiSeNetV2, BiSeNetV2Config(num_classes=5, head_channels=16, aux_heads=False, head_upsample="pixel_shuffle")),
    (BiSeNetV2, BiSeNetV2Config(num_classes=5, head_channels=16, aux_heads=False, align_corners=True)),
    (BiSeNetV1, BiSeNetV1Config(num_classes=5, aux_heads=False, head_upsample="pixel_shuffle")),
    (BiSeNetV1, BiSeNetV1Config(num_classes=5, aux_heads=False, align_corners=True)),
]


@pytest.mark.parametrize("network,config", CASES)
def test_fused_reduced_precision_path_upsamples_like_the_model(network, config):
    model = _randomised(network(config), seed=1)
    fused = FusedSegmentation(model, IMAGENET_NORMALIZATION, (64, 96))
    frames = torch.randint(0, 256, (1, 80, 120, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.inference_mode():
        plain = fused(frames)
        fused.network_dtype = torch.float32  # the bf16 path, at fp32 so it must agree exactly
        split = fused(frames)
    assert plain.shape == (1, 80, 120) and len(torch.unique(plain)) >= 2
    assert torch.equal(plain, split)


def test_v2_pixel_shuffle_head_predicts_64_channels_per_class():
    model = BiSeNetV2(BiSeNetV2Config(num_classes=3, head_channels=8, aux_heads=False, head_upsample="pixel_shuffle"))
    assert model.head.classifier.out_channels == 3 * 64
    with torch.inference_mode():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_v2_unknown_head_upsample_is_named():
    with pytest.raises(ValueError, match="head_upsample must be one of"):
        BiSeNetV2Config(head_upsample="deconv")
