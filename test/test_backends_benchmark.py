"""The benchmark command runs end to end on the tiny checkpoint and reports what it promises."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import AVX2_FLAGS, AVX512_BF16_FLAGS

from bisenetv2_ros.benchmarks import backends_benchmark as benchmark
from bisenetv2_ros.inference import cpu as cpu_module
from bisenetv2_ros.inference.backends import openvino_importable


def parse(argv):
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    return parser.parse_args(argv)


def test_benchmark_json_report(tiny_weights, capsys):
    args = parse(["--weights", str(tiny_weights), "--backend", "onnxruntime", "--device", "cpu",
                  "--frame-size", "90x120", "--batch", "2", "--iters", "3", "--warmup", "1",
                  "--memory-frames", "4", "--json"])
    assert benchmark.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "onnxruntime" and report["batch"] == 2
    assert report["frame_hxw"] == [90, 120] and report["model_input_hxw"] == [64, 96]
    for part in ("model_only", "end_to_end"):
        assert 0 < report[part]["p50_ms"] <= report[part]["p90_ms"] <= report[part]["p99_ms"]
    assert report["rss_over_frames"]["frames"] == 4 and report["rss_mib"]["peak"] > 0
    cpu = report["machine"]["cpu"]
    seen = cpu_module.cpu_info()  # what the package sees (the host's, or a simulated family's)
    assert cpu["model"] == seen.model and cpu["isa_flags"] == seen.reported_flags
    assert cpu["torch_capability"] == seen.torch_capability


def test_benchmark_times_confidence_beside_labels(tiny_weights, capsys):
    args = parse(["--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                  "--frame-size", "48x64", "--iters", "3", "--warmup", "1", "--confidence", "--json"])
    assert benchmark.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    with_confidence = report["end_to_end_with_confidence"]
    assert 0 < with_confidence["p50_ms"] <= with_confidence["p99_ms"]
    assert report["confidence_cost"] == pytest.approx(with_confidence["p50_ms"] / report["end_to_end"]["p50_ms"] - 1,
                                                      abs=1e-3)
    assert isinstance(report["confidence_paired_ms"], float)
    args = parse(["--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu", "--precision", "fp32",
                  "--frame-size", "48x64", "--iters", "2", "--warmup", "0", "--confidence"])
    assert benchmark.run(args) == 0
    assert "confidence costs" in capsys.readouterr().out


def test_benchmark_compare_reports_ratios(tiny_weights, capsys, tmp_path, simulated_cpu):
    simulated_cpu(AVX2_FLAGS, "Simulated AVX2 CPU")  # no native bf16: the bf16 row says why it did not run
    args = parse(["--weights", str(tiny_weights), "--compare", "--compile", "off", "--iters", "2", "--warmup", "0",
                  "--engine-cache", str(tmp_path)])
    assert benchmark.run(args) == 0
    out = capsys.readouterr().out
    assert "torch eager fp32" in out and "torch off" in out and "onnxruntime" in out and "x eager" in out
    assert "onnxruntime int8" in out and "x ORT" in out  # int8 runs on every CPU
    assert "int8 calibration: 4 random frames (no calibration folder known: timing only)" in out
    assert "not run: torch bf16 (no native bf16 on this CPU" in out
    assert "CPU: Simulated AVX2 CPU; instruction sets: sse4_2 avx avx2 fma;" in out


def test_sizes_are_height_by_width():
    args = parse(["--input-size", "256x512", "--frame-size", "720x1280"])
    assert args.input_size == (256, 512) and args.frame_size == (720, 1280)
    for bad in (["--frame-size", "720"], ["--input-size", "0x512"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_old_size_flags_still_work_with_a_deprecation_line(capsys):
    # --source-size was WIDTHxHEIGHT: converted, not reinterpreted; --height/--width fill --input-size
    args = parse(["--source-size", "1280x720", "--height", "64", "--width", "128"])
    assert args.frame_size == (720, 1280) and args.input_size == (64, 128)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{parse_prog()}: warning: --source-size 1280x720 (WIDTHxHEIGHT) is deprecated; use --frame-size 720x1280",
        f"{parse_prog()}: warning: --height is deprecated; use --input-size HxW",
        f"{parse_prog()}: warning: --width is deprecated; use --input-size HxW",
    ]
    with pytest.raises(SystemExit, match="give both --height and --width"):
        benchmark.run(parse(["--height", "64", "--iters", "1"]))


def parse_prog() -> str:
    return argparse.ArgumentParser().prog


@pytest.mark.parametrize("argv,message", [
    (["--iters", "0"], "argument --iters: expected a positive integer, got '0'"),
    (["--batch", "-1"], "argument --batch: expected a positive integer, got '-1'"),
])
def test_bad_counts_are_one_parser_error_line(argv, message, capsys):
    from bisenetv2_ros.cli import commands as cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["benchmark", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"bisenetv2 benchmark: error: {message}"
    assert "Traceback" not in err


def test_benchmark_random_weights_is_the_default_config(capsys):
    args = parse(["--weights", "random", "--backend", "torch", "--device", "cpu", "--input-size", "64x128",
                  "--iters", "1", "--warmup", "0", "--json"])
    assert benchmark.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert "random default-config model (C_t=1024)" in report["weights"]
    assert report["model_input_hxw"] == [64, 128] and report["end_to_end"]["p50_ms"] > 0


def test_compare_puts_both_architectures_side_by_side(capsys, simulated_cpu):
    # A CPU with native bf16: the bf16 rows join (on a host without it torch runs them emulated, slowly).
    simulated_cpu(AVX512_BF16_FLAGS)
    args = parse(["--weights", "random", "--architectures", "bisenetv1,bisenetv2", "--compare", "--compile", "off",
                  "--input-size", "64x96", "--iters", "2", "--warmup", "0", "--json"])
    assert benchmark.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"] == ["bisenetv1", "bisenetv2"]
    float_variants = ("torch eager fp32", "torch off", "onnxruntime")
    openvino = ("openvino", "openvino int8", "openvino bf16")
    assert set(report["variants"]) == {f"{a} {v}" for a in ("bisenetv1", "bisenetv2")
                                       for v in (*float_variants, "onnxruntime int8", "torch bf16",
                                                 *(openvino if openvino_importable() else ()))}
    assert report["not_run"] == ({} if openvino_importable() else
                                 {f"{a} {v}": "openvino is not installed (pip install openvino)"
                                  for a in ("bisenetv1", "bisenetv2") for v in openvino})
    for name, values in report["variants"].items():
        assert values["p50_ms"] > 0, name
        # fp32 only: int8 and bf16 labels of a random network differ where class scores are nearly tied
        if name.endswith(float_variants):
            assert values["labels_equal_to_eager"] >= 0.995, name
    for architecture in ("bisenetv1", "bisenetv2"):  # each ratio is against the same network's variants
        assert report["variants"][f"{architecture} torch eager fp32"]["speedup_vs_eager"] == 1.0
        assert report["variants"][f"{architecture} onnxruntime"]["speedup_vs_onnxruntime_fp32"] == 1.0
    assert set(report["int8_calibration"]) == {"bisenetv1 onnxruntime int8", "bisenetv2 onnxruntime int8"}
    assert "random default-config bisenetv1, bisenetv2" in report["weights"]


def test_architectures_option_errors():
    with pytest.raises(SystemExit):
        parse(["--architectures", "bisenetv3"])
    with pytest.raises(SystemExit, match="add --compare"):
        benchmark.run(parse(["--weights", "random", "--architectures", "bisenetv1,bisenetv2"]))
    with pytest.raises(SystemExit, match="use it with --weights random"):
        benchmark.run(parse(["--weights", "x.pt", "--architectures", "bisenetv1"]))
