"""A lean decode step for SmolVLM2's Llama text model: one new token per row, nothing else.

transformers' generic forward spends more time per decode step on CPU than the arithmetic does:
it builds an attention mask and rotary tables every step, dispatches through ~15 modules per
layer, and (with the int8 fast path) converts every activation from bf16 to float32 and back
around each of the 7 int8 matrix products of a layer. This step does only the arithmetic, with
the model's own weights:

- one fused QKV and one fused gate/up matrix per layer (4 matrix products a layer instead of 7);
- with int8, those products are torch's dynamic int8 kernels (the same quantisation as
  `fastpaths.Int8DecodeLinear`, one activation scale per row), and activations stay float32 from
  the embedding to the logits; without it, they run in the model's dtype;
- rotary cos/sin tables computed once and indexed by position;
- SDPA over the cache with grouped query heads (no repeated keys), a padding mask only when a
  row is padded, and the LM head on the one new position;
- on CPU, attention over a bf16 cache in bf16 or in float32 over a float32 copy, whichever the
  CPU probe measured faster (`cpu.CpuDefaults.decode_attention`): torch's CPU flash kernel for one
  query row in bf16 is fast with AMX (75 µs a layer at 1123 keys on two threads, against 155 µs
  for the copy and float32 attention) and slow without it (538 µs against 91 µs on AVX512-BF16
  alone; docs/performance.md). Both accumulate in float32.

It reads and writes the engine's own cache: each layer's new key and value go through
`cache.layers[i].update(k, v)`, which returns all keys and values so far, so whatever edits the
cache layers between steps (rows joining or leaving a batch) is what the next step attends to.
The prompt's prefill stays transformers' forward. `LeanDecodeStep` is called like the model
(`input_ids=[B, 1], attention_mask=[B, T], position_ids=[B, 1], cache=…`) and returns an
object with `.logits` [B, 1, V], so it is a drop-in for the decode loop's `decode_forward`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu
from ..errors import SmolsightError
from .int8 import int8_product, packed_int8


BATCHED_FROM = 2  # rows from which one integer matrix product beats a dynamic int8 call per row


@dataclass
class DecodeOutput:
    logits: torch.Tensor  # [B, 1, V]


def supported(text_config) -> str | None:
    """Why the lean step cannot run this text model, or None when it can."""
    if text_config.model_type != "llama":
        return f"the lean decode step is written for Llama text models, not {text_config.model_type!r}"
    if getattr(text_config, "hidden_act", "silu") != "silu" or getattr(text_config, "attention_bias", False) or getattr(text_config, "mlp_bias", False):
        return "the lean decode step needs a Llama text model with SiLU and no biases"
    return None


class DenseLinear:
    """A matrix product in the activations' dtype: x [B, K] -> [B, N]."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight  # [N, K]

    def bytes_apart_from(self, model_storages: set[int]) -> int:
        """Memory of this weight unless it is one of the model's own parameters."""
        shared = self.weight.untyped_storage().data_ptr() in model_storages
        return 0 if shared else self.weight.numel() * self.weight.element_size()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear:
    """An int8 matrix product with int8 weights per output channel and one activation scale per row:
    x [B, K] float32 -> [B, N] float32.

    One row goes through torch's dynamic int8 kernel (fbgemm; the same quantisation as
    `fastpaths.Int8DecodeLinear`), the fastest there is for a matrix-vector product. That kernel
    takes one activation scale per call, so several rows would each need a call of their own and
    cost grows with the batch; from `BATCHED_FROM` rows on, the rows go through one integer matrix
    product instead (`torch._int_mm`, each row quantised symmetrically on its own scale), whose
    cost barely grows with the batch (docs/performance.md). The two round differently, so a row's
    logits in a batch differ slightly from its logits alone; no row's values affect another's."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.packed = packed_int8(weight)
        self.batched: tuple[torch.Tensor, torch.Tensor] | None = None  # (int8 weight [K, N], scales [N]), made on first use
        self.bytes = weight.numel()

    def bytes_apart_from(self, model_storages: set[int]) -> int:
        return self.bytes * (2 if self.batched is not None else 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1:
            return int8_product(x, self.packed)
        if len(x) < BATCHED_FROM:
            return torch.cat([int8_product(row, self.packed) for row in x.split(1)])
        if self.batched is None:
            quantised = torch.ops.quantized.linear_unpack(self.packed)[0]  # per-channel symmetric: zero points are 0
            self.batched = quantised.int_repr().t().contiguous(), quantised.q_per_channel_scales().float()
        weight, weight_scales = self.batched
        scales = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
        rows = torch.round(x / scales).clamp(-127, 127).to(torch.int8)
        return torch._int_mm(rows, weight).float() * scales * weight_scales


class LeanLayer:
    """One decoder layer's weights, fused: QKV, output, gate/up, down, and the two norms."""

    def __init__(self, layer: nn.Module, make_linear, dtype: torch.dtype) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = make_linear(torch.cat([weight_of(attn.q_proj), weight_of(attn.k_proj), weight_of(attn.v_proj)]))
        self.o = make_linear(weight_of(attn.o_proj))
        self.gate_up = make_linear(torch.cat([weight_of(mlp.gate_proj), weight_of(mlp.up_proj)]))
        self.down = make_linear(weight_of(mlp.down_proj))
        self.attn_norm = layer.input_layernorm.weight.detach().to(dtype)
        self.mlp_norm = layer.post_attention_layernorm.weight.detach().to(dtype)


