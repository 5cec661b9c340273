"""Size of a BiSeNetV2 or BiSeNetV1: parameters and multiply-accumulates, counted exactly.

What is counted: every multiply-accumulate of every ``nn.Conv2d`` and ``nn.Linear``, found by
running one forward pass with hooks. A convolution costs
``output elements x in_channels / groups x kH x kW`` MACs; a linear layer
``output elements x in_features``. Biases, batch norm, ReLU, pooling, interpolation, sigmoid,
the gating products and the residual sums are NOT counted (together they are well under 1% of the
total). The paper's "FLOPs" (Tables 5-8) are multiply-accumulates in this sense; frameworks that
report "FLOPs" as 2 x MACs would give twice these numbers.

The deployed network has no booster / auxiliary heads, so sizes are always of the model without them.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import torch
from torch import nn

from ..conventions import DEFAULT_INPUT_SIZE
from ..models.architectures import (
    ARCHITECTURES,
    REPORT_PARTS,
    ModelConfig,
    architecture_of,
    build_model,
    default_config,
)
from ..models.bisenetv2 import BiSeNetV2Config
from .arguments import add_size, complete, int_in_range

PARTS = tuple(REPORT_PARTS["bisenetv2"])
DEFAULT_HEIGHT, DEFAULT_WIDTH = DEFAULT_INPUT_SIZE  # the paper's Cityscapes speed resolution, 1024 x 512


def count_parameters(model: nn.Module) -> int:
    """Every parameter element (batch-norm running statistics are buffers, not parameters)."""
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    return output.numel() * module.in_features  # nn.Linear


def count_macs(model: nn.Module, height: int, width: int, per_module: bool = False):
    """Multiply-accumulates of one forward pass of a 1x3xHxW input (eval mode, batch 1).

    The pass runs on a copy of the model on PyTorch's "meta" device: shapes are propagated but
    nothing is computed, so counting a full-resolution BiSeNetV2-L takes milliseconds.
    Returns the total, or with ``per_module`` a dict {module name: MACs} of every conv/linear layer.
    """
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    counts: dict[str, int] = {}
    model = copy.deepcopy(model).to("meta").eval()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, _inputs, output, name=name):
                counts[name] = counts.get(name, 0) + _layer_macs(mod, output)
            module.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, height, width, device="meta"))
    return counts if per_module else sum(counts.values())


def _in_part(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def model_report(config: ModelConfig, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH) -> dict[str, Any]:
    """Parameters and MACs of the deploy model (no auxiliary heads) for one input size, by part
    (``architectures.REPORT_PARTS``)."""
    config = config.replace(aux_heads=False)
    architecture = architecture_of(config)
    with torch.device("meta"):  # no weights needed to count
        model = build_model(config).eval()
    per_module = count_macs(model, height, width, per_module=True)
    parts = {}
    for part, prefixes in REPORT_PARTS[architecture].items():
        parts[part] = {
            "params": sum(p.numel() for name, p in model.named_parameters() if _in_part(name, prefixes)),
            "macs": sum(m for name, m in per_module.items() if _in_part(name, prefixes)),
        }
    total_macs = sum(per_module.values())
    if (sum(p["macs"] for p in parts.values()) != total_macs  # every conv and parameter belongs to one part
            or sum(p["params"] for p in parts.values()) != count_parameters(model)):
        raise AssertionError(f"a layer outside the parts {list(parts)} was counted")
    return {
        "architecture": architecture,
        "config": config.to_dict(),
        "input": {"height": height, "width": width},
        "params": count_parameters(model),
        "macs": total_macs,
        "parts": parts,
        "counted": "multiply-accumulates of Conv2d/Linear layers; BN, ReLU, pooling, interpolation, "
                   "sigmoid, products and sums not counted",
    }


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table."""
    cfg, size = report["config"], report["input"]
    if report.get("architecture", "bisenetv2") == "bisenetv2":
        title = (f"BiSeNetV2 (alpha {cfg['width_multiplier']:g}, d {cfg['depth_multiplier']:g}, "
                 f"{cfg['num_classes']} classes, C_t {cfg['head_channels']}, no booster heads)")
    else:
        title = (f"BiSeNetV1 (ResNet-18, {cfg['num_classes']} classes, head {cfg['head_channels']}, "
                 f"no auxiliary heads; context = ResNet-18, arms = ARMs + global context + refine convs)")
    lines = [
        f"{title} at {size['width']}x{size['height']} (WxH)",
        f"{'part':<10}{'parameters':>14}{'GMACs':>12}",
    ]
    for part, values in report["parts"].items():
        lines.append(f"{part:<10}{values['params']:>14,}{values['macs'] / 1e9:>12.3f}")
    lines.append(f"{'total':<10}{report['params']:>14,}{report['macs'] / 1e9:>12.3f}")
    lines.append(f"= {report['params'] / 1e6:.2f} M parameters, {report['macs'] / 1e9:.2f} GMACs "
                 f"({report['macs']:,} multiply-accumulates; the paper's 'FLOPs' count MACs).")
    lines.append("Counted: Conv2d/Linear multiply-accumulates only; batch norm, ReLU, pooling, "
                 "interpolation and sigmoid are not counted.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bisenetv2 report`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", help="checkpoint path or known weights name: report the network it holds")
    source.add_argument("--variant", choices=("default", "large"), default="default",
                        help="BiSeNetV2 (alpha 1, d 1) or BiSeNetV2-L (alpha 2, d 3) (default: default)")
    parser.add_argument("--model", choices=tuple(ARCHITECTURES), default="bisenetv2",
                        help="network without --weights: bisenetv2 (default) or bisenetv1 (ResNet-18)")
    parser.add_argument("--num-classes", type=int_in_range(1, 256), default=None, help="classes (default: 19, or the checkpoint's)")
    parser.add_argument("--head-channels", type=int_in_range(1, 65536), default=None,
                        help="C_t of the segmentation head (default: 1024, or the checkpoint's)")
    add_size(parser, "--input-size", "input_size", old_sides=("--height", "--width"),
             help=f"network input size (default: the checkpoint's training resolution, else {DEFAULT_HEIGHT}x{DEFAULT_WIDTH})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """`bisenetv2 report`: prints the report; returns the exit status."""
    resolution = None
    if args.weights:
        from ..weights.known_weights import load_model  # only needed with --weights

        model, info = load_model(args.weights)
        config, resolution = model.config, info.train_resolution
    else:
        if args.model != "bisenetv2" and args.variant != "default":
            raise SystemExit("--variant applies to bisenetv2 only")
        config = BiSeNetV2Config.large() if args.variant == "large" else default_config(args.model)
    changes = {}
    if args.num_classes is not None:
        changes["num_classes"] = args.num_classes
    if args.head_channels is not None:
        changes["head_channels"] = args.head_channels
    config = config.replace(**changes)
    default = tuple(resolution or DEFAULT_INPUT_SIZE)
    # one old --height/--width flag alone keeps the other side of the default, as it always did
    height, width = complete(args.input_size, default, "--input-size") or default
    report = model_report(config, height, width)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
