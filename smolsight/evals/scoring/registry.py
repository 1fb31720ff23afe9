"""The scorer registry: each answer type's scorer registered by name, and `score` to dispatch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..suite import Case


@dataclass(frozen=True)
class Score:
    """One answer's verdict; `passed` and `value` are None for answers recorded, not scored."""

    passed: bool | None
    value: float | None
    detail: str


Scorer = Callable[[str, "Case"], Score]
SCORERS: dict[str, Scorer] = {}


def scorer(name: str) -> Callable[[Scorer], Scorer]:
    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return register


def score(answer: str, case: Case) -> Score:
    """Score `answer` with the scorer named by `case.answer_type`."""
    return SCORERS[case.answer_type](answer, case)
