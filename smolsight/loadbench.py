"""`smolsight bench-serve`: how the server behaves under load, measured over real HTTP.

Two measurements, against a server this command starts on a loopback port (or one at `--url`):

- **Concurrency levels.** At each level C, C clients each send requests back to back (every
  request streams exactly `--tokens` tokens: `min_tokens` = `max_tokens`); the figure is the
  aggregate completion tokens per second over the level's wall time, with each request's time to
  first token. Continuous batching should make the aggregate grow with C.
- **A short request behind a long one.** The short request's time to first token alone, then sent
  while a long request streams, and the longest pause the long stream saw meanwhile (what the
  short one's prefill cost the running row).

Every request is a streamed Chat Completions call through httpx, timed at the client.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import httpx

from .console import format_table, log


@dataclass(frozen=True)
class Streamed:
    """One streamed answer as the client saw it."""

    ttft_s: float
    total_s: float
    tokens: int
    longest_gap_s: float  # longest pause between two chunks


@dataclass(frozen=True)
class LevelFigures:
    concurrency: int
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_median_s: float
    ttft_p90_s: float


def stream(url: str, model: str, prompt: str, tokens: int, started: threading.Event | None = None) -> Streamed:
    """One streamed request of exactly `tokens` tokens; `started` is set at its first chunk."""
    body = {
        "model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
        "max_tokens": tokens, "min_tokens": tokens, "preset": "seed", "stream_options": {"include_usage": True},
    }  # fmt: skip
    begin = time.perf_counter()
    first, last, gap, count = None, begin, 0.0, 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the server answered {response.status_code}: {response.read().decode()[:200]}")
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            if any(choice["delta"].get("content") for choice in chunk.get("choices", [])):
                if first is None:
                    first = now
                    if started is not None:
                        started.set()
                else:
                    gap = max(gap, now - last)
                last = now
    end = time.perf_counter()
    return Streamed(ttft_s=(first or end) - begin, total_s=end - begin, tokens=count, longest_gap_s=gap)


def level(url: str, model: str, prompt: str, tokens: int, concurrency: int, rounds: int) -> LevelFigures:
    """C clients, each sending `rounds` requests back to back."""

    def client(_: int) -> list[Streamed]:
        return [stream(url, model, prompt, tokens) for _ in range(rounds)]

    begin = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = [a for batch in pool.map(client, range(concurrency)) for a in batch]
    wall = time.perf_counter() - begin
    ttfts = sorted(a.ttft_s for a in answers)
    total = sum(a.tokens for a in answers)
    return LevelFigures(
        concurrency=concurrency, requests=len(answers), tokens=total, wall_s=round(wall, 2), tokens_per_s=round(total / wall, 1),
        ttft_median_s=round(statistics.median(ttfts), 3), ttft_p90_s=round(ttfts[math.ceil(0.9 * len(ttfts)) - 1], 3),
    )  # fmt: skip


def short_behind_long(url: str, model: str, short_prompt: str, long_prompt: str, long_tokens: int) -> dict:
    """The short request's first token alone and behind a long streaming one, and the long one's longest pause."""
    alone = statistics.median(stream(url, model, short_prompt, 4).ttft_s for _ in range(3))
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(stream, url, model, long_prompt, long_tokens, started)
        started.wait(600)
        time.sleep(0.5)  # well into its decoding
        behind = stream(url, model, short_prompt, 4)
        long_answer = long.result()
    return {
        "short_ttft_alone_s": round(alone, 3), "short_ttft_behind_long_s": round(behind.ttft_s, 3),
        "short_total_behind_long_s": round(behind.total_s, 3), "long_total_s": round(long_answer.total_s, 2),
        "long_tokens": long_answer.tokens, "long_longest_gap_s": round(long_answer.longest_gap_s, 3),
    }  # fmt: skip


def run(url: str, model: str, levels: list[int], tokens: int, rounds: int, prompt: str, long_tokens: int) -> dict:
    stream(url, model, prompt, 4)  # warm-up: the first request pays for lazy initialisation
    figures = []
    for concurrency in levels:
        log(f"concurrency {concurrency}: {concurrency * rounds} requests of {tokens} tokens…")
        figures.append(level(url, model, prompt, tokens, concurrency, rounds))
    log(f"a short request behind a {long_tokens}-token one…")
    behind = short_behind_long(url, model, "Reply with one word.", prompt, long_tokens)
    return {"levels": [asdict(f) for f in figures], "short_behind_long": behind}


def report(figures: dict) -> str:
    levels = figures["levels"]
    base = levels[0]["tokens_per_s"] or 1.0
    rows = [[str(f["concurrency"]), str(f["requests"]), str(f["tokens"]), f"{f['wall_s']:.1f}", f"{f['tokens_per_s']:.1f}",
             f"{f['tokens_per_s'] / base:.2f}×", f"{f['ttft_median_s']:.2f}", f"{f['ttft_p90_s']:.2f}"] for f in levels]  # fmt: skip
    headers = ["clients", "requests", "tokens", "wall s", "tokens/s", f"vs {levels[0]['concurrency']}", "TTFT median s", "TTFT p90 s"]
    table = format_table(headers, rows, right=tuple(range(len(headers))))
    b = figures["short_behind_long"]
    return (
        f"{table}\n\nshort request's first token: {b['short_ttft_alone_s']:.2f} s alone, {b['short_ttft_behind_long_s']:.2f} s behind a "
        f"{b['long_tokens']}-token stream; the long stream's longest pause meanwhile: {b['long_longest_gap_s']:.2f} s"
    )
