"""What a CPU's arithmetic allows: multiply-accumulates per second for a precision, from its flags.

``peak_macs_per_s = cores x clock x MACs per cycle per core``, where MACs per cycle come from the
widest instructions the flags name for that precision (``macs_per_cycle``). It is the bound no
implementation can beat, so "end to end is 2.1x the limit" means the same on an AVX2 laptop, an
AVX-512 VNNI/BF16 server and an AMX Xeon, while frames/s alone do not.

Assumptions, all upper bounds (so a ratio is never flattered):
- two vector multiply-add pipes per core at the full vector width (true of Zen 3, Skylake-SP Gold /
  Platinum, Ice Lake-SP, Sapphire Rapids; Zen 4 executes 512-bit instructions on 256-bit halves, so its
  real AVX-512 limit is half the one computed here);
- fp32: one FMA = one MAC per 32-bit lane; bf16 (AVX512_BF16 ``vdpbf16ps``): two MACs per 32-bit lane;
  int8 with a dot product (VNNI ``vpdpbusd``, ARM ``sdot``): four per 32-bit lane; int8 on plain AVX2
  (``vpmaddubsw`` + ``vpmaddwd`` + add: three instructions for four MACs per lane): 4/3 per lane;
- AMX (one tile unit per core): 1024 int8 or 512 bf16 MACs per cycle (Intel's 2048 / 1024 "ops",
  an op being half a MAC);
- the clock is the one the OS reports (``cpuinfo_max_freq`` where the kernel exposes it, else the
  ``cpu MHz`` of /proc/cpuinfo, which in a VM is the host's nominal clock): turbo is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import cpu  # cpu.cpu_info() at call time: tests simulate other CPUs by replacing it

FMA_PIPES = 2
MAX_FREQUENCY_FILE = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz
AMX_MACS_PER_CYCLE = {"int8": 1024, "bf16": 512}


def vector_bits(flags: frozenset[str] | set[str]) -> int:
    """The widest SIMD registers the flags name (x86 AVX-512 / AVX / SSE, ARM NEON); 32: none, scalar."""
    if "avx512f" in flags:
        return 512
    if "avx2" in flags or "avx" in flags:
        return 256
    if flags & {"sse2", "asimd", "neon"}:
        return 128
    return 32


@dataclass(frozen=True)
class ArithmeticPeak:
    """Per-core MACs per cycle for one precision, and the instructions that give them."""

    precision: str
    macs_per_cycle: float
    instructions: str

    def macs_per_s(self, cores: int, clock_ghz: float) -> float:
        return self.macs_per_cycle * cores * clock_ghz * 1e9


def macs_per_cycle(flags: frozenset[str] | set[str], precision: str) -> ArithmeticPeak:
    """Per-core MACs per cycle this CPU's instructions allow for ``precision`` (fp32, bf16, int8).

    A precision the CPU has no native instruction for runs at the rate it is emulated with: bf16
    without AVX512_BF16 / AMX at the fp32 rate (it is converted to float), int8 without a dot product
    through AVX2's 16-bit multiply-adds, or at the fp32 rate where not even that exists.
    """
    flags = frozenset(flags)
    bits = vector_bits(flags)
    lanes = bits // 32
    fp32 = ArithmeticPeak("fp32", FMA_PIPES * lanes if bits > 32 else 1,
                          f"{bits}-bit FMA x {FMA_PIPES}" if bits > 32 else "scalar")
    if precision == "fp32":
        return fp32
    if precision == "bf16":
        if "amx_bf16" in flags:
            return ArithmeticPeak("bf16", AMX_MACS_PER_CYCLE["bf16"], "AMX bf16 tiles")
        if "avx512_bf16" in flags:
            return ArithmeticPeak("bf16", FMA_PIPES * 16 * 2, f"512-bit vdpbf16ps x {FMA_PIPES}")
        return ArithmeticPeak("bf16", fp32.macs_per_cycle, fp32.instructions + " (no native bf16: converted to fp32)")
    if precision == "int8":
        if "amx_int8" in flags:
            return ArithmeticPeak("int8", AMX_MACS_PER_CYCLE["int8"], "AMX int8 tiles")
        if "avx512_vnni" in flags and bits == 512:
            return ArithmeticPeak("int8", FMA_PIPES * 16 * 4, f"512-bit vpdpbusd x {FMA_PIPES}")
        if "avx_vnni" in flags:
            return ArithmeticPeak("int8", FMA_PIPES * 8 * 4, f"256-bit vpdpbusd x {FMA_PIPES}")
        if "asimddp" in flags:
            return ArithmeticPeak("int8", FMA_PIPES * 4 * 4, f"128-bit sdot x {FMA_PIPES}")
        if "avx2" in flags:
            return ArithmeticPeak("int8", FMA_PIPES * 8 * 4 / 3, f"256-bit vpmaddubsw+vpmaddwd+vpaddd x {FMA_PIPES}")
        return ArithmeticPeak("int8", fp32.macs_per_cycle, fp32.instructions + " (no int8 multiply-add)")
    raise ValueError(f"no CPU arithmetic limit for precision {precision!r}; expected fp32, bf16 or int8")


def parse_clock_ghz(cpuinfo_text: str, max_frequency_khz: str | None = None) -> float | None:
    """The clock in GHz: ``cpuinfo_max_freq`` (kHz) when given, else the first ``cpu MHz`` line."""
    if max_frequency_khz and max_frequency_khz.strip().isdigit() and int(max_frequency_khz) > 0:
        return int(max_frequency_khz) / 1e6
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            try:
                mhz = float(value)
            except ValueError:
                continue
            if mhz > 0:
                return mhz / 1e3
    return None


def clock_ghz() -> float | None:
    """This machine's clock (``parse_clock_ghz`` on its files), None where neither file tells."""
    def read(path: Path) -> str | None:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None

    return parse_clock_ghz(read(Path("/proc/cpuinfo")) or "", read(MAX_FREQUENCY_FILE))


