"""Runtime speed-ups for the engine, each one selectable, and on by default only where it measured a win.

On CPU the seed's code path spends most of an answer on prefill (13 SigLIP tiles, then the
decoder over ~905 tokens) and the rest on decode steps, each of which reads every decoder weight
once. The fast paths change the one model and the engine's one decode loop; there is no second
inference path. docs/performance.md has the measurements behind every default.

- int8: decode steps go through int8 copies of the language model's Linear layers and LM head
  (torch's own dynamic quantisation, per output channel): a quarter of float32's bytes per token,
  and fbgemm's int8 kernels beat bf16 matrix-vector products on CPU. Prefill (compute-bound;
  dynamic int8 lost to bf16 there by 2.7x on the AMX machine) keeps the original weights. On by
  default wherever the CPU has AVX2 (engine.cpu has the per-CPU rule). CPU only.
- lean: decode steps through `leandecode.LeanDecodeStep` instead of transformers' generic forward:
  the same weights (fused QKV and gate/up; int8 when `int8` is on) and the same cache, without
  the per-step mask building, module dispatch and dtype round trips. Prefill stays transformers'.
- decode_threads: intra-op threads during decode steps. Each step is hundreds of tiny parallel
  regions; when other processes keep the cores busy, a second thread waiting for a busy core costs
  far more than it adds. 'auto' (the CPU default) decodes on one thread when other processes kept
  at least half a core busy since the last look (`CpuWatch`), else on all cores; prefill keeps them all.
- (the static cache and the compiled decode step of earlier versions are gone: continuous
  batching changes the batch's shape at every join and leave, and its slot cache is preallocated
  and written in place, which is what the static cache gave on CPU; see docs/performance.md.)
- threads: intra-op thread count for everything (None keeps torch's choice, one per core).
- vision: which backend computes image features (smolsight.engine.vision): torch, openvino,
  openvino-int8, or auto (the CPU default: OpenVINO when installed, converted once per weights).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from . import cpu
from ..errors import SmolsightError
from .int8 import int8_product, packed_int8

CACHE_BLOCK = 256
BUSY_CORES = 0.5  # other processes' use, in cores, above which decode steps run on one thread


@dataclass(frozen=True)
class FastPaths:
    """Which speed-ups an engine uses; all off by default here (`default_fast_paths` picks per device)."""

    int8: bool = False
    lean: bool = False
    threads: int | None = None
    decode_threads: int | str | None = None  # a count, or "auto"
    vision: str | None = None  # None: torch; see smolsight.engine.vision

    def names(self) -> list[str]:
        """The switches that are on, for logs and benchmark reports."""
        on = [f.name for f in fields(self) if f.type == "bool" and getattr(self, f.name)]
        counts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.type != "bool" and getattr(self, f.name)]
        return on + counts


def default_fast_paths(device: str) -> FastPaths:
    """What measured as a win on each kind of device (docs/performance.md); on CPU, int8 decode
    where the probed CPU runs torch's int8 kernels (engine.cpu)."""
    if device.startswith("cuda"):
        return FastPaths()
    return FastPaths(int8=cpu.defaults().int8_decode, lean=True, decode_threads="auto", vision="auto")


def parse_fast_paths(spec: str | None, device: str) -> FastPaths:
    """'default', 'none', or a comma list like 'int8,decode_threads=1' (each added to none, or
    to the device's defaults when the list starts with 'default': 'default,vision=torch').
    None reads $SMOLSIGHT_FAST, so the server and eval can be switched without flags."""
    spec = spec if spec is not None else os.environ.get("SMOLSIGHT_FAST")
    if spec is None or spec.strip() == "default":
        return default_fast_paths(device)
    items = [part.strip() for part in spec.split(",") if part.strip()]
    chosen = default_fast_paths(device) if items and items[0] == "default" else FastPaths()
    known = {f.name for f in fields(FastPaths)}
    for item in items[1:] if items and items[0] == "default" else items:
        if item == "none":
            continue
        name, _, value = item.partition("=")
        if name not in known:
            raise SmolsightError(f"unknown fast path {name!r}; use default, none, or some of {', '.join(sorted(known))}")
        if name == "decode_threads" and value == "auto":
            chosen = replace(chosen, decode_threads="auto")
        elif name == "vision":
            chosen = replace(chosen, vision=value or None)
        elif name in ("threads", "decode_threads"):
            if not value.isdigit() or int(value) < 1:
                raise SmolsightError(f"fast path {name} needs a positive count, e.g. {name}=2, not {item!r}")
            chosen = replace(chosen, **{name: int(value)})
        else:
            chosen = replace(chosen, **{name: True})
    return chosen


def validate(fast: FastPaths, device: str) -> None:
    if fast.int8 and not device.startswith("cpu"):
        raise SmolsightError("the int8 fast path is for CPUs (torch's dynamic quantisation has no GPU kernels)")


