"""What logprobs and logit_bias cost per generated token (docs/performance.md records the figures).

Two measurements, interleaved, medians of repeats:
  1. the token chooser alone on one row of real-size logits (the added work, free of model noise);
  2. whole answers on a checkpoint, decode time per token with and without the options.

    python3 scripts/logprobs_cost.py /tmp/ck256 --tokens 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from smolsight.engine import Engine, GenerationOptions
from smolsight.engine.decoding import TokenChooser

SETTINGS = {
    "plain": {},
    "logprobs (chosen only)": {"logprobs": 0},
    "logprobs + 20 alternatives": {"logprobs": 20},
    "logit_bias (10 ids)": {"logit_bias": tuple((i, 5.0) for i in range(100, 110))},
}


def chooser_us(options: GenerationOptions, vocab: int, steps: int = 400) -> float:
    """Microseconds per token for choosing (and reporting) one row's token."""
    logits = torch.randn(1, vocab)
    chooser = TokenChooser(options, torch.zeros(1, 1, dtype=torch.long), vocab)
    started = time.perf_counter()
    for _ in range(steps):
        tokens = chooser(logits)
        chooser.record(tokens)
        chooser.picks(tokens)
    return (time.perf_counter() - started) / steps * 1e6


def decode_ms(engine: Engine, options: dict, tokens: int) -> float:
    """Milliseconds per token after the first, for a forced-length answer."""
    result = engine.ask(None, "Describe a busy street in detail.", preset="seed", max_new_tokens=tokens, min_new_tokens=tokens, **options)
    return (result.total_s - result.ttft_s) / (result.output_tokens - 1) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = Engine.load(args.checkpoint, quiet=True)
    vocab = engine.model.config.text_config.vocab_size
    chooser: dict[str, list[float]] = {name: [] for name in SETTINGS}
    decode: dict[str, list[float]] = {name: [] for name in SETTINGS}
    decode_ms(engine, {}, 8)  # warm up
    for _ in range(args.repeats):
        for name, options in SETTINGS.items():
            chooser[name].append(chooser_us(GenerationOptions(**options), vocab))
            decode[name].append(decode_ms(engine, options, args.tokens))
    print(f"vocabulary {vocab}, {args.tokens}-token answers, medians of {args.repeats} interleaved repeats")
    print(f"{'setting':<28} {'chooser µs/token':>17} {'decode ms/token':>16}")
    for name in SETTINGS:
        print(f"{name:<28} {statistics.median(chooser[name]):>17.1f} {statistics.median(decode[name]):>16.2f}")


if __name__ == "__main__":
    main()
