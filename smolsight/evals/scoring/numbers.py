"""Numbers in answers: digits, Chinese numerals, English words, units and hedges; the `number` scorer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .answers import fmt, strip_echo
from .registry import Score, scorer

if TYPE_CHECKING:
    from ..suite import Case


_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_LARGE_UNITS = {"万": 10**4, "亿": 10**8}
_EN_ONES = ("zero one two three four five six seven eight nine "
            "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen")
_EN_SMALL = {word: i for i, word in enumerate(_EN_ONES.split())} | {
    word: 10 * i for i, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)
}
_EN_SCALES = {"hundred": 100, "dozen": 12, "thousand": 10**3, "million": 10**6, "billion": 10**9}
_DIGIT_MULTIPLIERS = {"万": 1e4, "亿": 1e8, "千": 1e3, "百": 1e2, "k": 1e3} | {w: float(v) for w, v in _EN_SCALES.items()}


def _length_units() -> dict[str, float]:
    """Every spelling of a length unit, in metres."""
    units = {"mm": 1e-3, "毫米": 1e-3, "cm": 1e-2, "厘米": 1e-2, "公分": 1e-2, "dm": 0.1, "分米": 0.1,
             "m": 1.0, "米": 1.0, "公尺": 1.0, "km": 1e3, "千米": 1e3, "公里": 1e3}
    for prefix, factor in {"milli": 1e-3, "centi": 1e-2, "deci": 0.1, "": 1.0, "kilo": 1e3}.items():
        for spelling in ("meter", "metre", "meters", "metres"):
            units[prefix + spelling] = factor
    return units


LENGTH_UNITS = _length_units()
COUNT_UNITS = ("个", "只", "条", "尾", "颗", "粒", "头", "根", "块", "片", "张", "件", "枚", "位", "名", "辆", "台",
               "pieces", "piece", "pcs", "items", "item", "objects", "object")


def _alternation(words) -> str:
    """A regex alternation, longest first; Latin words must end at a word end ("m" not "more")."""
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w) + ("(?![a-z])" if w.isascii() else "") for w in ordered)


_DIGITS = re.compile(
    rf"(?:(?<![a-z0-9])-)?(?<![a-z0-9.,])(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?(?:\s*({_alternation(_DIGIT_MULTIPLIERS)}))?",
    re.IGNORECASE,
)
_CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十][零〇一二两三四五六七八九十百千万亿]*(?:点[零〇一二三四五六七八九]+)?")
_EN_WORD = _alternation([*_EN_SMALL, *_EN_SCALES])
_EN_NUMBER = re.compile(
    rf"(?<![a-z])(?:an?\s+(?=(?:hundred|thousand|million|billion|dozen)(?![a-z])))?(?:{_EN_WORD})"
    rf"(?:(?:\s+|-)(?:and\s+)?(?:{_EN_WORD}))*(?:\s+point(?:\s+(?:{_alternation(_EN_ONES.split()[:10])}))+)?",
    re.IGNORECASE,
)
_HEDGE_BEFORE = re.compile(
    r"(?P<word>(?<![a-z])(?:about|around|approximately|approx\.?|roughly|nearly|almost|over|more than|at least"
    r"|less than|under|fewer than|close to|some|estimated|maybe|perhaps)"
    r"|大约|大概|大致|约|差不多|将近|接近|近|超过|多于|至少|不到|不足|少于|估计|可能|~|≈)"
    r"\s*(?:是|为|有|在|is|of)?\s*$",
    re.IGNORECASE,
)
_AFTER = re.compile(
    rf"\s*(?P<loose>多|余|几|来)?\s*(?P<unit>{_alternation([*LENGTH_UNITS, *COUNT_UNITS])})?"
    r"(?:\s*(?P<tail>左右|上下|以上|以下|多|or so|or more|or less|\+|-?ish(?![a-z])))?",
    re.IGNORECASE,
)
_ORDINAL_SUFFIX = re.compile(r"(?:st|nd|rd|th)(?![a-z])", re.IGNORECASE)


def chinese_number(text: str) -> float:
    """Value of a Chinese numeral: 十二 12, 一百零五 105, 两百五 250, 三千五百 3500, 一万五 15000,
    零点五 0.5, 二〇二五 2025 (digits without place words are read one by one)."""
    integer, _, fraction = text.partition("点")
    value = float(_chinese_integer(integer)) if integer else 0.0
    if fraction:
        value += float("0." + "".join(str(_CN_DIGITS[c]) for c in fraction))
    return value


def _chinese_integer(text: str) -> int:
    if all(c in _CN_DIGITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total = section = digit = 0
    place = 1  # place value of the last place word, for the spoken short form 三千五 = 3500
    after_zero = False
    for c in text:
        if c in "零〇":
            digit, after_zero = 0, True
        elif c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        elif c in _CN_SMALL_UNITS:
            place = _CN_SMALL_UNITS[c]
            section += (digit or 1) * place
            digit, after_zero = 0, False
        else:
            place = _CN_LARGE_UNITS[c]
            total += (section + digit or 1) * place
            section = digit = 0
            after_zero = False
    if digit and place >= 100 and not after_zero:
        digit *= place // 10
    return total + section + digit


def english_number(text: str) -> float:
    """Value of an English number phrase: "twelve", "one hundred and twenty", "a dozen",
    "two thousand three hundred", "one point five"."""
    words = re.findall(r"[a-z]+", text.lower())
    if "point" in words:
        cut = words.index("point")
        words, fraction = words[:cut], words[cut + 1 :]
    else:
        fraction = []
    total = current = 0
    for word in words:
        if word in _EN_SMALL:
            current += _EN_SMALL[word]
        elif word in ("hundred", "dozen"):
            current = (current or 1) * _EN_SCALES[word]
        elif word in _EN_SCALES:
            total += (current or 1) * _EN_SCALES[word]
            current = 0
    value = float(total + current)
    if fraction:
        value += float("0." + "".join(str(_EN_SMALL[w]) for w in fraction))
    return value


@dataclass(frozen=True)
class NumberReading:
    """One number written in an answer: its value (in the case's unit once read by
    `read_number`), the unit and hedge written with it, and the text it was read from."""

    value: float
    unit: str | None
    hedge: str | None
    span: str
    start: int
    lone_one: bool = False  # a bare 一/one: usually an article (一张图像, one of), not an answer


def _reading(text: str, start: int, end: int, value: float) -> NumberReading | None:
    """The mention at text[start:end] with the unit and hedges around it; None for ordinals."""
    if text[:start].endswith("第") or _ORDINAL_SUFFIX.match(text, end):
        return None
    after = _AFTER.match(text, end)
    before = _HEDGE_BEFORE.search(text[max(0, start - 16) : start])
    hedges = [before.group("word") if before else None, after.group("loose"), after.group("tail")]
    unit = after.group("unit")
    lone_one = text[start:end].strip().lower() in ("一", "one")
    return NumberReading(value, unit.lower() if unit else None, next((h for h in hedges if h), None),
                         text[start : after.end()].strip(), start, lone_one)


def find_numbers(text: str) -> list[NumberReading]:
    """Every number written in `text`, in order."""
    found: list[NumberReading | None] = []
    for m in _DIGITS.finditer(text):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        value *= _DIGIT_MULTIPLIERS[m.group(3).lower()] if m.group(3) else 1.0
        found.append(_reading(text, m.start(), m.end(), -value if m.group().startswith("-") else value))
    for m in _CN_NUMBER.finditer(text):
        if m.group() != "十" or not text.startswith("分", m.end()):  # 十分 means "very"
            found.append(_reading(text, m.start(), m.end(), chinese_number(m.group())))
    for m in _EN_NUMBER.finditer(text):
        found.append(_reading(text, m.start(), m.end(), english_number(m.group())))
    return sorted((r for r in found if r), key=lambda r: r.start)


def _convert(value: float, unit: str | None, target: str | None) -> float:
    if unit in LENGTH_UNITS and target in LENGTH_UNITS:
        return round(value * LENGTH_UNITS[unit] / LENGTH_UNITS[target], 9)
    return value


def read_number(answer: str, case: Case) -> NumberReading | None:
    """The number that answers the case, in the case's unit, or None.

    The rule: remove prompt echoes; when the case has a length unit, consider only numbers
    written with a length unit if there are any; skip a lone 一/one if any other number is
    left; take the first. Ordinals (第一, 1st) are never the answer; a range ("10-12个") reads
    as its first number."""
    readings = find_numbers(strip_echo(answer, case))
    if case.unit in LENGTH_UNITS:
        readings = [r for r in readings if r.unit in LENGTH_UNITS] or readings
    readings = [r for r in readings if not r.lone_one] or readings
    if not readings:
        return None
    first = readings[0]
    return NumberReading(_convert(first.value, first.unit, case.unit), first.unit, first.hedge, first.span, first.start)


@scorer("number")
def score_number(answer: str, case: Case) -> Score:
    reading = read_number(answer, case)
    if reading is None:
        return Score(False, 0.0, "no number in the answer")
    expected = float(case.expected)
    allowed = case.tolerance.allowed(expected) if case.tolerance else 0.0
    error = abs(reading.value - expected)
    passed = error <= allowed + 1e-9
    value = 1.0 if passed else max(0.0, 1.0 - error / abs(expected)) if expected else 0.0
    unit = f" {case.unit}" if case.unit else ""
    hedge = f", hedged ({reading.hedge})" if reading.hedge else ""
    detail = f"read {fmt(reading.value)}{unit} from {reading.span!r}{hedge}; expected {fmt(expected)}{unit} ± {fmt(allowed)}"
    return Score(passed, value, detail)
