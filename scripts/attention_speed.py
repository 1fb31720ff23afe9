"""One decoder layer's attention for one new token, the way the lean decode step can compute it.

A measuring stick (docs/performance.md, "Decode per token"): SmolLM2-135M's shape (9 query heads
over 3 key/value heads of 64), one query row over a bf16 cache of each length, through torch's
SDPA in bf16 (the flash kernel), in float32 over a float32 copy of the cache (what the lean step
does on CPU), and in bf16 through the math backend; medians of `--calls` calls after a warm-up.
With --prefill, a causal prefill over each length instead (every token a query row), what
`--attn sdpa_float32` does in float32.

    python3 scripts/attention_speed.py [--threads 2] [--lengths 128,1123,4000] [--calls 300] [--prefill]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(function, calls: int) -> float:
    """Median microseconds of `calls` calls, in blocks of ten after a warm-up."""
    for _ in range(20):
        function()
    blocks = []
    for _ in range(max(1, calls // 10)):
        start = time.perf_counter()
        for _ in range(10):
            function()
        blocks.append((time.perf_counter() - start) / 10 * 1e6)
    return statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="128,1123,4000")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--prefill", action="store_true", help="a causal prefill over each length, not one decode row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}; microseconds per layer")
    for length in (int(n) for n in args.lengths.split(",")):
        query = torch.randn(1, 9, length if args.prefill else 1, 64, dtype=torch.bfloat16)
        keys, values = (torch.randn(1, 3, length, 64, dtype=torch.bfloat16) for _ in range(2))
        causal = args.prefill

        def flash_bf16():
            return F.scaled_dot_product_attention(query, keys, values, is_causal=causal, enable_gqa=True)

        def float32_copy():
            return F.scaled_dot_product_attention(query.float(), keys.float(), values.float(), is_causal=causal, enable_gqa=True)

        def math_bf16():
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(query, keys, values, is_causal=causal, enable_gqa=True)

        with torch.inference_mode():
            figures = {name: timed(function, args.calls) for name, function in
                       (("bf16 flash", flash_bf16), ("float32 copy", float32_copy), ("bf16 math", math_bf16))}  # fmt: skip
        print(f"{length:6d} {'tokens' if args.prefill else 'keys'}: " + "   ".join(f"{name} {us:7.1f}" for name, us in figures.items()))


if __name__ == "__main__":
    main()
