"""What this machine's CPU can do, probed once and cached, and the CPU defaults that follow from it.

The project runs on different CPUs: an Intel Xeon with AMX (bf16 and int8 tile units), an AMD
EPYC (Zen 5) with AVX512-BF16 and VNNI but no AMX, and laptops with AVX2 only. bf16 is fast only
where the CPU has bf16 dot products (AMX-BF16 or AVX512-BF16); elsewhere torch emulates it and
a bf16 matmul is slower than float32. So the dtype is chosen from the flags *and* a sub-second
measurement of the same matmul in both dtypes, and the result is cached in
`~/.cache/smolsight/cpu.json` (under `$XDG_CACHE_HOME` when set), keyed by the CPU model, its
flags and the torch version: a new CPU or a new torch is probed again, nothing else is.

The rule (`cpu_defaults`; docs/performance.md has the measurements):

| CPU | dtype | int8 decode steps |
|---|---|---|
| AMX-BF16, or AVX512-BF16 without AMX, and bf16 measured ≥ 1.2x float32 | bfloat16 | on |
| bf16 flags but bf16 measured slower (a hypervisor hiding the units) | float32 | on |
| AVX2 without bf16 (emulated bf16 is slow) | float32 | on |
| no AVX2 (torch's int8 kernels need it) | float32 | off |

A bf16 engine attends in bf16 or float32, whichever the probe measured faster, once for decode
steps and once for prefill: torch's CPU flash kernel in bf16 is fast where oneDNN runs it on AMX
and can be far slower elsewhere. One query row over ~1k bf16 keys took 75 µs a layer in bf16 and
155 µs as float32 over a float32 copy of the keys on the AMX Xeon, but 561 µs against 89 µs on the
Zen 5 EPYC (`leandecode`; docs/performance.md). Prefill (many query rows, causal) is measured
on its own shape, and its choice also holds for the vision tower's attention when torch runs it
(`loading.FLOAT32_SDPA`).

int8 decode is on wherever torch's x86 int8 kernels run, bf16 or not: a decode step is one row
per answer, bound by reading the weights, and int8 reads half of bf16's bytes and a quarter of
float32's. Prefill keeps the model's own weights on every CPU (`fastpaths.Int8DecodeLinear`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# The flags that decide anything here, strongest first.
FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
BF16_MIN_SPEEDUP = 1.2  # bf16 must beat float32 by this much on the probe's matmul to be the default
MATMUL = (256, 576, 1536)  # rows x in x out: a 256-token slice of the 256M decoder's MLP
ATTENTION = (9, 3, 1024, 64)  # query heads, key/value heads, keys, head size: a 256M decode step's attention
PREFILL_ATTENTION = (9, 3, 256, 64)  # query heads, key/value heads, tokens (causal), head size: a slice of a 256M prefill
ROUNDS = 12
FORMAT = 3  # bump when what the probe measures changes: older cache entries are probed again


@dataclass(frozen=True)
class CpuProbe:
    """One CPU as probed: its model name, which of `FLAGS` it has, and the measured bf16 speed-ups."""

    model: str
    flags: tuple[str, ...]
    bf16_speedup: float | None  # float32 time / bf16 time on the probe's matmul; None: not measured
    torch: str
    bf16_attention_speedup: float | None = None  # the same for a decode step's attention (`measure_bf16`)
    bf16_prefill_attention_speedup: float | None = None  # and for a prefill's causal attention

    @property
    def kind(self) -> str:
        """amx, avx512_bf16, avx2 or basic: the row of the module's table the flags put it in."""
        if "amx_bf16" in self.flags:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512_bf16"
        return "avx2" if "avx2" in self.flags else "basic"

    def to_dict(self) -> dict:
        return {**asdict(self), "flags": list(self.flags), "kind": self.kind}


@dataclass(frozen=True)
class CpuDefaults:
    dtype: str  # bfloat16 or float32
    int8_decode: bool
    why: str
    decode_attention: str = "float32"  # the dtype a bf16 engine's decode steps attend in
    prefill_attention: str = "float32"  # the dtype a bf16 engine's prefill (and torch vision) attends in


def cpu_defaults(probe: CpuProbe) -> CpuDefaults:
    """The dtype and int8 choice for `probe` (the table in the module's docstring)."""
    int8 = "avx2" in probe.flags
    int8_why = "int8 decode on (AVX2 int8 kernels)" if int8 else "int8 decode off (no AVX2 for torch's int8 kernels)"
    if probe.kind in ("amx", "avx512_bf16"):
        measured = probe.bf16_speedup
        if measured is None or measured >= BF16_MIN_SPEEDUP:
            speed = "" if measured is None else f", measured {measured:.1f}x float32"
            decode, prefill = (faster_dtype(x) for x in (probe.bf16_attention_speedup, probe.bf16_prefill_attention_speedup))
            why = f"{probe.kind}: native bf16{speed}; {int8_why}; attention in {prefill} for prefill, {decode} for decode"
            return CpuDefaults("bfloat16", int8, why, decode, prefill)
        return CpuDefaults("float32", int8, f"{probe.kind} flags, but bf16 measured {measured:.2f}x float32; {int8_why}")
    return CpuDefaults("float32", int8, f"{probe.kind}: no bf16 dot products (bf16 would be emulated); {int8_why}")


