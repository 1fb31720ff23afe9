"""An independent loop detector, for judging answers without the product's own `looped` flag
(`smolsight.engine.redundancy`), and the repetition table of docs/repetition.md built with it.

A text is looped when, checked by brute force on characters (runs of whitespace read as one
space), either holds:
- somewhere in it, one unit of 8 or more characters runs 3 or more times back to back, or a
  shorter unit 10 or more times (the last copy may be cut short);
- one sentence or line of 4 or more words (a Chinese character is a word) occurs 3 or more
  times anywhere (so a JSON field line such as `"zone": "gate",` may recur).

    python3 tests/loopcheck.py RUN_DIR/results.json ...    # one column per `smolsight eval` run
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?。！？;；\n])")
LONGEST_UNIT = 300  # characters
WORD = re.compile(r"[\u4e00-\u9fff]|[^\W\d_]+")  # a Chinese character or a run of letters


def copies(text: str, period: int) -> float:
    """The most back-to-back copies of any `period`-character unit anywhere in `text`."""
    best = run = 0
    for i in range(period, len(text)):
        run = run + 1 if text[i] == text[i - period] else 0
        best = max(best, run)
    return (best + period) / period


def runs_in_place(text: str) -> bool:
    for period in range(1, min(LONGEST_UNIT, len(text) // 3) + 1):
        found = copies(text, period)
        if found >= 10 or (period >= 8 and found >= 3):
            return True
    return False


def sentence_recurs(text: str) -> bool:
    sentences = Counter(" ".join(s.split()) for s in SENTENCE_END.split(text))
    return any(count >= 3 and len(WORD.findall(s)) >= 4 for s, count in sentences.items())


def looped(text: str) -> bool:
    """Whitespace runs count as one space: indentation is not a loop, and a sentence repeating
    with its separators varying (" " or a blank line) still is one."""
    return runs_in_place(" ".join(text.split())) or sentence_recurs(text)


def run_row(path: str) -> list[str]:
    """One column: looped answers, facts right (of the scored cases), mean tokens, and the time the
    run's batches took (each batch as long as its slowest answer)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    cases, size = data["cases"], data["meta"]["batch_size"]
    scored = [c for c in cases if c["passed"] is not None]
    loops = sum(looped(c["answer"]) for c in cases)
    seconds = sum(max(c["latency_s"] for c in cases[i : i + size]) for i in range(0, len(cases), size))
    return [
        data["meta"]["label"],
        f"{loops}/{len(cases)} ({loops / len(cases):.0%})",
        f"{sum(c['passed'] for c in scored)}/{len(scored)}",
        f"{sum(c['output_tokens'] for c in cases) / len(cases):.0f}",
        f"{seconds:.0f}",
        ", ".join(f"{reason} {n}" for reason, n in Counter(c["finish_reason"] for c in cases).most_common()),
    ]


def table(paths: list[str]) -> str:
    header = ["column", "looped", "facts right", "mean tokens", "time (s)", "finish reasons"]
    rows = [header, ["---"] * len(header), *(run_row(path) for path in paths)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


if __name__ == "__main__":
    print(table(sys.argv[1:]))
