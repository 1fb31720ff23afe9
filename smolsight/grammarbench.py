"""Per-token cost of structured output: `python3 -m smolsight.grammarbench MODEL [SCHEMA.json ...]`.

A constrained row pays, beside each decode step, for its `Constraint`: the grammar's token mask
(filled by llguidance, unpacked, applied to the row's logits), the closing policy's cost
estimate (every few tokens, and every token near the budget's end), and accepting the token.
This drives constraints with random logits (drawn beforehand, so drawing is not timed) for a
budget of tokens per answer, which gives long strings, numbers and the closing at the end, and
reports per-token microseconds (mean, median, 90th percentile, max) over several answers, plus
what the first request pays once: preparing the vocabulary and compiling the schema.

MODEL is a checkpoint directory (or alias) whose tokenizer is used; without SCHEMA files a
typical object schema (strings, numbers, an enum, an array, a nested object) and json_object
are measured.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from .console import format_table
from .engine import structured
from .engine.options import resolve_options

TYPICAL = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "count": {"type": "integer"},
        "price": {"type": "number"},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "box": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "label": {"type": "string"}},
            "required": ["x", "y", "label"],
            "additionalProperties": False,
        },
    },
    "required": ["title", "count", "price", "colour", "tags", "box"],
    "additionalProperties": False,
}


def answer_costs(grammars: structured.Grammars, fmt: structured.ResponseFormat, budget: int, seed: int) -> list[float]:
    """Seconds per token (mask + accept) of one answer driven by seeded random logits."""
    constraint = grammars.constraint(fmt, resolve_options(max_new_tokens=budget))
    logits = torch.randn(budget, grammars.size, generator=torch.Generator().manual_seed(seed))
    costs = []
    for row in logits:
        if constraint.complete:
            break
        start = time.perf_counter()
        constraint.mask(row)
        token = int(row.argmax())
        if token not in grammars.eos:
            constraint.accept(token)
        costs.append(time.perf_counter() - start)
        if token in grammars.eos:
            break
    return costs


def measure(grammars: structured.Grammars, label: str, fmt: structured.ResponseFormat, budget: int, answers: int) -> list[str]:
    start = time.perf_counter()
    grammars.matcher(fmt)
    compile_ms = (time.perf_counter() - start) * 1e3
    costs = [c * 1e6 for seed in range(answers) for c in answer_costs(grammars, fmt, budget, seed)]
    return [label, f"{compile_ms:.1f}", str(len(costs)), f"{statistics.fmean(costs):.0f}", f"{statistics.median(costs):.0f}",
            f"{np.percentile(costs, 90):.0f}", f"{max(costs):.0f}"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m smolsight.grammarbench", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint directory or alias: its tokenizer is used")
    parser.add_argument("schemas", nargs="*", help="JSON Schema files (default: a typical object schema, and json_object)")
    parser.add_argument("--budget", type=int, default=256, help="max_new_tokens of each answer")
    parser.add_argument("--answers", type=int, default=8)
    args = parser.parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from .engine.loading import resolve_model

    torch.set_num_threads(1)
    path = resolve_model(args.model)
    eos = GenerationConfig.from_pretrained(path).eos_token_id  # as the engine reads it
    grammars = structured.Grammars(AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path).text_config.vocab_size,
                                   sorted(eos if isinstance(eos, list) else [eos]))  # fmt: skip
    start = time.perf_counter()
    grammars.vocabulary  # noqa: B018 - what the first constrained request pays once
    print(f"vocabulary of {grammars.size} tokens prepared in {time.perf_counter() - start:.2f} s")
    formats = [(f, structured.read_schema_file(f)) for f in args.schemas] or [("typical object schema", structured.json_schema(TYPICAL)),
                                                                             ("json_object", structured.json_object())]  # fmt: skip
    rows = [measure(grammars, label, fmt, args.budget, args.answers) for label, fmt in formats]
    headers = ["format", "compile ms", "tokens", "µs/token mean", "median", "p90", "max"]
    print(format_table(headers, rows, right=tuple(range(1, len(headers)))))


if __name__ == "__main__":
    main()
