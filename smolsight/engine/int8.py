"""int8 copies of Linear weights for decode steps, shared by both int8 decode paths
(`fastpaths.Int8DecodeLinear` in transformers' forward, and `leandecode`'s fused layers)."""

from __future__ import annotations

import warnings

from torch import nn


def quantize_linear(linear: nn.Linear) -> nn.Module:
    """torch's dynamic int8 quantisation of one layer, per output channel (closer to the original than
    one scale per tensor), made from a float32 copy so the original (maybe tied) weight is untouched."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    copy = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    copy.weight = nn.Parameter(linear.weight.detach().float())
    if linear.bias is not None:
        copy.bias = nn.Parameter(linear.bias.detach().float())
    copy.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its eager-mode quantisation API as deprecated
        return DynamicInt8Linear.from_float(copy)
