"""Directions in answers: which side is hotter, which way something moves; the `trend` scorer."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from ...text import normalise
from .answers import strip_echo
from .negation import Scope, negated, negation_scopes
from .registry import Score, scorer

if TYPE_CHECKING:
    from ..suite import Case


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
# - motion towards a side: "向右移动", "到右边", "to the right", "rightwards", "moves up", and
#   each side joined on ("moves left and right" votes for both, a tie).
# A cue under negation is no vote ("右侧不比左侧热", "the dot does not move left", "温度没有升高"):
# a denial says what is not so, not what is. The direction with the most votes is the answer's;
# a tie reads as no direction.

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
    r"|(?<![a-z])(?:mov\w*|go(?:es|ing)?|went|travel\w*|slid\w*|drift\w*|shift\w*)\s+(left|right|up|down)(?![a-z])"
    r"|(?<![a-z])(?:and|or)\s+(?:then\s+)?(left|right|up|down)(?![a-z])",
    re.IGNORECASE,
)
_RISE_OR_FALL = re.compile(rf"({_words('rise')})|{_words('fall')}", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;。！？；\n]")


def _side(word: str) -> str:
    return _SIDE_NAMES.get(word.lower()) or _SIDE_NAMES.get(word[0]) or _SIDE_NAMES[word.split()[0].lower()]


def _gradient_cues(text: str, family: str, scopes: list[Scope]) -> list[tuple[str, str]]:
    cues = []
    for m in _GRADIENT.finditer(text):
        if negated(scopes, m.start(), m.end()):
            continue
        start_word, end_word = [g for g in m.groups() if g]
        start, end = _side(start_word), _side(end_word)
        if family == "moves":
            cues.append((f"moves_{end}", m.group()))
            continue
        begin = max((e.end() for e in _SENTENCE_END.finditer(text, 0, m.start())), default=0)
        stop = next((e.start() for e in _SENTENCE_END.finditer(text, m.end())), len(text))
        changes = [c for c in (*_RISE_OR_FALL.finditer(text, begin, m.start()), *_RISE_OR_FALL.finditer(text, m.end(), stop))
                   if not negated(scopes, c.start(), c.end())]
        if changes:
            hotter = end if changes[-1].group(1) else start
            cues.append((f"{hotter}_hotter", text[begin:stop].strip(" ,")))
    return cues


def _side_cues(text: str, scopes: list[Scope]) -> list[tuple[str, str]]:
    cues = []
    for m in _SIDE_QUALITY.finditer(text):
        if negated(scopes, m.start(), m.end()):
            continue
        g = m.groups()
        side, quality = next((s, q) for s, q in ((g[0], g[1]), (g[3], g[2]), (g[4], g[5])) if s)
        hot = re.fullmatch(_words("hot"), quality, re.IGNORECASE) is not None
        cues.append((f"{_side(side) if hot else _OPPOSITE[_side(side)]}_hotter", m.group()))
    return cues


def _motion_cues(text: str, scopes: list[Scope]) -> list[tuple[str, str]]:
    return [(f"moves_{_side(next(g for g in m.groups() if g))}", m.group()) for m in _TOWARDS.finditer(text)
            if not negated(scopes, m.start(), m.end())]


def read_direction(answer: str, family: str = "hotter") -> tuple[str | None, list[tuple[str, str]]]:
    """The direction an answer states in `family` ("hotter" or "moves"), with the cues read
    as (direction, text) pairs; cues under negation are left out. Gradients are read first and
    blanked out, so "from left to right" is not also read as a mention of the left side."""
    text = normalise(answer, keep_punctuation=True)
    scopes = negation_scopes(text)
    cues = _gradient_cues(text, family, scopes)
    text = _GRADIENT.sub(lambda m: " " * len(m.group()), text)
    cues += _side_cues(text, scopes) if family == "hotter" else _motion_cues(text, scopes)
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