def decode_attention_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a decode step attends in: the model's, except where the CPU probe measured float32
    faster for a bf16 cache."""
    if model.device.type == "cpu" and model.dtype == torch.bfloat16:
        return getattr(torch, cpu.defaults().decode_attention)
    return model.dtype


def weight_of(linear: nn.Module) -> torch.Tensor:
    """A Linear layer's weight, also when the int8 fast path has wrapped it (`Int8DecodeLinear.full`)."""
    return getattr(linear, "full", linear).weight.detach()


class LeanDecodeStep:
    """The decode step of `model`'s text model; int8 for CPU dynamic int8 matrix products."""

    def __init__(self, model: nn.Module, int8: bool) -> None:
        text = model.model.text_model
        config = model.config.text_config
        problem = supported(config)
        if problem:
            raise SmolsightError(problem)
        self.embed = text.embed_tokens
        self.dtype = torch.float32 if int8 else model.dtype
        self.cache_dtype = model.dtype  # keys and values as prefill wrote them
        self.attention_dtype = decode_attention_dtype(model)
        make_linear = Int8Linear if int8 else (lambda w: DenseLinear(w.to(self.dtype)))
        with ThreadPoolExecutor(torch.get_num_threads()) as pool:  # fbgemm packs on one thread: side by side, 1.9x as fast
            lm_head = pool.submit(make_linear, weight_of(model.lm_head))  # the largest matrix, packed beside the layers
            self.layers = list(pool.map(lambda layer: LeanLayer(layer, make_linear, self.dtype), text.layers))
            self.lm_head = lm_head.result()
        self.norm = text.norm.weight.detach().to(self.dtype)
        self.eps = config.rms_norm_eps
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.inv_freq = text.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(text.rotary_emb.attention_scaling)
        self.rotary_tables(config.max_position_embeddings)
        storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        linears = [self.lm_head] + [linear for layer in self.layers for linear in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        self.extra_bytes = sum(linear.bytes_apart_from(storages) for linear in linears)  # weights held outside the model

    def rotary_tables(self, positions: int) -> None:
        """cos and sin [P, head_dim] for positions 0..P-1, float32, as transformers' rotary embedding
        computes them (before its cast to the model's dtype); sin's first half negated (`rotate`)."""
        freqs = torch.arange(positions, dtype=torch.float32, device=self.inv_freq.device)[:, None] * self.inv_freq
        angles = torch.cat([freqs, freqs], dim=-1)
        sign = torch.cat([-torch.ones_like(freqs), torch.ones_like(freqs)], dim=-1)
        self.cos, self.signed_sin = angles.cos() * self.rope_scale, angles.sin() * self.rope_scale * sign

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache, **_) -> DecodeOutput:
        """input_ids, position_ids [B, 1]; attention_mask [B, T] (T: the cache's length after this step)."""
        if int(position_ids.max()) >= len(self.cos):
            self.rotary_tables(2 * int(position_ids.max()) + 1)
        rope = self.cos[position_ids[:, 0]].to(self.dtype), self.signed_sin[position_ids[:, 0]].to(self.dtype)  # [B, D] each
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]
        x = self.embed(input_ids[:, 0]).to(self.dtype)  # [B, hidden]
        for layer, cache_layer in zip(self.layers, cache.layers, strict=True):
            x = x + self.attention(layer, self.rms_norm(x, layer.attn_norm), rope, mask, cache_layer)
            gate, up = layer.gate_up(self.rms_norm(x, layer.mlp_norm)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        return DecodeOutput(self.lm_head(self.rms_norm(x, self.norm))[:, None, :])

    def attention(self, layer: LeanLayer, x: torch.Tensor, rope, mask, cache_layer) -> torch.Tensor:
        batch, heads, kv_heads = len(x), self.heads, self.kv_heads
        qkv = layer.qkv(x).view(batch, heads + 2 * kv_heads, self.head_dim)  # [B, H + 2 KV, D]
        qk = rotate(qkv[:, : heads + kv_heads], *rope)
        kept = self.cache_dtype
        key, value = qk[:, heads:, None].to(kept), qkv[:, heads + kv_heads :, None].to(kept)  # [B, KV, 1, D]
        keys, values = cache_layer.update(key, value)  # [B, KV, T, D]: the cache so far, this step's included
        wanted = self.attention_dtype
        query = qk[:, :heads, None].to(wanted)  # [B, H, 1, D]
        out = F.scaled_dot_product_attention(query, keys.to(wanted), values.to(wanted), attn_mask=mask, enable_gqa=True)
        return layer.o(out.reshape(batch, heads * self.head_dim).to(self.dtype))

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """transformers' LlamaRMSNorm in one op (in float32 inside, as transformers computes it)."""
        return F.rms_norm(x, weight.shape, weight, self.eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x [B, heads, D] with cos, signed_sin [B, D] (rotate-half layout:
    x * cos + (-x2, x1) * sin, where (x2, x1) is x rolled by half and the sign sits in `signed_sin`)."""
    return x * cos[:, None] + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin[:, None]

