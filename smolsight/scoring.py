"""Scorers: turn a model's free-text answer to one case into a `Score`.

Each scorer is registered by the case's `answer_type` in `SCORERS` and called as
`SCORERS[name](answer, case)`; `score(answer, case)` dispatches. `Score.value` is in [0, 1]
(higher is better) so a report can average it; `passed` is the verdict; `detail` says what was
read from the answer, so a failure can be checked by eye.

Before any scorer reads an answer, echoes of the prompt are removed (`strip_echo`): small
models often repeat the question, and "只回答一个数字" would otherwise read as the number 1.

number
    Reads one number (see `read_number` for the rule) in digits ("1,000", "14.7", "1.5万"),
    Chinese numerals ("十二", "两百", "三千五百", "零点五") or English words
    ("one hundred and twenty"), with its unit (cm, 厘米, mm, m, 个, 只 …) and any hedge
    ("约", "1000多个", "左右", "about", "more than"). A hedged answer is scored by its stated
    number and the detail says "hedged". With `unit: cm` in the case, mm/m/… are converted to
    cm and a bare number is taken as cm. Tolerance: `{abs: x}` or `{rel: x}`; none means exact.
    Value is 1 on a pass, else how close the number came: max(0, 1 - |error| / |expected|).
text
    Normalised exact match (NFKC so full-width becomes half-width, case folded, punctuation
    and spaces ignored) of the answer, or of a quoted or after-the-colon part of it, against
    any expected string.
contains_all / contains_none
    Each expected keyword counts as found when it or one of its `synonyms[keyword]` occurs
    (substring for Chinese; at a word start for Latin words, so "tree" finds "trees" but not
    "street"). Negation is not understood: "没有火" contains 火.
choice
    The answer equal to a choice, else the choice that occurs first in it.
trend
    A direction from the words used; vocabulary in `DIRECTIONS`, see `read_direction`.
anls
    Average normalised Levenshtein similarity (DocVQA's ANLS, threshold 0.5) against the
    best of the expected strings; passes when the similarity is at least 0.5.
free
    Recorded, not scored: passed and value are None.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .tasks import STYLES, task_prompt

if TYPE_CHECKING:
    from .suite import Case


@dataclass(frozen=True)
class Score:
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


# ---------------------------------------------------------------------------------------------
# Text normalisation, prompt echoes, answer spans

_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
_SPACE_BY_CJK = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")
_CLAUSE_END = re.compile(r"[,，。？！?!；;:：\n]|\.(?!\d)")


def normalise(text: str, keep_punctuation: bool = False) -> str:
    """NFKC (full-width to half-width), case folded, whitespace collapsed and dropped next to
    CJK characters (where it carries no meaning); punctuation and symbols become spaces unless
    kept."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if not keep_punctuation:
        text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _SPACE_BY_CJK.sub("", " ".join(text.split()))


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


def _expected_strings(case: Case) -> list[str]:
    return case.expected if isinstance(case.expected, list) else [case.expected]
