"""int8 copies of Linear weights for decode steps, shared by both int8 decode paths
(`fastpaths.Int8DecodeLinear` in transformers' forward, and `leandecode`'s fused layers).

The copy is what torch's eager dynamic quantisation (`torch.ao.nn.quantized.dynamic.Linear.from_float`
with `per_channel_dynamic_qconfig`) makes, built directly: that module's constructor packs a
placeholder weight of the full size before `from_float` packs the real one, which made loading
the 256M's int8 decode step take 2.4 s, most of a CPU engine's load (docs/performance.md, "Load and the
vision cache"). fbgemm packs on one thread, so `leandecode` packs several matrices side by side."""

from __future__ import annotations

import warnings

import torch
from torch.ao.quantization import per_channel_dynamic_qconfig


def packed_int8(weight: torch.Tensor, bias: torch.Tensor | None = None):
    """fbgemm's packed int8 weight (per output channel, symmetric) for `torch.ops.quantized.linear_dynamic`,
    quantised from a float32 copy so the original (maybe tied) weight is untouched."""
    weight = weight.detach().float()
    observer = per_channel_dynamic_qconfig.weight()  # min/max per output channel, qint8, symmetric
    observer(weight)
    scales, zero_points = observer.calculate_qparams()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantised tensors as deprecated
        quantised = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), observer.ch_axis, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantised, None if bias is None else bias.detach().float())


def int8_product(x: torch.Tensor, packed) -> torch.Tensor:
    """x [B, K] float32 -> [B, N] float32 through fbgemm's dynamic int8 kernel, one activation scale
    per call, as the dynamic quantised module's forward calls it."""
    return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=True)
