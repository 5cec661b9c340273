"""The CPU's arithmetic limit (inference/arithmetic_limit.py): MACs per cycle from the flags of each
CPU family (simulated, never the host's), the clock from /proc/cpuinfo text, and the ratio."""

from __future__ import annotations

import pytest
from conftest import AMX_FLAGS, AVX2_FLAGS, AVX512_BF16_FLAGS

from bisenetv2_ros.inference import arithmetic_limit
from bisenetv2_ros.inference.arithmetic_limit import limit_report, macs_per_cycle, parse_clock_ghz


@pytest.mark.parametrize("flags, precision, expected", [
    (AVX2_FLAGS, "fp32", 16),             # 8 fp32 lanes x 2 FMA pipes
    (AVX2_FLAGS, "int8", 64 / 3),          # vpmaddubsw + vpmaddwd + vpaddd: 4 MACs per lane in 3 instructions
    (AVX2_FLAGS, "bf16", 16),              # no native bf16: the fp32 rate
    (AVX512_BF16_FLAGS, "fp32", 32),
    (AVX512_BF16_FLAGS, "int8", 128),      # vpdpbusd: 4 MACs per 32-bit lane
    (AVX512_BF16_FLAGS, "bf16", 64),       # vdpbf16ps: 2 per lane
    (AMX_FLAGS, "int8", 1024),
    (AMX_FLAGS, "bf16", 512),
    (AMX_FLAGS, "fp32", 32),               # AMX has no fp32 tiles
    (AVX2_FLAGS | {"avx_vnni"}, "int8", 64),  # Alder Lake / Zen 5 client: 256-bit VNNI
    (frozenset({"asimd", "asimddp"}), "int8", 32),
    (frozenset({"asimd"}), "fp32", 8),
    (frozenset(), "fp32", 1),
])
def test_macs_per_cycle_by_cpu_family(flags, precision, expected):
    assert macs_per_cycle(flags, precision).macs_per_cycle == pytest.approx(expected)


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="no CPU arithmetic limit for precision 'fp16'"):
        macs_per_cycle(AVX2_FLAGS, "fp16")


def test_clock_from_cpuinfo_and_from_the_max_frequency_file():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.130\nflags\t: avx2\n"
    assert parse_clock_ghz(text) == pytest.approx(2.59613)
    assert parse_clock_ghz(text, "3500000\n") == pytest.approx(3.5)  # kHz, preferred: not throttled
    assert parse_clock_ghz("model name: x\n") is None and parse_clock_ghz("cpu MHz : ?\n", "0") is None


@pytest.mark.parametrize("flags, precision, limit_ms", [
    # 10 GMACs on 2 cores at 2.5 GHz: 10e9 / (2 x 2.5e9 x MACs per cycle) seconds
    (AVX2_FLAGS, "fp32", 125.0),
    (AVX2_FLAGS, "int8", 93.75),
    (AVX512_BF16_FLAGS, "int8", 15.625),
    (AMX_FLAGS, "bf16", 3.90625),
])
def test_limit_and_ratio_follow_the_simulated_cpu(simulated_cpu, flags, precision, limit_ms):
    simulated_cpu(flags)  # the report reads the (simulated) CPU's flags when none are given
    report = limit_report(10_000_000_000, precision, cores=2, clock=2.5)
    assert report.limit_ms == pytest.approx(limit_ms)
    assert report.ratio(2 * limit_ms) == pytest.approx(2.0)
    summary = report.to_dict(measured_ms=3 * limit_ms)
    assert summary["end_to_end_over_limit"] == pytest.approx(3.0) and summary["network_gmacs"] == 10.0
    assert summary["limit_ms"] == pytest.approx(limit_ms, abs=1e-3)


def test_no_limit_without_a_clock_or_for_a_gpu_precision(monkeypatch):
    monkeypatch.setattr(arithmetic_limit, "clock_ghz", lambda: None)
    assert limit_report(1e9, "fp32", AVX2_FLAGS, cores=2) is None
    assert limit_report(1e9, "fp16", AVX2_FLAGS, cores=2, clock=3.0) is None
