"""`smolsight eval --ray`: a suite's cases answered by Ray actors, scored as in one process.

The driver plans the run as `run_suite` does (same checks, same cases, same options); each actor
receives the plan and answers its batches with the runner's own `answer_cases`, so
the verdicts are the ones one process gives. Results come back in any order and are put in
suite order before the run is kept.
"""

from __future__ import annotations

import functools
from dataclasses import asdict

from ..evals.results import CaseResult, Run
from ..evals.runner import RunPlan, accuracy_note, answer_cases, progress_bar
from .cluster import EngineSpec
from .data import Pool, run_on_ray


def answer_indices(engine, payloads: list[dict], plan: RunPlan) -> list[dict]:
    """Inside an actor: the planned cases at these indices, answered and scored."""
    cases = [plan.cases[p["index"]] for p in payloads]
    results = answer_cases(engine, cases, plan)
    return [{"index": p["index"], "runtime": engine.runtime, "case": asdict(r)} for p, r in zip(payloads, results, strict=True)]


def run_suite_on_ray(plan: RunPlan, spec: EngineSpec, pool: Pool, progress: bool = True, label: str | None = None) -> Run:
    """The run `run_suite` would give, answered on a Ray actor pool."""
    answer = functools.partial(answer_indices, plan=plan)
    results: dict[int, CaseResult] = {}
    runtime: dict = {}
    bar = progress_bar(len(plan.cases), progress)
    for row in run_on_ray([{"index": i} for i in range(len(plan.cases))], answer, spec, pool):
        results[row["index"]] = CaseResult(**row["case"])
        runtime = row["runtime"]
        bar.update(1)
        bar.set_postfix_str(accuracy_note(list(results.values())))
    bar.close()
    meta = plan.meta(runtime, label)
    meta["ray"] = {"actors": pool.actors, "batch_size": pool.batch_size, "cpus_per_actor": pool.resources.cpus,
                   "gpus_per_actor": pool.resources.gpus}  # fmt: skip
    return Run(meta, [results[i] for i in range(len(plan.cases))])
