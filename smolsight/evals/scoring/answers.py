"""Reading an answer before scoring it: prompt echoes removed, the spans a short answer hides
in, the case's expected strings."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from ...tasks import STYLES, task_prompt
from .negation import CLAUSE_MARKS, negated, negation_scopes

if TYPE_CHECKING:
    from ..suite import Case

_PROMPT_CLAUSE_END = re.compile(rf"[:：]|{CLAUSE_MARKS}")


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
        for clause in _PROMPT_CLAUSE_END.split(unicodedata.normalize("NFKC", prompt)):
            clause = clause.strip()
            if len(clause) >= 4:
                text = re.sub(re.escape(clause), " ", text, flags=re.IGNORECASE)
    return text


_QUOTED = re.compile(r"[\"“”「」『』《》‘’]([^\"“”「」『』《》‘’]+)[\"“”「」『』《》‘’]")


def answer_spans(answer: str) -> list[str]:
    """The whole answer plus the parts a short answer usually hides in: what follows the first
    colon ("图像上的文字是：X"), and its quoted text. Every quote counts, joined in order, so an
    answer quoting several candidates is judged on all of them at once, never on the one that
    happens to fit; a quote under negation ("不是“开”") is not the answer's."""
    text = unicodedata.normalize("NFKC", answer)
    scopes = negation_scopes(text)
    quoted = [m.group(1) for m in _QUOTED.finditer(text) if not negated(scopes, m.start(), m.end())]
    spans = [answer, " ".join(quoted)] if quoted else [answer]
    _, colon, tail = text.partition(":")
    if colon and tail.strip():
        spans.append(tail)
    return spans


def expected_strings(case: Case) -> list[str]:
    return case.expected if isinstance(case.expected, list) else [case.expected]


def fmt(x: float) -> str:
    return format(round(x, 6), "f").rstrip("0").rstrip(".")
