"""The `number` scorer: which number in an answer answers the case, in the case's unit, and
whether it is within tolerance.

Which numbers state the answer (`stated_numbers`):

1. Every number the answer writes (`numerals.find_numbers`: digits, Chinese and English
   numerals, ranges and approximate forms as intervals), prompt echoes removed. "None", "一只都
   没有", and "no X"/"没有X"/"无X" where X is the case's subject read as 0. A number inside a
   negation's scope is not stated: "不是37只，是38只" states 38.
2. Numbers of the case's kind only. A case with a length unit takes numbers written with a
   length unit, converted to its unit (mm, cm, m, 寸, 英寸, inch, …), or bare numbers when
   there are none, never "11 kW"; a case with another unit (°C, %, …) takes numbers in that
   unit's dimension, or bare ones; a count (task `count`, no unit) takes bare numbers and counts
   (个, 只, pieces), never "2厘米" or "30°C"; a case with neither takes any number. A lone
   一/one is an article when any other number is left ("一张图像").
3. What each number is about. It states the answer when it is attached to the subject ("37只
   虾苗", "37 shrimp fry", "虾苗约37只", "the number of shrimp fry is 37"), marked as a total
   ("共7个", "37 in total") or stands alone ("37。", "There are 37."). It is about something
   else when a word naming another thing follows it ("1张图像", "3 tanks"), its clause gives
   it a topic of its own ("尺子长20厘米"), or it counts a part: after 其中/including/of them in
   its sentence, or placed at a side ("两只在右边", "10 are near the top").
4. The numbers that state the answer; when none does, the final number and the others about the
   same thing. They must agree: an answer stating several values ("37个，38个，…50个", "37
   shrimp, 38 shrimp") is wrong, whichever of them is true.

Passing: the number, or the interval of a range or approximate form, must lie within the
tolerance window [expected − allowed, expected + allowed] (allowed 0 without a tolerance). So
"3-5个" passes for 4 with `{abs: 1}` but not for 5, nor for anything with exact counting, and
"1-1000" passes nothing; "两三百" passes for 250 with `{rel: 0.2}`. A hedge on a stated number
keeps it ("1000多个" is 1000, "about a dozen" 12) and the detail says "hedged".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import TYPE_CHECKING

from ...text import CJK, has_cjk
from .answers import fmt, strip_echo
from .negation import CLAUSE_END, negated, negation_scopes
from .numerals import CLASSIFIERS, LENGTH_UNITS, NumberReading, find_numbers, unit_dimension
from .registry import Score, scorer

if TYPE_CHECKING:
    from ..suite import Case

ANSWER = "the answer"  # what a number states when it states the case's answer
_FUNCTION_CHARS = set("在是和与或及以了呢吧啊也都还就等中里内而并且但长宽高深重大小左右上下约共")
_FILLER_ZH = re.compile(
    r"(?:图像|图片|画面|照片|图|其中|中|里面|里|内|上|共计|总共|一共|合计|总计|总数|共|数量|数目|个数|答案|结果"
    r"|大约|大概|约|估计|差不多|将近|接近|超过|至少|不到|不足|多于|少于|可能|应该|大致|是|为|有|在|的|了|这|那|张"
    r"|看到|看见|数出|数了|能|可以|我|它们|它|长度|长)*"
)
_FILLER_EN = set(
    "there are is was were i we you can could see count counted it they the a an answer total number numbers of in "
    "image picture photo approximately about around roughly nearly almost over more than at least less fewer under "
    "close to some estimated estimate maybe perhaps likely probably exactly just only and or here this that be would "
    "say visible shows show appear appears seem seems my guess all altogether overall looks like has have contains "
    "contain its what amount long length".split()
)
_TOTAL_BEFORE = re.compile(r"共|合计|总计|总数|(?<![a-z])(?:in\s+total|total|altogether|overall|in\s+all)(?![a-z])", re.I)
_TOTAL_AFTER = re.compile(r"\s*(?:in\s+total|in\s+all|altogether|total|overall)(?![a-z])", re.I)
_LINK = re.compile(r"\s*(?:的|of\s+(?:the\s+)?)?", re.I)
_PART = re.compile(r"其中|其余|另外|包括|(?<![a-z])(?:including|of\s+which|of\s+them|among\s+them)(?![a-z])", re.I)
_SIDES = r"左|右|上|下|中间|中央|中部|角落|边缘|四周|底部|顶部|两侧"
_LOCATED = re.compile(
    rf"\s*[{CLASSIFIERS}]?\s*(?:都|也|还)?(?:在|位于|分布在|集中在|聚集在|靠近|靠)\s*(?:图像|图片|画面|水箱|池子|水池|鱼缸)?的?(?:{_SIDES})"
    r"|\s*(?:[a-z]+\s+){0,3}?(?:on|at|in|near|along|towards?)\s+(?:the\s+)?"
    r"(?:left|right|top|bottom|middle|center|centre|corner|edge|upper|lower)(?![a-z])",
    re.I,
)
_SENTENCE_END = re.compile(r"[。！？；;!?\n]|\.(?!\d)")
PART = "a part"  # what a number in "其中5只在左边", "10 are near the top" is about


def subject_words(subject: str | None) -> list[str]:
    """Words that name the subject: itself, its Latin words of three letters or more when it has
    several ("shrimp", "fry"), and the first character of a Chinese one (虾 for 虾苗)."""
    if not subject:
        return []
    words = [subject.lower()]
    latin = re.findall(r"[a-z]{3,}", subject.lower())
    if len(latin) > 1:
        words += latin
    if len(subject) >= 2 and has_cjk(subject[0]):
        words.append(subject[0])
    return words


def _names(words: list[str]) -> str:
    """A regex for any of `words` (Latin ones at a word start, so "shrimps" names shrimp)."""
    return "|".join((r"(?<![a-z])" if w[0].isascii() else "") + re.escape(w) for w in sorted(words, key=len, reverse=True))


def _zeros(text: str, subject: list[str]) -> list[NumberReading]:
    """"None", "一只都没有" and, with a subject, "no shrimp", "没有虾苗", "无虾苗": each a 0."""
    patterns = [r"(?<![a-z])none(?![a-z])", rf"[一1]\s*[{CLASSIFIERS}]?\s*(?:都|也)(?:没有|没)"]
    if subject:
        names = _names(subject)
        patterns += [rf"(?:没有|没|无)(?:任何|看到|看见|发现)?\s*(?:{names})",
                     rf"(?<![a-z])(?:no|not\s+(?:a\s+single|any))\s+(?:[a-z]+\s+)?(?:{names})"]
    return [NumberReading(0, 0, None, None, m.group(), m.start(), m.end())
            for m in re.finditer("|".join(patterns), text, re.IGNORECASE)]


def _of_the_case_kind(readings: list[NumberReading], case: Case) -> list[NumberReading]:
    """The readings in the case's dimension (rule 2 of the module docstring)."""
    if case.unit:
        unit = unicodedata.normalize("NFKC", case.unit).strip().lower()
        dimension = unit_dimension(unit)
        typed = [r for r in readings if (unit_dimension(r.unit) == dimension if dimension else r.unit == unit)]
        return typed or [r for r in readings if r.unit is None]
    if case.task == "count":
        return [r for r in readings if r.unit is None or unit_dimension(r.unit) == "count"]
    return readings


