"""The evaluation runner: every case of a suite through a model, scored, timed and kept.

`run_suite` sends each case's media and prompt to anything with the engine's
`ask_batch(requests) -> list[Result]` (the `Engine`, or a scripted stand-in), scores the
answers with `smolsight.scoring` and returns a `Run`: the answers, verdicts, latencies, token
counts and repetition metrics, and the settings that produced them. `write_run` keeps a run
as results.json plus a self-contained report.html; `compare_runs` and `write_comparison` put
two or more runs side by side.

Prompts: a case without its own prompt, or whose prompt is one of its task's built-in prompts
(as the synthetic suite writes them), gets the task's prompt in the chosen style: `short`
asks for a short answer, `raw` is exactly what the field report sent. A case with a prompt of
its own keeps it: `short` appends the task's answer instruction (unless the prompt already
holds it), `raw` sends it unchanged. A case whose task has no built-in prompt is sent as is.
"""

from __future__ import annotations

import json
import statistics
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import SmolsightError
from .options import DEFAULT_PRESET, resolve_options
from .redundancy import repetition_metrics
from .scoring import normalise, score
from .suite import Case, Suite
from .tasks import STYLES, TASKS, task_prompt

if TYPE_CHECKING:  # the engine (and torch) load only when a run starts: compare and synth stay quick
    from .engine import Request, Result

SETTINGS = ("image_size", "split", "video_fps", "max_frames")

# What `short` adds to a case's own prompt: the answer form each task's scorer reads best.
ANSWER_INSTRUCTIONS: dict[str, dict[str, str]] = {
    "describe": {"zh": "用一两句话回答，说出主要物体。", "en": "Answer in one or two sentences, naming the main objects."},
    "accident": {"zh": "用一两句话回答：发生了什么？", "en": "Answer in one or two sentences: what is happening?"},
    "trend": {"zh": "用一句话回答。", "en": "Answer in one sentence."},
    "count": {"zh": "只回答一个数字。", "en": "Answer with a number only."},
    "read": {"zh": "只输出这些文字。", "en": "Output only the text."},
    "measure": {"zh": "只回答一个以厘米为单位的数字。", "en": "Answer with a number of centimetres only."},
    "qa": {"zh": "用一句话回答。", "en": "Answer in one sentence."},
}


# ---------------------------------------------------------------------------------------------
# Prompts


def guess_lang(text: str) -> str:
    """zh when the text has any Chinese character, else en."""
    return "zh" if any("CJK" in unicodedata.name(c, "") for c in text) else "en"


def styled_prompt(task: str, prompt: str | None = None, lang: str | None = None, style: str = "short") -> str:
    """`prompt` made to ask for `task`'s answer form in `style`, or the task's own prompt when
    there is none. `lang` defaults to the prompt's language (zh without a prompt)."""
    lang = lang or (guess_lang(prompt) if prompt else "zh")
    if not prompt:
        return task_prompt(task, lang, style)
    task_prompt(task, lang, style)  # checks task, language and style names
    instruction = ANSWER_INSTRUCTIONS[task][lang]
    if style == "raw" or normalise(instruction) in normalise(prompt):
        return prompt
    return f"{prompt.rstrip()}{'' if lang == 'zh' else ' '}{instruction}"


def task_question(args: list[str], task: str, lang: str | None = None) -> tuple[list[str], str]:
    """`ask --task`'s media and prompt: the last argument is the prompt, with the task's answer
    instruction appended; when it names an existing file, every argument is media and the
    task's own short question is asked."""
    if _names_file(args[-1]):
        return args, styled_prompt(task, None, lang)
    return args[:-1], styled_prompt(task, args[-1], lang)


def _names_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long for a file name, or a NUL in it: a prompt
        return False


def case_prompt(case: Case, style: str) -> str:
    """The prompt the runner sends for `case` in `style` (rules in the module docstring)."""
    if case.task not in TASKS:
        return case.prompt
    built_in = {task_prompt(case.task, case.lang, s, case.subject) for s in STYLES}
    if case.prompt is None or case.prompt in built_in:
        return task_prompt(case.task, case.lang, style, case.subject)
    return styled_prompt(case.task, case.prompt, case.lang, style)


# ---------------------------------------------------------------------------------------------
# Results


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


# ---------------------------------------------------------------------------------------------
# Running


class Backend(Protocol):
    """What answers: the `Engine`, or anything else that turns requests into results in order."""

    def ask_batch(self, requests: list[Request]) -> list[Result]: ...