def apply(model: nn.Module, fast: FastPaths, device: str) -> None:
    """Change the loaded model in place as `fast` asks."""
    validate(fast, device)
    if fast.threads:
        torch.set_num_threads(fast.threads)
    if fast.int8 and not fast.lean:  # the lean step makes its own int8 copies, fused
        add_int8_decode(model)


class Int8DecodeLinear(nn.Module):
    """A Linear layer that keeps its original weights for prefill and an int8 copy for decode steps.

    A decode step is an input of one new token per row. Dynamic quantisation picks one activation
    scale per call, so each row goes through on its own: no row's values set another row's scale."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.full = linear
        self.packed = packed_int8(linear.weight, linear.bias)
        self.packed_numel = linear.weight.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[-2] != 1:
            return self.full(x)
        rows = x.float()
        out = int8_product(rows, self.packed) if len(rows) == 1 else torch.cat([int8_product(row, self.packed) for row in rows.split(1)])
        return out.to(x.dtype)

    def int8_bytes(self) -> int:
        """Memory of the int8 copy (held outside the module's parameters)."""
        return self.packed_numel


def add_int8_decode(model: nn.Module) -> int:
    """Give every Linear layer of the language model (and the LM head) an int8 copy for decode steps."""
    text_model = model.model.text_model
    targets = [(name, module) for name, module in text_model.named_modules() if isinstance(module, nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(text_model.get_submodule(parent_name) if parent_name else text_model, child, Int8DecodeLinear(module))
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = Int8DecodeLinear(model.lm_head)
        targets.append(("lm_head", model.lm_head))
    return len(targets)


class CpuWatch:
    """How many cores other processes (and other virtual machines: steal time) have kept busy since
    the last look, from /proc/stat less this process's own time. The load average would count this
    process's own prefill threads as load, and lags by a minute."""

    def __init__(self) -> None:
        self.last = self.sample()
        self.estimate: float | None = None

    @staticmethod
    def sample() -> tuple[float, float, float] | None:
        """(all busy ticks, this process's ticks, seconds), or None where /proc is missing."""
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        return busy, int(own[11]) + int(own[12]), time.monotonic()

    def others_cores(self) -> float | None:
        """Other processes' use since the last look; looks less than 0.2 s apart repeat the last answer."""
        now, before = self.sample(), self.last
        if now is None or before is None or now[2] - before[2] < 0.2:
            return self.estimate
        ticks = (now[0] - before[0]) - (now[1] - before[1])
        self.last, self.estimate = now, ticks / os.sysconf("SC_CLK_TCK") / (now[2] - before[2])
        return self.estimate


CPU_WATCH = CpuWatch()


def busy() -> bool:
    """Whether other work keeps at least half a core busy (falling back on the load average)."""
    others = CPU_WATCH.others_cores()
    if others is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return os.getloadavg()[0] >= cores
    return others >= BUSY_CORES


@contextmanager
def thread_count(count: int | str | None) -> Iterator[None]:
    """Run a block with `count` intra-op threads ('auto': one when the machine is busy, else leave as
    is; None: leave as is), then restore the previous count. torch is told only of real changes:
    setting the count rebuilds its thread pools."""
    before = torch.get_num_threads()
    if count == "auto":
        count = 1 if busy() else None
    change = bool(count) and count != before
    if change:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def cache_length(tokens: int) -> int:
    """Caches grow in blocks of 256 tokens, never once per token."""
    return -(-tokens // CACHE_BLOCK) * CACHE_BLOCK


def growing_cache(config):
    """A transformers dynamic cache whose layers grow in blocks (`GrowingLayer`): a prefill's own cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [growing_layer_class()() for _ in cache.layers]
    return cache


def growing_layer_class():
    """`GrowingLayer`, defined on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A dynamic cache layer that grows its buffers in blocks of `CACHE_BLOCK` tokens instead of
        concatenating at every step (which copies the whole cache once per token and layer). Attention
        gets views of exactly the tokens so far, the same values the concatenating layer would give."""

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.key_buffer = key_states.new_empty(*key_states.shape[:2], 0, key_states.shape[-1])
            self.value_buffer = value_states.new_empty(*value_states.shape[:2], 0, value_states.shape[-1])

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start = self.get_seq_length()
            end = start + key_states.shape[-2]
            if end > self.key_buffer.shape[-2]:
                self.key_buffer = self.grown(self.key_buffer, start, end)
                self.value_buffer = self.grown(self.value_buffer, start, end)
            self.key_buffer[:, :, start:end] = key_states
            self.value_buffer[:, :, start:end] = value_states
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

        @staticmethod
        def grown(buffer: torch.Tensor, used: int, needed: int) -> torch.Tensor:
            bigger = buffer.new_empty(*buffer.shape[:2], cache_length(needed + used // 2), buffer.shape[-1])
            bigger[:, :, :used] = buffer[:, :, :used]
            return bigger

    return GrowingLayer


def decode_step(model: nn.Module, fast: FastPaths):
    """The callable that runs one decode step: the model's forward, or the lean step (`leandecode`)."""
    if fast.lean:
        from .leandecode import LeanDecodeStep

        return LeanDecodeStep(model, int8=fast.int8)
    return model
