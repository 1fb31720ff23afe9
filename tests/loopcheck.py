"""An independent loop detector, for judging answers without the product's own `looped` flag
(`smolsight.engine.redundancy`), and the repetition table of docs/repetition.md built with it.

A text is looped when any of these holds, each checked by brute force on characters:
- it ends in at least 3 back-to-back copies of one unit of 8 or more characters (the last copy
  may be cut short), or of 10 or more copies of a shorter unit;
- one sentence or line of 10 or more characters occurs 3 or more times anywhere.

    python3 tests/loopcheck.py RUN_DIR/results.json ...    # one column per `smolsight eval` run
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?。！？;；\n])")


def tail_copies(text: str, period: int) -> float:
    """How many back-to-back copies of its last `period` characters the text ends in."""
    i = len(text) - 1
    while i >= period and text[i] == text[i - period]:
        i -= 1
    return (len(text) - 1 - i + period) / period


def ends_in_loop(text: str) -> bool:
    body = text.rstrip()
    for period in range(1, len(body) // 3 + 1):
        copies = tail_copies(body, period)
        if copies >= 10 or (period >= 8 and copies >= 3):
            return True
    return False


def sentence_recurs(text: str) -> bool:
    sentences = Counter(" ".join(s.split()) for s in SENTENCE_END.split(text))
    return any(count >= 3 and len(s) >= 10 for s, count in sentences.items())


def looped(text: str) -> bool:
    return ends_in_loop(text) or sentence_recurs(text)


def run_row(path: str) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    cases = data["cases"]
    scored = [c for c in cases if c["passed"] is not None]
    loops = sum(looped(c["answer"]) for c in cases)
    return [
        data["meta"]["label"],
        f"{loops}/{len(cases)} ({loops / len(cases):.0%})",
        f"{sum(c['passed'] for c in scored)}/{len(scored)}",
        f"{sum(c['output_tokens'] for c in cases) / len(cases):.0f}",
        f"{sum(c['latency_s'] for c in cases) / len(cases):.1f}",
        ", ".join(f"{reason} {n}" for reason, n in Counter(c["finish_reason"] for c in cases).most_common()),
    ]


def table(paths: list[str]) -> str:
    header = ["column", "looped", "facts right", "mean tokens", "mean time (s)", "finish reasons"]
    rows = [header, ["---"] * len(header), *(run_row(path) for path in paths)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


if __name__ == "__main__":
    print(table(sys.argv[1:]))
