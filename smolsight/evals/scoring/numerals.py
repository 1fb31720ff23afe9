"""Numbers as written: digits, Chinese numerals, English number words, their units and hedges,
ranges and approximate forms, each read as an interval. Which of them answers a case is decided
in `numbers`.

- Digits: "1,000", "14.7", "1.5万", "3k", "-3". Digits glued to letters are part of a word or
  code ("P-284", "H2O", "3D"), not numbers; nor are ordinals and labels ("第3", "3rd", "No. 3",
  "#3", "3号").
- Chinese numerals: "十二", "两百五", "三千五百", "零点五", "二〇二五". A numeral must stand as
  one: followed by a measure word, a unit, a hedge, a range word or the end of the Chinese
  text. Inside a word it is not a number: 零件 "part", 一些 "some", 两侧 "both sides", 十分
  "very", 五颜六色, 统一, 唯一.
- English words: "twelve", "one hundred and twenty", "a dozen", "one point five".
- Ranges: "3-5个", "3~5", "3到5", "3至5", "3或4", "12 to 15", "12 or 13", "between 12 and
  15" read as [low, high].
- Approximate forms read as the interval they mean: 七八个 [7, 8], 两三百 [200, 300], 三四十
  [30, 40], 十七八 [17, 18], 十几 [11, 19], 二十几 [21, 29], 几十/数十 [20, 90], 几百/数百
  [200, 900], 几个 [2, 9], 上百 [100, 999], 上千 [1000, 9999], 上万 [10000, 99999], 成百上千
  [100, 9999], 成千上万 [1000, 99999], "dozens" [24, 99], "hundreds" [200, 999], "thousands"
  [2000, 9999].
- A change reads as its final value: "温度从30°C升到80°C", "rose from 30 to 80" read 80.
- Hedges on a stated number keep the number and are recorded: 约/大约/左右/多/余/来/以上, about,
  around, more than, "or so", "+" ("1000多个" is 1000, hedged; "about a dozen" is 12, hedged).
- Units are recorded as written; `LENGTH_UNITS` gives lengths in metres. 寸 is the Chinese
  inch (市寸, 1/30 m, 3.33 cm) and 尺 the Chinese foot (1/3 m); the inch is 英寸/吋/inch
  (2.54 cm).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ...text import CJK

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_LARGE_UNITS = {"万": 10**4, "亿": 10**8}
_CN_PLACES = _CN_SMALL_UNITS | _CN_LARGE_UNITS
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
             "m": 1.0, "米": 1.0, "公尺": 1.0, "km": 1e3, "千米": 1e3, "公里": 1e3,
             "寸": 1 / 30, "市寸": 1 / 30, "尺": 1 / 3, "市尺": 1 / 3,
             "英寸": 0.0254, "吋": 0.0254, "inch": 0.0254, "inches": 0.0254,
             "英尺": 0.3048, "ft": 0.3048, "foot": 0.3048, "feet": 0.3048}
    for prefix, factor in {"milli": 1e-3, "centi": 1e-2, "deci": 0.1, "": 1.0, "kilo": 1e3}.items():
        for spelling in ("meter", "metre", "meters", "metres"):
            units[prefix + spelling] = factor
    return units


LENGTH_UNITS = _length_units()
CLASSIFIERS = "个只条尾颗粒头根块片张件枚位名辆台座棵朵把支间层排行列匹双对套盏部份种类处组堆群株道幅扇栋幢户家本册节段圈团束串批人"
COUNT_UNITS = (*CLASSIFIERS, "pieces", "piece", "pcs", "items", "item", "objects", "object")
TEMPERATURE_UNITS = ("°c", "摄氏度", "度", "degrees celsius", "degree celsius", "degrees", "degree")
OTHER_UNITS = ("%", "percent", "倍", "岁", "年", "天", "小时", "分钟", "秒", "元", "kw", "kg", "千克", "公斤", "克", "吨", "升",
               "times", "years", "hours", "minutes", "seconds")
UNIT_DIMENSIONS = ({u: "length" for u in LENGTH_UNITS} | {u: "count" for u in COUNT_UNITS}
                   | {u: "temperature" for u in TEMPERATURE_UNITS} | {u: "other" for u in OTHER_UNITS})


def unit_dimension(unit: str | None) -> str | None:
    """"length", "count", "temperature" or "other" for a unit we read; None for none or one we don't."""
    return UNIT_DIMENSIONS.get(unicodedata.normalize("NFKC", unit).strip().lower()) if unit else None


def _alternation(words) -> str:
    """A regex alternation, longest first; Latin words must end at a word end ("m" not "more")."""
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w) + ("(?![a-z])" if w.isascii() else "") for w in ordered)


