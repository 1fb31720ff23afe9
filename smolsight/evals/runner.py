"""The evaluation runner: every case of a suite through a model, scored, timed and kept.

`run_suite` sends each case's media and prompt to anything with the engine's
`ask_batch(requests) -> list[Result]` (the `Engine`, or a scripted stand-in), scores the
answers with `smolsight.evals.scoring` and returns a `Run`: the answers, verdicts, latencies,
token counts and repetition metrics, and the settings that produced them. `write_run` keeps a
run as results.json plus a self-contained report.html.

Loops cost accuracy: an answer whose raw text looped (the engine's `metrics["looped"]`, else
`repetition_metrics` of the raw text) is marked `looped`, and with `loops_fail=True` (the
default) a scored case with a looped answer fails whatever its text says, its detail saying so.
The engine trims a loop before scoring, so without this rule "37" said sixty times would pass as
"37". `loops_fail=False` scores looped answers as written. Each case records its `loop_rule`,
the run's meta `loops_fail`.

Prompts: a case without its own prompt, or whose prompt is one of its task's built-in prompts
(as the synthetic suite writes them), gets the task's prompt in the chosen style: `short`
asks for a short answer, `raw` is exactly what the field report sent. A case with a prompt of
its own keeps it: `short` appends the task's answer instruction (unless the prompt already
holds it), `raw` sends it unchanged. A case whose task has no built-in prompt is sent as is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engine.batches import Backend, answer_isolated, error_detail, request_or_error
from ..engine.options import DEFAULT_PRESET, PROCESSING_SETTINGS, GenerationOptions, resolve_options
from ..engine.redundancy import repetition_metrics
from ..errors import SmolsightError
from ..tasks import STYLES
from .report import render_run
from .results import LOOPS_FAIL, LOOPS_SCORED, CaseResult, Run
from .scoring import Score, score
from .suite import Case, Suite, case_prompt, select_cases

if TYPE_CHECKING:  # the engine (and torch) load only when a run starts: compare and synth stay quick
    from ..engine import Result



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
    loops_fail: bool = True,
    **overrides,
) -> Run:
    """Answer and score every selected case, `batch_size` cases per `ask_batch` call.

    `overrides` are decoding knobs (see `GenerationOptions`) and processing settings
    (`PROCESSING_SETTINGS`: image_size, split, video_fps, max_frames, max_pixels, ocr). A case
    whose media cannot be read, or a batch the backend rejects, is recorded as an error and the
    run goes on. With `loops_fail`, a looped answer to a scored case fails (see the module
    docstring)."""
    plan = plan_run(suite, preset, prompt_style, batch_size, limit, scenarios, loops_fail, **overrides)
    runtime = dict(getattr(engine, "runtime", {}) or {"model": type(engine).__name__})
    results: list[CaseResult] = []
    bar = progress_bar(len(plan.cases), progress)
    for start in range(0, len(plan.cases), batch_size):
        batch = plan.cases[start : start + batch_size]
        results += answer_cases(engine, batch, plan)
        bar.update(len(batch))
        bar.set_postfix_str(accuracy_note(results))
    bar.close()
    return Run(plan.meta(runtime, adapter_label), results)


@dataclass(frozen=True)
class RunPlan:
    """What a run asks, checked before any model loads: the cases, how each is prompted, the
    generation options and processing settings."""

    suite: Suite
    cases: list[Case]
    prompt_style: str
    preset: str
    options: GenerationOptions
    settings: dict
    batch_size: int
    scenarios: list[str] | None
    limit: int | None
    loops_fail: bool = True

    @property
    def loop_rule(self) -> str:
        return LOOPS_FAIL if self.loops_fail else LOOPS_SCORED

    def meta(self, runtime: dict, label: str | None = None) -> dict:
        """What results.json says about the run; `runtime` is the engine's (model, device…)."""
        return {
            "suite": str(self.suite.path), "suite_name": self.suite.name, "model": runtime.get("model"),
            "preset": self.preset, "prompt_style": self.prompt_style, "runtime": runtime,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "label": label or f"{Path(str(runtime.get('model'))).name} {self.preset} {self.prompt_style}",
            "options": self.options.to_dict(), "settings": self.settings, "batch_size": self.batch_size,
            "scenarios": self.scenarios, "limit": self.limit, "loops_fail": self.loops_fail,
            "smolsight": version("smolsight"),
        }  # fmt: skip


