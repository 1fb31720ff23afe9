"""Reading an answer before scoring it: prompt echoes removed, the spans a short answer hides
in, the case's expected strings."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from ...tasks import STYLES, task_prompt

if TYPE_CHECKING:
    from ..suite import Case

_CLAUSE_END = re.compile(r"[,，。？！?!；;:：\n]|\.(?!\d)")


def prompt_echoes(case: Case) -> list[str]:
    """The prompts the model may have seen: the case's own, else the task prompt in every style."""
    if case.prompt:
        return [case.prompt]
    return [task_prompt(case.task, case.lang, style, case.subject) for style in STYLES]


def strip_echo(answer: str, case: Case) -> str:
    """The answer (NFKC-normalised) without any clause of the prompt it repeats.

    Clauses shorter than four characters are kept: they are too common to be echoes."""
    text = unicodedata.normalize("NFKC", answer)
    for prompt in prompt_echoes(case):
        for clause in _CLAUSE_END.split(unicodedata.normalize("NFKC", prompt)):
            clause = clause.strip()
            if len(clause) >= 4:
                text = re.sub(re.escape(clause), " ", text, flags=re.IGNORECASE)
    return text


_QUOTED = re.compile(r"[\"“”「」『』《》‘’]([^\"“”「」『』《》‘’]+)[\"“”「」『』《》‘’]")


def answer_spans(answer: str) -> list[str]:
    """The whole answer plus the parts a short answer usually hides in: quoted text and what
    follows the first colon ("图像上的文字是：X")."""
    spans = [answer, *_QUOTED.findall(answer)]
    _, colon, tail = unicodedata.normalize("NFKC", answer).partition(":")
    if colon and tail.strip():
        spans.append(tail)
    return spans


def expected_strings(case: Case) -> list[str]:
    return case.expected if isinstance(case.expected, list) else [case.expected]


def fmt(x: float) -> str:
    return format(round(x, 6), "f").rstrip("0").rstrip(".")
