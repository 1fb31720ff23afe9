"""Negation in answers: which stretches of an answer a negation word governs, so that "现场没有火"
and "no fire visible" are not read as naming fire.

A negation word governs the rest of its clause: from the end of the word to the next clause
mark (，。；！？,;!?… or a full stop, a line break) or contrast word (但/但是/而是/却/不过/然而/
可是/只是/反而, but/however/although/though/whereas/while/instead/rather/except), and in
English up to a place phrase ("in the", "from a", …): "there are no clouds in the sky" denies
the clouds, not the sky. A list goes on under one negation ("没有天空、树、房子", "no fire or
smoke"); a new clause needs its own ("没有火，有烟" denies only the fire).

Negation words: 没有/没, 不 (不是, 不比, 看不到), 无, 未, 并非/而非/绝非, 毫无, 无法; no, not,
n't, without, none, neither, nor, never, nothing, nobody, nowhere, cannot, absence/lack/free/
devoid of. Words that begin like one but do not deny are not: 不少 "quite a few", 不断/不停
"constantly", 不仅/不但/不只 "not only", 不同 "different", 不远处 "not far off", 不久, 不时,
不一, 不等, 差不多 "about", 无数 "countless", 无论, 无人机 "drone", 无疑 "undoubtedly", 未来
"future", 淹没/埋没/沉没 "sunk", not only/just/far, no doubt/matter, nothing but. A hedge on a
number is not a denial either: 不到30 and 不足30 ("fewer than 30"), "no more than 30".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMERAL = r"\s*[\d零〇一二两三四五六七八九十几百千万]"
_ZH_CUES = (
    r"没有|(?<![淹埋沉出吞隐])没|并非|而非|绝非|毫无(?!疑问)|无法"
    r"|无(?!数|论|人机|线|限|比|疑|关|缝)|未(?!来)"
    rf"|(?<![差说对了])不(?!少|断|停|仅|但|只|过|久|同|错|时|远|一|等|管|论|得不|规则|定"
    rf"|(?:到|足|超过|止|少于|多于|低于|高于|大于|小于){_NUMERAL})"
)
_EN_CUES = (
    r"(?<![a-z'’])(?:no(?!\s+(?:doubt|matter|(?:more|less|fewer|greater)\s+than)\b)"
    r"|not(?!\s+(?:only|just|far|(?:more|less|fewer|greater)\s+than)\b)"
    r"|without|none|neither|nor|never|nothing(?!\s+but\b)|nobody|nowhere|cannot"
    r"|(?:absence|lack|free|devoid)\s+of)(?![a-z'’])"
    r"|n['’]t(?![a-z])"
)
CUES = re.compile(f"{_ZH_CUES}|{_EN_CUES}", re.IGNORECASE)
# Clause marks (a full stop, not a decimal point); a negation's reach also ends at contrast
# words and English place phrases.
CLAUSE_MARKS = r"[，,。；;！!？?…\n]|\.(?!\d)"
CLAUSE_END = re.compile(CLAUSE_MARKS)
_SCOPE_END = re.compile(
    rf"{CLAUSE_MARKS}|但是|但|而是|而且|而(?!非)|却|不过|然而|可是|只是|反而"
    r"|(?<![a-z])(?:but|however|although|though|whereas|while|instead|rather|except"
    r"|(?:in|on|at|above|below|under|over|behind|near|beside|across|along|inside|into|onto|from|next\s+to)"
    r"\s+(?:the|a|an|this|that|its|their|his|her)"
    r"|and\s+(?:the|a|an|there|it|its|this|these|those|they))(?![a-z])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Scope:
    """The stretch text[start:end] that the negation word `cue` governs."""

    cue: str
    start: int
    end: int


def negation_scopes(text: str) -> list[Scope]:
    """Every negation word in `text` with the stretch it governs (rule in the module docstring)."""
    scopes = []
    for cue in CUES.finditer(text):
        stop = _SCOPE_END.search(text, cue.end())
        scopes.append(Scope(cue.group(), cue.end(), stop.start() if stop else len(text)))
    return scopes


def negated(scopes: list[Scope], start: int, end: int | None = None) -> Scope | None:
    """The scope covering text[start:end] (any part of it; just `start` when `end` is None), or None."""
    end = start + 1 if end is None else end
    return next((s for s in scopes if s.start < end and start < s.end), None)
