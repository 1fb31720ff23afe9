"""Evaluation results: one case's answer and verdict, a whole run, their statistics, and
results.json read back."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..console import format_table
from ..errors import SmolsightError

# What a run does with a looped answer: fail it (the default), or score its text like any other.
LOOPS_FAIL = "looped answers fail"
LOOPS_SCORED = "looped answers scored as written"


@dataclass
class CaseResult:
    """One case's answer and verdict; `finish_reason` "error" means no answer (see `detail`)."""

    id: str
    scenario: str
    task: str | None
    lang: str
    prompt: str
    media: list[str]
    answer: str
    expected: Any
    answer_type: str
    passed: bool | None
    score: float | None
    detail: str
    latency_s: float
    ttft_s: float
    input_tokens: int
    output_tokens: int
    finish_reason: str
    metrics: dict = field(default_factory=dict)
    raw_answer: str = ""  # before loop trimming and sentence de-duplication
    looped: bool = False  # the raw answer was padded with repeated text (metrics["looped"])
    loop_rule: str = ""  # LOOPS_FAIL or LOOPS_SCORED: what the run did with looped answers
    ocr: list[dict] | None = None  # the lines OCR read, in a run with --ocr or --ocr-answer

    @classmethod
    def from_dict(cls, data: dict) -> CaseResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def stats(cases: list[CaseResult]) -> dict:
    """Accuracy over scored cases (free and failed-to-run ones excluded from it), latency and
    redundancy over answered ones."""
    scored = [c for c in cases if c.passed is not None]
    answered = [c for c in cases if c.finish_reason != "error"]
    latencies = sorted(c.latency_s for c in answered)
    passed = sum(1 for c in scored if c.passed)
    return {
        "cases": len(cases),
        "scored": len(scored),
        "passed": passed,
        "accuracy": round(passed / len(scored), 4) if scored else None,
        "mean_score": round(statistics.fmean(c.score for c in scored), 4) if scored else None,
        "mean_latency_s": round(statistics.fmean(latencies), 4) if latencies else None,
        "p90_latency_s": round(latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))], 4) if latencies else None,
        "mean_output_tokens": round(statistics.fmean(c.output_tokens for c in answered), 1) if answered else None,
        "looped": sum(1 for c in answered if c.metrics.get("looped")),
        "errors": len(cases) - len(answered),
    }


@dataclass
class Run:
    """One evaluation: what was run (`meta`) and every case's result, in suite order."""

    meta: dict
    cases: list[CaseResult]

    @property
    def label(self) -> str:
        return self.meta.get("label") or self.meta.get("model", "run")

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(c.scenario for c in self.cases))

    def summary(self) -> dict:
        """{"overall": stats, "scenarios": {name: stats}} (see `stats`)."""
        return {
            "overall": stats(self.cases),
            "scenarios": {s: stats([c for c in self.cases if c.scenario == s]) for s in self.scenarios()},
        }

    def to_dict(self) -> dict:
        return {"meta": self.meta, "summary": self.summary(), "cases": [asdict(c) for c in self.cases]}

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        return cls(meta=data.get("meta", {}), cases=[CaseResult.from_dict(c) for c in data.get("cases", [])])


def load_run(path: str | Path) -> Run:
    """A run from its results.json, or from the directory holding it."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SmolsightError(f"{path}: no results.json there (write one with `smolsight eval`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SmolsightError(f"{file}: not a results file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise SmolsightError(f"{file}: not a results file (no 'cases' list)")
    try:
        return Run.from_dict(data)
    except TypeError as exc:
        raise SmolsightError(f"{file}: a case is missing fields ({exc})") from None


def scenario_table(run: Run) -> str:
    """One run's per-scenario table, as `eval` prints it when done."""
    summary = run.summary()
    rows = [[name, stats_cell(s)] for name, s in summary["scenarios"].items()]
    return format_table(["scenario", run.label], [*rows, ["overall", stats_cell(summary["overall"])]])


def stats_cell(s: dict | None) -> str:
    if s is None:
        return "—"
    accuracy = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.0%}"
    latency = "—" if s["mean_latency_s"] is None else f"{s['mean_latency_s']:.2f}s"
    looped = f" looped {s['looped']}" if s["looped"] else ""
    errors = f" errors {s['errors']}" if s["errors"] else ""
    return f"{s['passed']}/{s['scored']} {accuracy} {latency}{looped}{errors}"