def _naming_word(rest: str) -> str | None:
    """The word right after a number that names what it counts ("图像" in "1张图像", "tanks"),
    or None when a function word, punctuation or the end follows."""
    cjk = re.match(rf"[{CJK}]{{1,2}}", rest)
    if cjk:
        return None if cjk.group()[0] in _FUNCTION_CHARS else cjk.group()
    latin = re.match(r"[a-z]+", rest, re.IGNORECASE)
    return latin.group().lower() if latin and latin.group().lower() not in _FILLER_EN else None


def _topic(left: str) -> str:
    """What a clause says a number is about, before it: the words left once fillers ("图中有",
    "there are", "约") are removed; "" when nothing is left."""
    words = [w for w in re.findall(r"[a-z]+", left.lower()) if w not in _FILLER_EN]
    chinese = _FILLER_ZH.sub("", "".join(re.findall(f"[{CJK}]+", left)))
    return " ".join(words) + chinese


def _about(text: str, reading: NumberReading, left_start: int, names: str) -> str:
    """What `reading` is about: ANSWER, or a word naming something else (rule 3); `names` is
    the regex of the subject's words ("" without a subject)."""
    rest = text[reading.end :]
    rest = rest[_LINK.match(rest).end() :]
    left = text[left_start : reading.start]
    sentence = max((m.end() for m in _SENTENCE_END.finditer(text, 0, reading.start)), default=0)
    if _PART.search(text, sentence, reading.start):
        return PART
    if names and re.match(names, rest, re.IGNORECASE):
        return ANSWER
    if _TOTAL_BEFORE.search(left) or _TOTAL_AFTER.match(text, reading.end):
        return ANSWER
    if _LOCATED.match(rest):
        return PART
    named = _naming_word(rest)
    if named:
        return named
    if names and re.search(names, left, re.IGNORECASE):
        return ANSWER
    return _topic(left) or ANSWER