_UNIT = _alternation(UNIT_DIMENSIONS)
_DIGITS = re.compile(
    rf"(?:(?<![a-z0-9])-)?(?<![a-z0-9])(?<!\d\.)(?<![a-z]-)(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?"
    rf"(?:\s*({_alternation(_DIGIT_MULTIPLIERS)}))?",
    re.IGNORECASE,
)
# What may follow a Chinese numeral that stands as a number.
_CN_FOLLOWER = re.compile(rf"\s*(?:$|[^{CJK}]|{_UNIT}|多|余|来|几|左右|上下|以上|以下|到|至|或|和|与|及|、)", re.IGNORECASE)
_CN_NUMBER = re.compile(r"(?<![统唯])[零〇一二两三四五六七八九十][零〇一二两三四五六七八九十百千万亿]*(?:点[零〇一二三四五六七八九]+)?")
_NUMERAL_WORDS = re.compile(r"零件|零部件|零星|零散|零售|零食|零钱|零碎")
_CN_APPROX = re.compile(
    rf"(?P<tens>[一二两三四五六七八九]?十)几"
    rf"|(?:几|数)(?P<few>[十百千万])"
    rf"|几(?=\s*(?:{_alternation(COUNT_UNITS)}))"
    rf"|上(?P<up>[百千万])"
    rf"|成百上千|成千上万"
    rf"|(?<![零〇一二两三四五六七八九十百千万亿点])(?P<pre>[一二两三四五六七八九]?十)?"
    rf"(?P<a>[一二两三四五六七八])(?P<b>[二三四五六七八九])(?![零〇一二两三四五六七八九])(?P<place>[十百千万])?"
)
_EN_APPROX = re.compile(r"(?<![a-z])(dozens|hundreds|thousands)(?![a-z])", re.IGNORECASE)
_EN_APPROX_RANGES = {"dozens": (24, 99), "hundreds": (200, 999), "thousands": (2000, 9999)}
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
    rf"\s*(?P<loose>多|余|几|来)?\s*(?P<unit>{_UNIT})?"
    r"(?:\s*(?P<tail>左右|上下|以上|以下|多|or so|or more|or less|\+|-?ish(?![a-z])))?",
    re.IGNORECASE,
)
_ORDINAL_SUFFIX = re.compile(r"(?:st|nd|rd|th)(?![a-z])|\s*号", re.IGNORECASE)
_ORDINAL_PREFIX = re.compile(r"(?:第|编号|(?<![a-z])no\.|#)\s*$", re.IGNORECASE)
_RANGE_WORD = re.compile(r"\s*(?:-|–|—|~|〜|到|至|或者|或|to|or)\s*", re.IGNORECASE)
_BETWEEN = re.compile(r"(?<![a-z])between\s*$", re.IGNORECASE)
_CHANGE_ZH = re.compile(r"\s*(?:逐渐|逐步|慢慢|一直)?(?:升高|上升|增加|增长|下降|降低|减少|变化|升|增|涨|降|减|跌|变)\s*(?:到|至|为|成)\s*")
_CHANGE_EN = re.compile(
    r"(?<![a-z])(?:ris(?:e|es|ing|en)|rose|increas\w*|decreas\w*|fall\w*|fell|drop\w*|climb\w*|grow\w*|grew"
    r"|chang\w*|jump\w*|went\s+(?:up|down)|go(?:es)?\s+(?:up|down))[^,;.!?]*?from\s*$",
    re.IGNORECASE,
)


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


def _approximate(m: re.Match) -> tuple[float, float, str] | None:
    """(low, high, the word that makes it approximate) of an approximate Chinese form, or None
    for a pair of digits that is no range (二五)."""
    text = m.group()
    if m.group("tens"):
        base = chinese_number(m.group("tens"))
        return base + 1, base + 9, "几"
    if m.group("few"):
        place = _CN_PLACES[m.group("few")]
        return 2 * place, 9 * place, text[0]
    if text == "几":
        return 2, 9, "几"
    if m.group("up"):
        place = _CN_PLACES[m.group("up")]
        return place, 10 * place - 1, "上"
    if text in ("成百上千", "成千上万"):
        return (100, 9999, text) if text == "成百上千" else (1000, 99999, text)
    a, b = _CN_DIGITS[m.group("a")], _CN_DIGITS[m.group("b")]
    if not 1 <= b - a <= 2:
        return None
    place = _CN_PLACES[m.group("place")] if m.group("place") else 1
    base = chinese_number(m.group("pre")) if m.group("pre") and not m.group("place") else 0
    return base + a * place, base + b * place, m.group("a") + m.group("b")