@dataclass(frozen=True)
class LimitReport:
    """The network's MACs, the CPU's limit for the precision, and how far a measured time is from it."""

    precision: str
    macs: int
    cores: int
    clock_ghz: float
    peak: ArithmeticPeak

    @property
    def limit_ms(self) -> float:
        """The shortest time the arithmetic allows for ``macs`` on all cores."""
        return self.macs / self.peak.macs_per_s(self.cores, self.clock_ghz) * 1e3

    def ratio(self, measured_ms: float) -> float:
        return measured_ms / self.limit_ms

    def to_dict(self, measured_ms: float | None = None) -> dict:
        result = {"precision": self.precision, "network_gmacs": round(self.macs / 1e9, 3), "cores": self.cores,
                  "clock_ghz": round(self.clock_ghz, 3), "macs_per_cycle_per_core": round(self.peak.macs_per_cycle, 1),
                  "instructions": self.peak.instructions,
                  "peak_gmacs_per_s": round(self.peak.macs_per_s(self.cores, self.clock_ghz) / 1e9, 1),
                  "limit_ms": round(self.limit_ms, 3)}
        if measured_ms is not None:
            result["end_to_end_over_limit"] = round(self.ratio(measured_ms), 2)
        return result


def limit_report(macs: int, precision: str, flags: frozenset[str] | set[str] | None = None,
                 cores: int | None = None, clock: float | None = None) -> LimitReport | None:
    """The limit for ``macs`` at ``precision`` on this CPU (or the flags / cores / clock given); None
    where the clock is unknown (nothing to compute a limit from) or the precision has no CPU rate."""
    flags = cpu.cpu_info().flags if flags is None else frozenset(flags)
    clock = clock_ghz() if clock is None else clock
    if clock is None or precision not in ("fp32", "bf16", "int8"):
        return None
    return LimitReport(precision, int(macs), cores or cpu.cpu_cores(), clock, macs_per_cycle(flags, precision))