def plan_run(suite: Suite, preset: str | None = None, prompt_style: str = "short", batch_size: int = 1,
             limit: int | None = None, scenarios: Iterable[str] | None = None, loops_fail: bool = True,
             **overrides) -> RunPlan:
    """Check a run's settings and pick its cases (see `run_suite` for the arguments)."""
    if prompt_style not in STYLES:
        raise SmolsightError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(STYLES)}")
    if batch_size < 1:
        raise SmolsightError("batch size must be at least 1")
    settings = {k: overrides.pop(k) for k in PROCESSING_SETTINGS if k in overrides}
    options = resolve_options(preset, **overrides)
    cases = select_cases(suite, scenarios, limit)
    return RunPlan(suite, cases, prompt_style, preset or DEFAULT_PRESET, options, settings, batch_size,
                   sorted(scenarios) if scenarios else None, limit, loops_fail)  # fmt: skip


def answer_cases(backend: Backend, cases: list[Case], plan: RunPlan) -> list[CaseResult]:
    """The cases answered as one batch and scored; a case that cannot run is an error row."""
    prompts = [case_prompt(case, plan.prompt_style) for case in cases]
    requests = [request_or_error([str(m) for m in c.media], p, plan.options, plan.settings) for c, p in zip(cases, prompts, strict=True)]
    return [_record(c, p, o, plan.loop_rule) for c, p, o in zip(cases, prompts, answer_isolated(backend, requests), strict=True)]


def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="case", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def accuracy_note(results: list[CaseResult]) -> str:
    scored = [r for r in results if r.passed is not None]
    return f"passed {sum(1 for r in scored if r.passed)}/{len(scored)}"


def _record(case: Case, prompt: str, outcome: Result | Exception, loop_rule: str) -> CaseResult:
    base = {
        "id": case.id, "scenario": case.scenario, "task": case.task, "lang": case.lang, "prompt": prompt,
        "media": [str(m) for m in case.media], "expected": case.expected, "answer_type": case.answer_type,
        "loop_rule": loop_rule,
    }  # fmt: skip
    if isinstance(outcome, Exception):
        scored = case.answer_type != "free"  # a case that could not run fails, unless it is never scored
        return CaseResult(**base, answer="", passed=False if scored else None, score=0.0 if scored else None,
                          detail=f"error: {error_detail(outcome)}", latency_s=0.0, ttft_s=0.0, input_tokens=0, output_tokens=0,
                          finish_reason="error")  # fmt: skip
    raw = outcome.raw_text or outcome.text
    metrics = outcome.metrics or repetition_metrics(raw).to_dict()
    looped = bool(metrics.get("looped"))
    verdict = _loop_rule(score(outcome.text, case), looped, loop_rule)
    return CaseResult(
        **base, answer=outcome.text, passed=verdict.passed, score=verdict.value, detail=verdict.detail,
        latency_s=outcome.total_s, ttft_s=outcome.ttft_s, input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens, finish_reason=outcome.finish_reason,
        metrics=metrics, raw_answer=raw, looped=looped, ocr=outcome.ocr,
    )  # fmt: skip


def _loop_rule(verdict: Score, looped: bool, loop_rule: str) -> Score:
    """The verdict once the loop rule is applied: under LOOPS_FAIL a looped answer to a scored
    case fails with value 0, and the detail keeps what the scorer read."""
    if not looped or verdict.passed is None or loop_rule != LOOPS_FAIL:
        return verdict
    return Score(False, 0.0, f"looped answer: fails ({loop_rule}); the scorer read: {verdict.detail}")


def write_run(run: Run, out_dir: str | Path) -> Path:
    """out_dir/results.json and out_dir/report.html; returns the results path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(run.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "report.html").write_text(render_run(run), encoding="utf-8")
    return path