def _in_unit(reading: NumberReading, unit: str | None) -> NumberReading:
    """`reading` converted to `unit` when both are lengths (a bare number is in the case's unit)."""
    unit = unicodedata.normalize("NFKC", unit).strip().lower() if unit else None
    if reading.unit in LENGTH_UNITS and unit in LENGTH_UNITS:
        factor = LENGTH_UNITS[reading.unit] / LENGTH_UNITS[unit]
        return replace(reading, low=round(reading.low * factor, 9), high=round(reading.high * factor, 9))
    return reading


def stated_numbers(answer: str, case: Case) -> list[NumberReading]:
    """The numbers with which the answer states the case's answer, in the case's unit (the rule
    is the module docstring's); they disagree when the answer states several values."""
    text = strip_echo(answer, case)
    subject = subject_words(case.subject)
    zeros = _zeros(text, subject)
    readings = [r for r in find_numbers(text) if not any(z.start < r.end and r.start < z.end for z in zeros)]
    scopes = negation_scopes(text)
    readings = sorted([r for r in readings if not negated(scopes, r.start)] + zeros, key=lambda r: r.start)
    pool = _of_the_case_kind(readings, case)
    pool = [r for r in pool if not r.lone_one] or pool
    if not pool:
        return []
    names = _names(subject) if subject else ""
    groups: dict[str, list[NumberReading]] = {}
    for reading in pool:
        clause = max((m.end() for m in CLAUSE_END.finditer(text, 0, reading.start)), default=0)
        previous = max((r.end for r in readings if r.end <= reading.start), default=0)
        key = _about(text, reading, max(clause, previous), names)
        groups.setdefault(key, []).append(reading)
    chosen = groups.get(ANSWER) or next(group for group in groups.values() if pool[-1] in group)
    return [_in_unit(r, case.unit) for r in chosen]


def _values(readings: list[NumberReading]) -> list[tuple[float, float]]:
    return list(dict.fromkeys((r.low, r.high) for r in readings))


def _shown(stated: list[NumberReading]) -> NumberReading:
    """The one of several agreeing readings to report: a hedged one if any."""
    return next((r for r in stated if r.hedge), stated[0])


def read_number(answer: str, case: Case) -> NumberReading | None:
    """The number that answers the case, in the case's unit; None when the answer states no
    number or several different ones."""
    stated = stated_numbers(answer, case)
    return _shown(stated) if len(_values(stated)) == 1 else None


def _interval(low: float, high: float) -> str:
    return fmt(low) if low == high else f"{fmt(low)} to {fmt(high)}"


@scorer("number")
def score_number(answer: str, case: Case) -> Score:
    expected = float(case.expected)
    allowed = case.tolerance.allowed(expected) if case.tolerance else 0.0
    unit = f" {case.unit}" if case.unit else ""
    wanted = f"expected {fmt(expected)}{unit} ± {fmt(allowed)}"
    stated = stated_numbers(answer, case)
    if not stated:
        return Score(False, 0.0, f"no number in the answer; {wanted}")
    values = _values(stated)
    if len(values) > 1:
        listed = ", ".join(_interval(*v) for v in values)
        return Score(False, 0.0, f"states several values ({listed}{unit}); {wanted}")
    reading = _shown(stated)
    error = max(abs(reading.low - expected), abs(reading.high - expected))
    passed = expected - allowed - 1e-9 <= reading.low and reading.high <= expected + allowed + 1e-9
    value = 1.0 if passed else max(0.0, 1.0 - error / abs(expected)) if expected else 0.0
    hedge = f", hedged ({reading.hedge})" if reading.hedge else ""
    change = f", changed from {fmt(reading.changed_from)}" if reading.changed_from is not None else ""
    return Score(passed, value, f"read {_interval(reading.low, reading.high)}{unit} from {reading.span!r}{hedge}{change}; {wanted}")
