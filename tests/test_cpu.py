"""CPU defaults from the probed capability (engine.cpu): the documented choice for each kind of
CPU, and a probe that is measured once and then read from its cache."""

from __future__ import annotations

import json

import pytest
import torch

from smolsight.engine import cpu
from smolsight.engine.cpu import CpuProbe, cpu_defaults, probe_cpu

XEON_AMX = "fpu sse sse2 avx avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
EPYC_ZEN5 = "fpu sse sse2 avx avx2 avx512f avx512_vnni avx512_bf16"  # AVX512-BF16 and VNNI, no AMX
LAPTOP_AVX2 = "fpu sse sse2 avx avx2 fma"
OLD = "fpu sse sse2 sse4_2"


def cpuinfo(model: str, flags: str) -> str:
    return f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: {model}\nflags\t\t: {flags}\n"


@pytest.mark.parametrize("flags, speedups, kind, dtype, int8, decode, prefill", [
    (XEON_AMX, (6.1, 2.1, 1.5), "amx", "bfloat16", True, "bfloat16", "bfloat16"),
    (EPYC_ZEN5, (2.0, 0.16, 0.4), "avx512_bf16", "bfloat16", True, "float32", "float32"),  # bf16 matmuls fast, bf16 attention slow
    (EPYC_ZEN5, (2.0, 0.16, 1.3), "avx512_bf16", "bfloat16", True, "float32", "bfloat16"),  # decode and prefill chosen apart
    (EPYC_ZEN5, (0.6, 0.5, 0.5), "avx512_bf16", "float32", True, "float32", "float32"),  # the flags claim bf16, the measurement says no
    (LAPTOP_AVX2, None, "avx2", "float32", True, "float32", "float32"),
    (OLD, None, "basic", "float32", False, "float32", "float32"),
])  # fmt: skip
def test_each_kind_of_cpu_gets_the_documented_defaults(tmp_path, flags, speedups, kind, dtype, int8, decode, prefill):
    probe = probe_cpu(cpuinfo("Some CPU", flags), tmp_path / "cpu.json", measure=lambda: speedups)
    chosen = cpu_defaults(probe)
    assert (probe.kind, chosen.dtype, chosen.int8_decode, chosen.decode_attention, chosen.prefill_attention) == (kind, dtype, int8, decode, prefill)
    assert chosen.why.startswith(kind)


def test_the_probe_is_measured_once_then_read_from_the_cache(tmp_path):
    measured = []

    def measure() -> tuple[float, float, float]:
        measured.append(1)
        return 3.5, 1.5, 1.2

    path = tmp_path / "smolsight" / "cpu.json"
    first = probe_cpu(cpuinfo("Xeon A", XEON_AMX), path, measure)
    again = probe_cpu(cpuinfo("Xeon A", XEON_AMX), path, measure)
    assert first == again == CpuProbe("Xeon A", ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2"), 3.5, torch.__version__, 1.5, 1.2)
    assert len(measured) == 1 and len(json.loads(path.read_text())) == 1
    probe_cpu(cpuinfo("EPYC B", EPYC_ZEN5), path, measure)  # another CPU model (or flags, or torch): its own entry
    probe_cpu(cpuinfo("Laptop C", LAPTOP_AVX2), path, measure)  # no bf16 flags: nothing to measure
    assert len(measured) == 2 and len(json.loads(path.read_text())) == 3


def test_a_corrupt_cache_is_probed_again_and_rewritten(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text("{not json")
    probe = probe_cpu(cpuinfo("Xeon A", XEON_AMX), path, measure=lambda: (2.5, 0.5, 0.5))
    assert probe.bf16_speedup == 2.5 and len(json.loads(path.read_text())) == 1


def test_this_machine_is_probed_with_a_real_measurement(tmp_path):
    probe = probe_cpu(cache=tmp_path / "cpu.json")
    assert probe.model and probe.torch == torch.__version__
    if probe.kind in ("amx", "avx512_bf16"):
        assert probe.bf16_speedup > 0 and probe.bf16_attention_speedup > 0 and probe.bf16_prefill_attention_speedup > 0
    assert cpu_defaults(probe).dtype in ("bfloat16", "float32")


def test_engine_defaults_follow_the_probe(monkeypatch, tmp_path):
    from smolsight.engine.fastpaths import default_fast_paths
    from smolsight.engine.loading import choose_runtime

    monkeypatch.setattr(cpu, "this_cpu", lambda: probe_cpu(cpuinfo("Laptop", LAPTOP_AVX2), tmp_path / "cpu.json"))
    assert choose_runtime("cpu", None, None)[1] == "float32"
    monkeypatch.setattr(cpu, "this_cpu", lambda: CpuProbe("Xeon", ("amx_bf16", "avx2"), 5.0, torch.__version__, 2.0, 1.5))
    assert choose_runtime("cpu", None, None)[1:] == ("bfloat16", "sdpa") and default_fast_paths("cpu").int8
    monkeypatch.setattr(cpu, "this_cpu", lambda: CpuProbe("EPYC", ("avx512_bf16", "avx2"), 3.0, torch.__version__, 0.2, 0.5))
    assert choose_runtime("cpu", None, None)[1:] == ("bfloat16", "sdpa_float32")  # bf16 weights, float32 attention
    assert choose_runtime("cpu", "float32", None)[2] == "sdpa" and choose_runtime("cpu", None, "eager")[2] == "eager"
    monkeypatch.setattr(cpu, "this_cpu", lambda: CpuProbe("Old", (), None, torch.__version__))
    assert not default_fast_paths("cpu").int8