def select_cases(suite: Suite, scenarios: Iterable[str] | None = None, limit: int | None = None) -> list[Case]:
    """The suite's cases in the given scenarios (all when None), at most `limit` of them."""
    cases = list(suite.cases)
    if scenarios:
        wanted, known = set(scenarios), {c.scenario for c in cases}
        unknown = wanted - known
        if unknown:
            raise SmolsightError(f"no scenario {', '.join(sorted(unknown))} in suite {suite.name}; it has {', '.join(sorted(known))}")
        cases = [c for c in cases if c.scenario in wanted]
    if limit is not None:
        if limit < 1:
            raise SmolsightError("limit must be at least 1")
        cases = cases[:limit]
    return cases


def run_suite(
    engine: Backend,
    suite: Suite,
    preset: str | None = None,
    prompt_style: str = "short",
    progress: bool = True,
    adapter_label: str | None = None,
    *,
    batch_size: int = 1,
    limit: int | None = None,
    scenarios: Iterable[str] | None = None,
    **overrides,
) -> Run:
    """Answer and score every selected case, `batch_size` cases per `ask_batch` call.

    `overrides` are decoding knobs (see `GenerationOptions`) and processing settings
    (image_size, split, video_fps, max_frames). A case whose media cannot be read, or a batch
    the backend rejects, is recorded as an error and the run goes on."""
    if prompt_style not in STYLES:
        raise SmolsightError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(STYLES)}")
    if batch_size < 1:
        raise SmolsightError("batch size must be at least 1")
    settings = {k: overrides.pop(k) for k in SETTINGS if k in overrides}
    options = resolve_options(preset, **overrides)
    cases = select_cases(suite, scenarios, limit)
    runtime = dict(getattr(engine, "runtime", {}) or {"model": type(engine).__name__})
    meta = {
        "suite": str(suite.path), "suite_name": suite.name, "model": runtime.get("model"),
        "preset": preset or DEFAULT_PRESET, "prompt_style": prompt_style, "runtime": runtime,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "label": adapter_label or f"{Path(str(runtime.get('model'))).name} {preset or DEFAULT_PRESET} {prompt_style}",
        "options": options.to_dict(), "settings": settings, "batch_size": batch_size,
        "scenarios": sorted(scenarios) if scenarios else None, "limit": limit, "smolsight": version("smolsight"),
    }  # fmt: skip
    results: list[CaseResult] = []
    bar = _progress_bar(len(cases), progress)
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        prompts = [case_prompt(case, prompt_style) for case in batch]
        outcomes = _answer(engine, [_request(c, p, options, settings) for c, p in zip(batch, prompts)])
        results += [_record(c, p, o) for c, p, o in zip(batch, prompts, outcomes)]
        bar.update(len(batch))
        bar.set_postfix_str(_accuracy_note(results))
    bar.close()
    return Run(meta, results)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="case", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def _accuracy_note(results: list[CaseResult]) -> str:
    scored = [r for r in results if r.passed is not None]
    return f"passed {sum(1 for r in scored if r.passed)}/{len(scored)}"


def _request(case: Case, prompt: str, options, settings: dict) -> Request | SmolsightError:
    """The case as a request, or the error that says why its media cannot be used."""
    from .engine import Request

    try:
        return Request.simple([str(m) for m in case.media], prompt, options=options, **settings)
    except SmolsightError as exc:
        return exc


def _answer(backend: Backend, requests: list[Request | SmolsightError]) -> list[Result | SmolsightError]:
    """Results for the good requests, errors in place of bad ones; a batch the backend rejects
    is retried one request at a time so one bad case does not sink the others."""
    good = [r for r in requests if not isinstance(r, SmolsightError)]
    try:
        answers = iter(backend.ask_batch(good) if good else [])
    except SmolsightError as exc:
        if len(good) == 1:
            answers = iter([exc])
        else:
            answers = iter(outcome for request in good for outcome in _answer(backend, [request]))
    return [r if isinstance(r, SmolsightError) else next(answers) for r in requests]