@dataclass(frozen=True)
class NumberReading:
    """One number written in an answer, as the interval [low, high] it states (low == high for
    a plain number), with the unit and hedge written with it and where it was read from.
    `changed_from` is the start of a stated change ("从30升到80" reads 80, changed from 30)."""

    low: float
    high: float
    unit: str | None
    hedge: str | None
    span: str
    start: int
    end: int
    lone_one: bool = False  # a bare 一/one: usually an article (一张图像, one of), not an answer
    changed_from: float | None = None

    @property
    def value(self) -> float:
        """The number, or the middle of a range."""
        return (self.low + self.high) / 2

    @property
    def is_range(self) -> bool:
        return self.low != self.high


def _reading(text: str, start: int, end: int, low: float, high: float | None = None,
             hedge: str | None = None) -> NumberReading | None:
    """The mention at text[start:end] with the unit and hedges around it; None for ordinals and
    labels (第3, 3rd, No. 3, #3, 3号) and digits glued to letters."""
    if _ORDINAL_PREFIX.search(text[max(0, start - 8) : start]) or _ORDINAL_SUFFIX.match(text, end):
        return None
    after = _AFTER.match(text, end)
    if not after.group("unit") and re.match(r"[a-z]", text[end : end + 1], re.IGNORECASE):
        return None  # 3D, 4x: part of a word
    before = _HEDGE_BEFORE.search(text[max(0, start - 16) : start])
    hedges = [hedge, before.group("word") if before else None, after.group("loose"), after.group("tail")]
    unit = after.group("unit")
    lone_one = text[start:end].strip().lower() in ("一", "one")
    return NumberReading(low, low if high is None else high, unit.lower() if unit else None,
                         next((h for h in hedges if h), None), text[start : after.end()].strip(), start,
                         after.end(), lone_one)


def _mentions(text: str) -> list[NumberReading]:
    """Every single number and approximate form in `text`, in order, none overlapping."""
    found: list[NumberReading | None] = []
    taken: list[tuple[int, int]] = []

    def free(m: re.Match) -> bool:
        return all(m.end() <= a or b <= m.start() for a, b in taken)

    for m in _CN_APPROX.finditer(text):
        approximate = _approximate(m)
        if approximate and _CN_FOLLOWER.match(text, m.end()):
            low, high, hedge = approximate
            found.append(_reading(text, m.start(), m.end(), low, high, hedge))
            taken.append(m.span())
    for m in _EN_APPROX.finditer(text):
        found.append(_reading(text, m.start(), m.end(), *_EN_APPROX_RANGES[m.group().lower()], hedge=m.group()))
        taken.append(m.span())
    for m in _DIGITS.finditer(text):
        if free(m):
            value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
            value *= _DIGIT_MULTIPLIERS[m.group(3).lower()] if m.group(3) else 1.0
            found.append(_reading(text, m.start(), m.end(), -value if m.group().startswith("-") else value))
    for m in _CN_NUMBER.finditer(text):
        if free(m) and _CN_FOLLOWER.match(text, m.end()) and not _NUMERAL_WORDS.match(text, m.start()):
            found.append(_reading(text, m.start(), m.end(), chinese_number(m.group())))
    for m in _EN_NUMBER.finditer(text):
        if free(m):
            found.append(_reading(text, m.start(), m.end(), english_number(m.group())))
    return sorted((r for r in found if r), key=lambda r: r.start)


def _joined(text: str, first: NumberReading, second: NumberReading) -> NumberReading | None:
    """`first` and `second` read as one range or change, when the words between them say so."""
    between = text[first.end : second.start]
    unit = second.unit or first.unit
    if _CHANGE_ZH.fullmatch(between) or (between.strip().lower() == "to" and _CHANGE_EN.search(text[: first.start])):
        return NumberReading(second.low, second.high, second.unit, second.hedge, second.span, second.start,
                             second.end, changed_from=first.value)
    if first.is_range or second.is_range or first.unit and second.unit and first.unit != second.unit:
        return None
    if _RANGE_WORD.fullmatch(between) or (between.strip().lower() == "and" and _BETWEEN.search(text[: first.start])):
        return NumberReading(min(first.low, second.low), max(first.high, second.high), unit,
                             first.hedge or second.hedge, text[first.start : second.end].strip(), first.start,
                             second.end)
    return None


def find_numbers(text: str) -> list[NumberReading]:
    """Every number written in `text`, in order: ranges and changes joined into one reading."""
    readings: list[NumberReading] = []
    for reading in _mentions(text):
        joined = _joined(text, readings[-1], reading) if readings else None
        if joined:
            readings[-1] = joined
        else:
            readings.append(reading)
    return readings
