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


def _fmt(x: float) -> str:
    return format(round(x, 6), "f").rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# Numbers

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
    detail = f"read {_fmt(reading.value)}{unit} from {reading.span!r}{hedge}; expected {_fmt(expected)}{unit} ± {_fmt(allowed)}"
    return Score(passed, value, detail)


# ---------------------------------------------------------------------------------------------
# Text, keywords, choices


@scorer("text")
def score_text(answer: str, case: Case) -> Score:
    spans = {normalise(span) for span in answer_spans(strip_echo(answer, case))}
    for expected in _expected_strings(case):
        if normalise(expected) in spans:
            return Score(True, 1.0, f"matched {expected!r}")
    return Score(False, 0.0, f"{normalise(answer)!r} matches none of {_expected_strings(case)!r}")


def _occurs(needle: str, normalised_text: str) -> bool:
    needle = normalise(needle)
    starts_latin = needle[:1].isascii() and needle[:1].isalnum()
    return re.search((r"(?<![a-z0-9])" if starts_latin else "") + re.escape(needle), normalised_text) is not None


def keyword_hits(answer: str, case: Case) -> dict[str, str | None]:
    """For each expected keyword, the first of it and its synonyms found in the answer."""
    text = normalise(strip_echo(answer, case))
    return {
        keyword: next((alt for alt in [keyword, *case.synonyms.get(keyword, [])] if _occurs(alt, text)), None)
        for keyword in case.expected
    }


def _hits_detail(hits: dict[str, str | None]) -> str:
    found = ", ".join(k if hit == k else f"{k} ({hit})" for k, hit in hits.items() if hit) or "none"
    missing = ", ".join(k for k, hit in hits.items() if not hit) or "none"
    return f"found: {found}; missing: {missing}"


@scorer("contains_all")
def score_contains_all(answer: str, case: Case) -> Score:
    hits = keyword_hits(answer, case)
    found = sum(1 for hit in hits.values() if hit)
    return Score(found == len(hits), found / len(hits) if hits else 1.0, _hits_detail(hits))


@scorer("contains_none")
def score_contains_none(answer: str, case: Case) -> Score:
    hits = keyword_hits(answer, case)
    found = sum(1 for hit in hits.values() if hit)
    return Score(found == 0, 1.0 - found / len(hits) if hits else 1.0, _hits_detail(hits))


def pick_choice(answer: str, choices: list[str]) -> str | None:
    """The choice the answer names: the one it equals, else the one it names first. A one-letter
    choice must match in case and stand alone, so the article "a" is not choice "A"."""
    text = unicodedata.normalize("NFKC", answer).strip()
    for choice in choices:
        if normalise(choice) == normalise(text):
            return choice
    positions = {}
    for choice in choices:
        pattern = re.escape(unicodedata.normalize("NFKC", choice).strip())
        if choice.isascii():
            pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
        found = re.search(pattern, text, 0 if len(choice) == 1 else re.IGNORECASE)
        if found:
            positions[choice] = found.start()
    return min(positions, key=positions.__getitem__) if positions else None


@scorer("choice")
def score_choice(answer: str, case: Case) -> Score:
    picked = pick_choice(strip_echo(answer, case), case.choices)
    if picked is None:
        return Score(False, 0.0, f"names none of {case.choices!r}")
    passed = normalise(picked) == normalise(case.expected)
    return Score(passed, float(passed), f"picked {picked!r}; expected {case.expected!r}")


# ---------------------------------------------------------------------------------------------
# Directions (trend)
#
# Vocabulary: `<side>_hotter` for a field that is hotter towards a side, `moves_<side>` for an
# object moving towards a side, side one of left, right, top, bottom. Aliases: `<side>_colder`
# (the opposite side is hotter), `<a>_to_<b>_rising` (= b_hotter), `<a>_to_<b>_falling`
# (= a_hotter), `<a>_to_<b>` (= moves_b).
#
# Cue words, zh and en, each one vote:
# - a gradient: "从左到右…升高/降低", "自上而下", "increases from left to right", "from top to
#   bottom … decreases": the last rise or fall word in its sentence decides; for motion the
#   gradient alone says where the object goes ("从左向右移动", "moves from left to right");
# - a side and a quality in one clause, either order: "右侧温度更高", "左侧较冷", "左高右低",
#   "the right side is hotter", "hotter on the right", "lower on the left" (red/红 count as hot,
#   blue/蓝 as cold: the jet colormap's ends);
# - motion towards a side: "向右移动", "到右边", "to the right", "rightwards", "moves up".
# The direction with the most votes is the answer's; a tie reads as no direction.