def _record(case: Case, prompt: str, outcome: Result | SmolsightError) -> CaseResult:
    base = {
        "id": case.id, "scenario": case.scenario, "task": case.task, "lang": case.lang, "prompt": prompt,
        "media": [str(m) for m in case.media], "expected": case.expected, "answer_type": case.answer_type,
    }  # fmt: skip
    if isinstance(outcome, SmolsightError):
        scored = case.answer_type != "free"  # a case that could not run fails, unless it is never scored
        return CaseResult(**base, answer="", passed=False if scored else None, score=0.0 if scored else None,
                          detail=f"error: {outcome}", latency_s=0.0, ttft_s=0.0, input_tokens=0, output_tokens=0,
                          finish_reason="error")  # fmt: skip
    verdict = score(outcome.text, case)
    raw = outcome.raw_text or outcome.text
    return CaseResult(
        **base, answer=outcome.text, passed=verdict.passed, score=verdict.value, detail=verdict.detail,
        latency_s=outcome.total_s, ttft_s=outcome.ttft_s, input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens, finish_reason=outcome.finish_reason,
        metrics=outcome.metrics or repetition_metrics(raw).to_dict(), raw_answer=raw,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Files


def write_run(run: Run, out_dir: str | Path) -> Path:
    """out_dir/results.json and out_dir/report.html; returns the results path."""
    from .report import render_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(run.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "report.html").write_text(render_run(run), encoding="utf-8")
    return path


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


# ---------------------------------------------------------------------------------------------
# Comparison


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
                     for letter, e in zip(letters, entries)},
        })  # fmt: skip
    return {
        "runs": [{"letter": letter, "label": run.label, **run.meta} for letter, run in zip(letters, runs)],
        "overall": {letter: s["overall"] for letter, s in zip(letters, summaries)},
        "scenarios": {sc: {letter: s["scenarios"].get(sc) for letter, s in zip(letters, summaries)} for sc in scenarios},
        "cases": cases,
    }


def compare_runs(runs: list[Run]) -> str:
    """Terminal tables: the runs (legend), accuracy and latency per scenario, verdicts per case."""
    data = comparison(runs)
    letters = [r["letter"] for r in data["runs"]]
    legend = [f"{r['letter']}: {r['label']} ({r.get('model')}, {r.get('preset')}, {r.get('prompt_style')}, {r.get('date')})"
              for r in data["runs"]]  # fmt: skip
    rows = [[name, *(_stats_cell(cells[letter]) for letter in letters)] for name, cells in data["scenarios"].items()]
    rows.append(["overall", *(_stats_cell(data["overall"][letter]) for letter in letters)])
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


def scenario_table(run: Run) -> str:
    """One run's per-scenario table, as `eval` prints it when done."""
    summary = run.summary()
    rows = [[name, _stats_cell(s)] for name, s in summary["scenarios"].items()]
    return format_table(["scenario", run.label], [*rows, ["overall", _stats_cell(summary["overall"])]])


def _stats_cell(s: dict | None) -> str:
    if s is None:
        return "—"
    accuracy = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.0%}"
    latency = "—" if s["mean_latency_s"] is None else f"{s['mean_latency_s']:.2f}s"
    looped = f" looped {s['looped']}" if s["looped"] else ""
    errors = f" errors {s['errors']}" if s["errors"] else ""
    return f"{s['passed']}/{s['scored']} {accuracy} {latency}{looped}{errors}"


def verdict_word(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "—"}[passed]


def _case_cell(entry: dict | None, width: int = 28) -> str:
    if entry is None:
        return "—"
    answer = " ".join(entry["answer"].split())
    return f"{verdict_word(entry['passed'])} {clip(answer, width)}"


def display_width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` terminal columns, with … where it was cut."""
    if display_width(text) <= width:
        return text
    out = ""
    for char in text:
        if display_width(out + char) > width - 1:
            break
        out += char
    return out + "…"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table whose columns line up in a terminal, Chinese text included."""
    table = [headers, *rows]
    widths = [max(display_width(row[i]) for row in table) for i in range(len(headers))]
    lines = [" | ".join(cell + " " * (w - display_width(cell)) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write_comparison(runs: list[Run], out_dir: str | Path) -> Path:
    """out_dir/compare.html and out_dir/compare.json; returns the HTML path."""
    from .report import render_comparison

    data = comparison(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    path = out / "compare.html"
    path.write_text(render_comparison(runs, data), encoding="utf-8")
    return path


def suite_summary(suite: Suite) -> str:
    """What a suite holds, per scenario: case count, tasks, answer types and languages."""
    rows = []
    for name in dict.fromkeys(c.scenario for c in suite):
        cases = [c for c in suite if c.scenario == name]
        rows.append([name, str(len(cases)), *(", ".join(sorted({str(getattr(c, key)) for c in cases})) for key in ("task", "answer_type", "lang"))])
    table = format_table(["scenario", "cases", "tasks", "answer types", "languages"], rows)
    return f"{suite.name}: {len(suite)} cases in {suite.path}\n{table}"