def faster_dtype(bf16_speedup: float | None) -> str:
    """bfloat16 where it measured faster than float32; float32 where it did not or was not measured."""
    return "bfloat16" if (bf16_speedup or 0) > 1 else "float32"


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...], str]:
    """(model name, the `FLAGS` present, the whole flag line) from /proc/cpuinfo's first CPU."""
    model = flags = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "flags" and flags is None:
            flags = value
    model, flags = model or platform.processor() or "unknown", flags or ""
    present = set(flags.split())
    return model, tuple(f for f in FLAGS if f in present), flags


def measure_bf16() -> tuple[float, float, float]:
    """(matmul, decode attention, prefill attention) speed-ups of bf16 over float32: a prefill-sized
    matmul in each dtype; a decode step's attention in bf16 against float32 over a float32 copy of
    the bf16 keys and values (what `leandecode` would do instead); a causal prefill's attention in
    bf16 against float32 over copies of its bf16 inputs (what `loading.FLOAT32_SDPA` does). About
    a tenth of a second."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    rows, inner, out = MATMUL
    pairs = {dtype: (torch.randn(rows, inner, generator=generator).to(dtype), torch.randn(inner, out, generator=generator).to(dtype))
             for dtype in (torch.float32, torch.bfloat16)}  # fmt: skip
    matmul = faster_of(lambda: torch.matmul(*pairs[torch.bfloat16]), lambda: torch.matmul(*pairs[torch.float32]))
    heads, kv_heads, keys, size = ATTENTION
    query = torch.randn(1, heads, 1, size, generator=generator)
    cache = [torch.randn(1, kv_heads, keys, size, generator=generator).bfloat16() for _ in range(2)]
    attention = faster_of(
        lambda: F.scaled_dot_product_attention(query.bfloat16(), *cache, enable_gqa=True),
        lambda: F.scaled_dot_product_attention(query, *(part.float() for part in cache), enable_gqa=True),
    )
    heads, kv_heads, tokens, size = PREFILL_ATTENTION
    inputs = [torch.randn(1, count, tokens, size, generator=generator).bfloat16() for count in (heads, kv_heads, kv_heads)]
    prefill = faster_of(
        lambda: F.scaled_dot_product_attention(*inputs, is_causal=True, enable_gqa=True),
        lambda: F.scaled_dot_product_attention(*(part.float() for part in inputs), is_causal=True, enable_gqa=True).bfloat16(),
    )
    return matmul, attention, prefill


def faster_of(bf16, float32) -> float:
    """float32's time / bf16's, best of `ROUNDS` interleaved rounds (the best is the least disturbed
    by other processes) after a warm-up round."""
    best = {bf16: float("inf"), float32: float("inf")}
    for round_ in range(ROUNDS + 1):
        for function in best:
            start = time.perf_counter()
            function()
            if round_:
                best[function] = min(best[function], time.perf_counter() - start)
    return round(best[float32] / best[bf16], 2)


def cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smolsight" / "cpu.json"


def probe_cpu(cpuinfo: str | None = None, cache: Path | None = None, measure=measure_bf16) -> CpuProbe:
    """This CPU's probe: from the cache when this CPU model, flag line and torch version were
    probed before, else measured now (only where the flags claim bf16) and written to the cache."""
    model, flags, flag_line = parse_cpuinfo(read_cpuinfo() if cpuinfo is None else cpuinfo)
    cache = cache or cache_path()
    key = hashlib.sha1(f"{FORMAT}\n{model}\n{flag_line}\n{torch.__version__}".encode()).hexdigest()[:16]
    entries = read_cache(cache)
    if key in entries:
        return CpuProbe(**{**entries[key], "flags": tuple(entries[key]["flags"])})
    native_bf16 = "amx_bf16" in flags or "avx512_bf16" in flags
    matmul, attention, prefill = measure() if native_bf16 else (None, None, None)
    probe = CpuProbe(model, flags, matmul, torch.__version__, attention, prefill)
    write_cache(cache, {**entries, key: {k: v for k, v in probe.to_dict().items() if k != "kind"}})
    return probe


def read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, entries: dict) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file; a cache
    that cannot be written (a read-only home) only means probing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entries, indent=1) + "\n")
        partial.replace(path)
    except OSError:
        pass


@functools.cache
def this_cpu() -> CpuProbe:
    """This machine's probe, once per process."""
    return probe_cpu()


def defaults() -> CpuDefaults:
    """This machine's CPU defaults."""
    return cpu_defaults(this_cpu())
