"""Per-step cost of the loop guard, by window: `python3 -m smolsight.guardbench [WINDOW ...]`.

The guard runs once per generated token per row, beside a decode step that costs tens of
milliseconds on CPU; its cost must stay small and bounded whatever the answer's length. This
times `push` plus the `safe` read the engine does on every token, on a stream without loops (the
guard's every-token path), as the median of several passes of 20,000 tokens each.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from .console import format_table
from .engine.decoding import LoopGuard

TOKENS = 20_000
PASSES = 5


def step_cost_us(window: int, tokens: int = TOKENS, passes: int = PASSES) -> float:
    """Median microseconds per token for a guard of `window` over `tokens` random tokens."""
    rng = random.Random(0)
    stream = [rng.randrange(49_152) for _ in range(tokens)]
    times = []
    for _ in range(passes):
        guard = LoopGuard(window=window)
        start = time.perf_counter()
        for token in stream:
            guard.push(token)
            guard.safe  # noqa: B018 - read on every token by the engine
        times.append((time.perf_counter() - start) / tokens * 1e6)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    windows = [int(w) for w in argv] or [64, 512, 1024]
    rows = [[str(w), f"{step_cost_us(w):.1f}"] for w in windows]
    print(format_table(["window", "µs per token"], rows, right=(0, 1)))


if __name__ == "__main__":
    main(sys.argv[1:])
