"""Streaming latency with and without hold-back, measured on a model directory:

    python3 tests/streamcheck.py MODEL [MAX_NEW_TOKENS]

For each prompt and each of `seed` (nothing held back but whitespace) and the default preset,
one streamed answer alone: the time to the first token chosen (`ttft_s`), to the first streamed
characters, the most characters held back at once (`held_back_chars`), and whether the streamed
text equals the answer returned.
"""

from __future__ import annotations

import sys
import time

from smolsight.console import format_table
from smolsight.engine import Chunk, Engine

PROMPTS = [
    "What is the capital of Japan?",
    "Describe a fire accident in a factory.",
    "Count the shrimp fry in a tank and explain how.",
    "请描述工厂里发生的火灾事故现场。",
    "Describe the trend of a temperature field in a heat simulation where the left side is cold and the right side is hot.",
]


def measure(engine: Engine, prompt: str, preset: str | None, tokens: int) -> list[str]:
    start, first, streamed = time.perf_counter(), None, ""
    for event in engine.stream(None, prompt, preset, max_new_tokens=tokens):
        if isinstance(event, Chunk):
            first = first or time.perf_counter() - start
            streamed += event.text
        else:
            result = event
    return [prompt[:28], preset or "default", f"{result.ttft_s:.3f}", f"{first or 0:.3f}", str(result.held_back_chars),
            str(result.output_tokens), result.finish_reason, "yes" if streamed == result.text else "NO"]  # fmt: skip


def main(model: str, tokens: int) -> None:
    engine = Engine.load(model, device="cpu", quiet=True)
    engine.ask(None, "Hi", max_new_tokens=2)  # warm-up
    rows = [measure(engine, prompt, preset, tokens) for prompt in PROMPTS for preset in ("seed", None)]
    headers = ["prompt", "preset", "first token (s)", "first text (s)", "held back (chars)", "tokens", "finish", "stream = answer"]
    print(format_table(headers, rows, right=(2, 3, 4, 5)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)