SIDES = ("left", "right", "top", "bottom")
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
DIRECTIONS = tuple(f"{side}_hotter" for side in SIDES) + tuple(f"moves_{side}" for side in SIDES)


def _direction_aliases() -> dict[str, str]:
    aliases = {direction: direction for direction in DIRECTIONS}
    for side in SIDES:
        other = _OPPOSITE[side]
        aliases[f"{other}_colder"] = f"{side}_hotter"
        aliases[f"{other}_to_{side}_rising"] = f"{side}_hotter"
        aliases[f"{side}_to_{other}_falling"] = f"{side}_hotter"
        aliases[f"{other}_to_{side}"] = f"moves_{side}"
    return aliases


DIRECTION_ALIASES = _direction_aliases()


def canonical_direction(name: str) -> str:
    """The vocabulary's name for a direction or alias; ValueError names the known ones."""
    try:
        return DIRECTION_ALIASES[name]
    except KeyError:
        raise ValueError(f"unknown direction {name!r}; use one of {', '.join(sorted(DIRECTION_ALIASES))}") from None


_SIDE_NAMES = {"左": "left", "右": "right", "上": "top", "下": "bottom", "顶": "top", "底": "bottom",
               "left": "left", "right": "right", "top": "top", "bottom": "bottom", "up": "top", "down": "bottom",
               "upper": "top", "lower": "bottom"}
_WORDS = {  # zh characters, en words
    "hot": ("高|热|暖|烫|红", r"hott?(?:er|est)?|warm(?:er|est)?|high(?:er|est)?|red"),
    "cold": ("低|冷|凉|蓝", r"cold(?:er|est)?|cool(?:er|est)?|low(?:er|est)?|blue"),
    "rise": ("升|增|高|热|暖|大",
             r"increas\w*|ris(?:e|es|ing)|rose|grow\w*|climb\w*|hott?(?:er|est)?|warm(?:er|est)?|high(?:er|est)?"),
    "fall": ("降|减|低|冷|凉|小", r"decreas\w*|fall\w*|fell|drop\w*|declin\w*|cold(?:er|est)?|cool\w*|low(?:er|est)?"),
}


def _words(kind: str) -> str:
    zh, en = _WORDS[kind]
    return rf"(?:{zh}|(?<![a-z])(?:{en})(?![a-z]))"


_ZH_SIDE = r"[左右上下](?:半部分|半部|半边|侧|边|方|部|端|面)|顶部|顶端|底部|底端"
_EN_SIDE = r"(?<![a-z])(?:left|right|top|bottom|(?:upper|lower) (?:part|half|side|edge|region|area))(?![a-z])"
_SIDE = rf"(?:{_ZH_SIDE}|{_EN_SIDE})"
_QUALITY = rf"(?:{_words('hot')}|{_words('cold')})"
_GAP = r"[^,;:.!?。；、\n]{0,24}?"
_SIDE_QUALITY = re.compile(
    rf"({_SIDE}){_GAP}({_QUALITY})|({_QUALITY}){_GAP}({_SIDE})|([左右上下])({_QUALITY})", re.IGNORECASE
)
_GRADIENT = re.compile(
    r"(?:从|由|自)?([左右上下顶底])(?:侧|边|方|部|端)?(?:到|至|向|往|而)([左右上下顶底])(?:侧|边|方|部|端)?"
    r"|(?<![a-z])(?:from\s+)?(?:the\s+)?(left|right|top|bottom)(?:\s+side|\s+edge)?(?:\s+|-)to(?:\s+|-)"
    r"(?:the\s+)?(left|right|top|bottom)(?![a-z])",
    re.IGNORECASE,
)
_TOWARDS = re.compile(
    r"(?:向|往|朝|到|至)([左右上下顶底])"
    r"|(?<![a-z])(?:to(?:wards?)?|toward)\s+(?:the\s+)?(left|right|top|bottom)(?![a-z])"
    r"|(?<![a-z])(left|right|up|down)wards?(?![a-z])"
    r"|(?<![a-z])(?:mov\w*|go(?:es|ing)?|went|travel\w*|slid\w*|drift\w*|shift\w*)\s+(left|right|up|down)(?![a-z])",
    re.IGNORECASE,
)
_RISE_OR_FALL = re.compile(rf"({_words('rise')})|{_words('fall')}", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;。！？；\n]")


