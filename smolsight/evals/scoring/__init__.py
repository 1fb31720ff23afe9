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

from . import directions, numbers, text  # noqa: F401  (each registers its scorers)
from .directions import DIRECTIONS, canonical_direction, read_direction
from .negation import negation_scopes
from .numbers import read_number, stated_numbers
from .numerals import NumberReading, chinese_number, english_number, find_numbers
from .registry import SCORERS, Score, score
from .text import anls, keyword_hits, levenshtein, pick_choice

__all__ = [
    "DIRECTIONS", "SCORERS", "NumberReading", "Score", "anls", "canonical_direction", "chinese_number",
    "english_number", "find_numbers", "keyword_hits", "levenshtein", "negation_scopes", "pick_choice",
    "read_direction", "read_number", "score", "stated_numbers",
]
