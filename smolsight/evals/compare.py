"""Two or more evaluation runs side by side: the data, the terminal tables and compare.html."""

from __future__ import annotations

import json
from pathlib import Path

from ..console import clip, format_table
from ..errors import SmolsightError
from .report import render_comparison
from .results import Run, stats_cell


def run_letters(runs: list[Run]) -> list[str]:
    """Column names: A, B, C … (labels can be long and alike; the legend maps them)."""
    return [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(runs))]


def case_ids(runs: list[Run]) -> list[str]:
    """Every case id in any run, in first-seen order."""
    return list(dict.fromkeys(c.id for run in runs for c in run.cases))


def comparison(runs: list[Run]) -> dict:
    """The side-by-side data both views are drawn from: runs, per-scenario stats, per-case verdicts."""
    if len(runs) < 2:
        raise SmolsightError("compare needs at least two runs")
    letters = run_letters(runs)
    summaries = [run.summary() for run in runs]
    scenarios = list(dict.fromkeys(s for run in runs for s in run.scenarios()))
    by_id = [{c.id: c for c in run.cases} for run in runs]
    cases = []
    for case_id in case_ids(runs):
        entries = [index.get(case_id) for index in by_id]
        first = next(e for e in entries if e is not None)
        verdicts = {e.passed for e in entries if e is not None}
        cases.append({
            "id": case_id, "scenario": first.scenario, "expected": first.expected, "differs": len(verdicts) > 1,
            "runs": {letter: None if e is None else {"passed": e.passed, "score": e.score, "answer": e.answer,
                                                     "latency_s": e.latency_s, "looped": bool(e.metrics.get("looped"))}
                     for letter, e in zip(letters, entries, strict=True)},
        })  # fmt: skip
    return {
        "runs": [{"letter": letter, "label": run.label, **run.meta} for letter, run in zip(letters, runs, strict=True)],
        "overall": {letter: s["overall"] for letter, s in zip(letters, summaries, strict=True)},
        "scenarios": {sc: {letter: s["scenarios"].get(sc) for letter, s in zip(letters, summaries, strict=True)} for sc in scenarios},
        "cases": cases,
    }


def compare_runs(runs: list[Run]) -> str:
    """Terminal tables: the runs (legend), accuracy and latency per scenario, verdicts per case."""
    data = comparison(runs)
    letters = [r["letter"] for r in data["runs"]]
    legend = [f"{r['letter']}: {r['label']} ({r.get('model')}, {r.get('preset')}, {r.get('prompt_style')}, {r.get('date')})"
              for r in data["runs"]]  # fmt: skip
    rows = [[name, *(stats_cell(cells[letter]) for letter in letters)] for name, cells in data["scenarios"].items()]
    rows.append(["overall", *(stats_cell(data["overall"][letter]) for letter in letters)])
    case_rows = [
        [("* " if case["differs"] else "  ") + case["id"], *(_case_cell(case["runs"][letter]) for letter in letters)]
        for case in data["cases"]
    ]
    return "\n".join([
        *legend, "",
        "Per scenario (passed/scored, accuracy, mean latency):",
        format_table(["scenario", *letters], rows), "",
        "Per case (* verdicts differ):",
        format_table(["case", *letters], case_rows),
    ])  # fmt: skip


def verdict_word(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "—"}[passed]


def _case_cell(entry: dict | None, width: int = 28) -> str:
    if entry is None:
        return "—"
    answer = " ".join(entry["answer"].split())
    return f"{verdict_word(entry['passed'])} {clip(answer, width)}"


def write_comparison(runs: list[Run], out_dir: str | Path) -> Path:
    """out_dir/compare.html and out_dir/compare.json; returns the HTML path."""
    data = comparison(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    path = out / "compare.html"
    path.write_text(render_comparison(runs, data), encoding="utf-8")
    return path