def _side(word: str) -> str:
    return _SIDE_NAMES.get(word.lower()) or _SIDE_NAMES.get(word[0]) or _SIDE_NAMES[word.split()[0].lower()]


def _gradient_cues(text: str, family: str) -> list[tuple[str, str]]:
    cues = []
    for m in _GRADIENT.finditer(text):
        start_word, end_word = [g for g in m.groups() if g]
        start, end = _side(start_word), _side(end_word)
        if family == "moves":
            cues.append((f"moves_{end}", m.group()))
            continue
        begin = max((e.end() for e in _SENTENCE_END.finditer(text, 0, m.start())), default=0)
        stop = next((e.start() for e in _SENTENCE_END.finditer(text, m.end())), len(text))
        rest = text[begin : m.start()] + " " + text[m.end() : stop]
        changes = list(_RISE_OR_FALL.finditer(rest))
        if changes:
            hotter = end if changes[-1].group(1) else start
            cues.append((f"{hotter}_hotter", text[begin:stop].strip(" ,")))
    return cues


def _side_cues(text: str) -> list[tuple[str, str]]:
    cues = []
    for m in _SIDE_QUALITY.finditer(text):
        g = m.groups()
        side, quality = next((s, q) for s, q in ((g[0], g[1]), (g[3], g[2]), (g[4], g[5])) if s)
        hot = re.fullmatch(_words("hot"), quality, re.IGNORECASE) is not None
        cues.append((f"{_side(side) if hot else _OPPOSITE[_side(side)]}_hotter", m.group()))
    return cues


def _motion_cues(text: str) -> list[tuple[str, str]]:
    return [(f"moves_{_side(next(g for g in m.groups() if g))}", m.group()) for m in _TOWARDS.finditer(text)]


def read_direction(answer: str, family: str = "hotter") -> tuple[str | None, list[tuple[str, str]]]:
    """The direction an answer states in `family` ("hotter" or "moves"), with the cues read
    as (direction, text) pairs. Gradients are read first and blanked out, so "from left to
    right" is not also read as a mention of the left side."""
    text = normalise(answer, keep_punctuation=True)
    cues = _gradient_cues(text, family)
    text = _GRADIENT.sub(lambda m: " " * len(m.group()), text)
    cues += _side_cues(text) if family == "hotter" else _motion_cues(text)
    votes = Counter(direction for direction, _ in cues).most_common(2)
    if not votes or (len(votes) == 2 and votes[0][1] == votes[1][1]):
        return None, cues
    return votes[0][0], cues


@scorer("trend")
def score_trend(answer: str, case: Case) -> Score:
    expected = canonical_direction(case.expected)
    direction, cues = read_direction(strip_echo(answer, case), "moves" if expected.startswith("moves") else "hotter")
    read = "; ".join(f"{d} ({text.strip()!r})" for d, text in cues) or "no cue words"
    passed = direction == expected
    return Score(passed, float(passed), f"read {direction or 'no direction'} from {read}; expected {expected}")


# ---------------------------------------------------------------------------------------------
# ANLS, free


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, references: list[str], threshold: float = 0.5) -> float:
    """ANLS for one question: the best over references of 1 - normalised edit distance, or 0
    where that distance reaches `threshold` (an answer that far off is wrong, not close)."""
    pred = normalise(prediction, keep_punctuation=True)
    best = 0.0
    for reference in references:
        ref = normalise(reference, keep_punctuation=True)
        distance = levenshtein(pred, ref) / max(len(pred), len(ref), 1)
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


@scorer("anls")
def score_anls(answer: str, case: Case) -> Score:
    spans = answer_spans(strip_echo(answer, case))
    best_value, best_span = max((anls(span, _expected_strings(case)), span) for span in spans)
    return Score(best_value >= 0.5, best_value, f"ANLS {best_value:.3f} for {best_span.strip()!r}")


@scorer("free")
def score_free(answer: str, case: Case) -> Score:
    return Score(None, None, "recorded, not scored")
