"""Scorers: turn a model's free-text answer to one case into a `Score`, so that a wrong answer
cannot earn it.

Each scorer is registered by the case's `answer_type` in `SCORERS` and called as
`SCORERS[name](answer, case)`; `score(answer, case)` dispatches. `Score.value` is in [0, 1]
(higher is better) so a report can average it; `passed` is the verdict; `detail` says what was
read from the answer, so a failure can be checked by eye. Modules: `registry` (Score, SCORERS),
`answers` (echoes, spans), `negation`, `numerals` (numbers as written), `numbers`,
`directions`, `text`.

Before any scorer reads an answer, echoes of the prompt are removed (`strip_echo`): small
models often repeat the question, and "只回答一个数字" would otherwise read as the number 1.
Negation is scoped to its clause (`negation`): what an answer denies ("现场没有火", "no fire
visible", "右侧不比左侧热", "不是开") is never read as what it states.

number
    The number that answers the question (`numbers.stated_numbers`): the one attached to the
    subject ("虾苗约37只", "37 shrimp fry"), marked as a total ("共7个") or standing alone, in
    the case's dimension, not the first one ("图中有1张图像，虾苗约37只" reads 37); the final
    value of a change ("从30°C升到80°C" reads 80); "no shrimp"/"没有虾苗"/"零个" read 0. An
    answer stating several values ("37个，38个，…50个") fails. Digits, Chinese numerals, English
    words; units converted (mm, cm, m, 寸 = 1/30 m, 英寸/inch = 2.54 cm); hedges kept and
    reported ("1000多个" is 1000, hedged). Ranges and approximations are intervals ("3-5",
    "两三百", "十几", "上千") and pass only when the whole interval lies within tolerance.
    Tolerance: `{abs: x}` or `{rel: x}`; none means exact. Value is 1 on a pass, else
    max(0, 1 - |farthest error| / |expected|).
text
    Normalised exact match (NFKC so full-width becomes half-width, case folded, punctuation
    and spaces ignored) of the answer, of its part after the first colon, or of all its quoted
    text together (quotes under negation left out) against any expected string.
contains_all / contains_none
    Each expected keyword (or one of its `synonyms[keyword]`) is matched on token boundaries
    ("94.9" is not in "94.95" nor "94, 9"; "tree" finds "trees", not "street") and counts only
    where it is not denied. A keyword holding a number or code ("94.9", "P-284") is a value:
    beside other values of its kind ("94.9 … 11 kW", "NEU-505 or P-284") it does not count.
choice
    The answer equal to a choice or opening with one; else the one choice it names outside
    negation (a hedge naming several picks none); with two choices, denying one picks the other.
trend
    A direction from the words used, denied cues left out; vocabulary in `DIRECTIONS`, see
    `read_direction`.
anls
    Average normalised Levenshtein similarity (DocVQA's ANLS, threshold 0.5) against the
    best of the expected strings, over the same spans as text; passes when the similarity is
    at least 0.5.
free
    Recorded, not scored: passed and value are None.

A looped answer fails whatever it says: that rule lives in the runner (`loops_fail`).
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
