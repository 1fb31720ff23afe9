"""Which grammar library smolsight's structured output uses, measured: xgrammar against llguidance.

Run once to choose (both must be installed: `pip install xgrammar==0.2.9 llguidance==1.9.1`):

    python3 scripts/compare_grammar_libraries.py TOKENIZER_DIR [--passes 7]

On the same tokenizer (the real SmolLM2 one of the grafted 256M checkpoint), in one process,
interleaved, medians of `--passes` repeats:
- preparing the tokenizer (once per process);
- compiling a typical object schema and `json_object` (any JSON object), with caching off, plus
  the first mask (llguidance builds lazily, so its compile cost partly lands there);
- the per-token cost over a generated JSON answer: fill the token bitmask, apply it to a [1, V]
  float32 logits row, accept the token; and each of the three alone. Both libraries fill the
  same bitmask layout (int32 words, bit i of word w for token 32w+i), so the apply is one shared
  function (`apply_bitmask`, what smolsight uses); each library's own CPU apply is timed too.
smolsight depends on the winner only; this script is how the choice can be checked again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import transformers

from smolsight.grammarbench import TYPICAL

SCHEMA = TYPICAL  # the schema smolsight.grammarbench measures
ANSWER = {
    "title": "A red bicycle leaning against a brick wall on a sunny afternoon",
    "count": 3,
    "price": 129.95,
    "colour": "red",
    "tags": ["bicycle", "street", "wall", "shadow", "afternoon", "city life"],
    "box": {"x": 0.125, "y": 0.5, "label": "front wheel of the bicycle"},
}


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """-inf where the bitmask [1, W] has a 0 bit; logits [1, V] (as smolsight.engine.structured does)."""
    allowed = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[: logits.shape[-1]].view(np.bool_)
    np.copyto(logits.numpy(), -np.inf, where=~allowed[None])


class Xgrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab: int) -> None:
        import xgrammar

        self.xgr = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        self.compiler = xgrammar.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self.vocab = vocab

    def compile(self, schema: dict | None):
        if schema is None:
            return self.compiler.compile_builtin_json_grammar()
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True)

    def matcher(self, grammar):
        return Matcher(self.xgr.GrammarMatcher(grammar), self.xgr.allocate_token_bitmask(1, self.vocab),
                       lambda m, mask: m.fill_next_token_bitmask(mask), self.xgr.apply_token_bitmask_inplace,
                       lambda m, t: m.accept_token(t))  # fmt: skip


class Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.torch = llguidance.torch
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        self.vocab = vocab

    def compile(self, schema: dict | None):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema or {"type": "object"}, defaults={"whitespace_flexible": False})
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        assert not matcher.is_error(), matcher.get_error()
        return matcher

    def matcher(self, grammar):
        return Matcher(grammar, self.torch.allocate_token_bitmask(1, self.vocab), self.torch.fill_next_token_bitmask,
                       self.torch.apply_token_bitmask_inplace, lambda m, t: m.consume_token(t))  # fmt: skip


class Matcher:
    """One library's matcher with the calls the decode loop makes per token."""

    def __init__(self, matcher, mask, fill, apply, accept) -> None:
        self.m, self.mask, self.fill, self.own_apply, self.accept = matcher, mask, fill, apply, accept

    def timed_step(self, logits: torch.Tensor, token: int, apply) -> tuple[float, float, float]:
        """Seconds spent filling, applying and accepting for one token."""
        t0 = time.perf_counter()
        self.fill(self.m, self.mask)
        t1 = time.perf_counter()
        apply(logits, self.mask)
        t2 = time.perf_counter()
        accepted = self.accept(self.m, token)
        t3 = time.perf_counter()
        assert accepted is not False, f"token {token} refused"
        return t1 - t0, t2 - t1, t3 - t2


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def compile_times(lib, passes: int) -> dict:
    """Compile (plus the first mask) of the object schema and of json_object, in ms."""
    out = {}
    for label, schema in (("schema", SCHEMA), ("json_object", None)):
        compiled, first = [], []
        for _ in range(passes):
            start = time.perf_counter()
            grammar = lib.compile(schema)
            compiled.append(time.perf_counter() - start)
            matcher = lib.matcher(grammar)
            start = time.perf_counter()
            matcher.fill(matcher.m, matcher.mask)
            first.append(time.perf_counter() - start)
        out[f"{label} compile ms"] = median_ms(compiled)
        out[f"{label} first mask ms"] = median_ms(first)
    return out


def token_costs(lib, tokens: list[int], vocab: int, passes: int) -> dict:
    """Per-token µs over the answer (medians of passes): fill, shared apply, accept, their sum,
    and the library's own apply instead of the shared one."""
    logits = torch.randn(1, vocab)
    parts: list[tuple[float, float, float]] = []
    own: list[float] = []
    for _ in range(passes):
        for apply, sink in ((apply_bitmask, parts), (None, own)):
            matcher = lib.matcher(lib.compile(SCHEMA))
            steps = [matcher.timed_step(logits.clone(), token, apply or matcher.own_apply) for token in tokens]
            sums = [sum(step[i] for step in steps) / len(tokens) for i in range(3)]
            sink.append(tuple(sums) if apply else sums[1])
    fill, apply, accept = (statistics.median(p[i] for p in parts) * 1e6 for i in range(3))
    return {"fill µs": fill, "apply µs": apply, "accept µs": accept, "fill+apply+accept µs": fill + apply + accept,
            "own apply µs": statistics.median(own) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer", help="a directory with tokenizer.json (e.g. the grafted SmolLM2 checkpoint)")
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    vocab = len(tokenizer)
    text = json.dumps(ANSWER, separators=(",", ":"))
    tokens = tokenizer.encode(text, add_special_tokens=False)
    print(f"tokenizer: {vocab} tokens; answer: {len(tokens)} tokens")
    libraries = []
    for kind in (Xgrammar, Llguidance):
        start = time.perf_counter()
        libraries.append(kind(tokenizer, vocab))
        print(f"{kind.name}: tokenizer prepared in {(time.perf_counter() - start) * 1e3:.0f} ms")
    results: dict[str, dict] = {lib.name: {} for lib in libraries}
    for round_ in range(2):  # interleaved: each library twice, alternating order, the last kept
        for lib in libraries if round_ % 2 == 0 else reversed(libraries):
            results[lib.name] = compile_times(lib, args.passes) | token_costs(lib, tokens, vocab, args.passes)
    for name, figures in results.items():
        print(name + ": " + "; ".join(f"{k} {v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
