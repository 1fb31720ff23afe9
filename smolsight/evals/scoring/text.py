"""Text answers: exact text, keywords present or absent, choices, ANLS, and free answers."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...text import CJK, has_cjk, normalise
from .answers import answer_spans, expected_strings, strip_echo
from .negation import CLAUSE_MARKS, Scope, negated, negation_scopes
from .registry import Score, scorer

if TYPE_CHECKING:
    from ..suite import Case


@scorer("text")
def score_text(answer: str, case: Case) -> Score:
    spans = {normalise(span) for span in answer_spans(strip_echo(answer, case))}
    for expected in expected_strings(case):
        if normalise(expected) in spans:
            return Score(True, 1.0, f"matched {expected!r}")
    return Score(False, 0.0, f"{normalise(answer)!r} matches none of {expected_strings(case)!r}")


_KEY_TOKEN = re.compile(rf"\d+(?:\.\d+)?|[{CJK}]|(?:(?![{CJK}])[^\W\d_])+")
_TOKEN_GAP = r"[\s\-_./·]*"


def keyword_pattern(keyword: str) -> re.Pattern:
    """A keyword as a pattern over its tokens (numbers, Chinese characters, words), each on its
    own boundaries: "94.9" finds "94.9 °C" but not "94.95", "94, 9" or "93 94 95"; "P-284"
    finds "P284" and "P 284" but not "P-2845"; a final Latin word may go on ("tree" finds
    "trees", not "street"). Between tokens only spaces, hyphens, dots and slashes may stand. A
    keyword of symbols alone ("°C" has a word; "+" has none) is matched as written."""
    keyword = unicodedata.normalize("NFKC", keyword).strip()
    tokens = _KEY_TOKEN.findall(keyword)
    if not tokens:
        return re.compile(re.escape(keyword))
    parts = []
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            parts.append(rf"(?<!\d)(?<!\d\.){re.escape(token)}(?!\.?\d)")
        elif has_cjk(token):
            parts.append(re.escape(token))
        else:
            parts.append(rf"(?<![a-z0-9]){re.escape(token)}" + ("" if i == len(tokens) - 1 else "(?![a-z])"))
    return re.compile(_TOKEN_GAP.join(parts), re.IGNORECASE)


_CODE = re.compile(r"(?<![a-z0-9])[a-z]+[-_]?\d+(?:[-_.]\d+)*(?![a-z0-9])", re.IGNORECASE)
_NUMBER = re.compile(r"(?<!\d)(?<!\d\.)\d+(?:\.\d+)?(?!\.?\d)")


def _values(text: str) -> tuple[re.Pattern, list[str]]:
    """The kind of value `text` holds and its values: codes ("P-284" as "p284") when it has one,
    else numbers ("94.9"); no values when it has neither."""
    codes = [re.sub(r"[-_.]", "", m.group()).lower() for m in _CODE.finditer(text)]
    if codes:
        return _CODE, codes
    return _NUMBER, [str(float(m.group())) for m in _NUMBER.finditer(text)]


def _rivals(text: str, scopes: list[Scope], alternatives: list[str]) -> tuple[str, ...]:
    """Values of a value keyword's kind that the answer states and the keyword (or a synonym)
    is not: "11" and "284" beside 94.9, "NEU-505" beside P-284."""
    kind, own = _values(" ".join(alternatives))
    if not own:
        return ()
    rivals = []
    for m in kind.finditer(text):
        _, (value,) = _values(m.group())
        if value not in own and not negated(scopes, m.start(), m.end()):
            rivals.append(m.group())
    return tuple(dict.fromkeys(rivals))


@dataclass(frozen=True)
class KeywordHit:
    """How an answer speaks of one expected keyword: `found`, the word or synonym it states;
    `denied`, one it names only under negation ("没有火"); `rivals`, other values it states
    beside a value keyword (a number or code), which make the keyword's value one of several."""

    found: str | None = None
    denied: str | None = None
    rivals: tuple[str, ...] = ()

    @property
    def stated(self) -> bool:
        return self.found is not None and not self.rivals


def keyword_hits(answer: str, case: Case) -> dict[str, KeywordHit]:
    """For each expected keyword, how the answer speaks of it and its synonyms (see `KeywordHit`)."""
    text = strip_echo(answer, case)
    scopes = negation_scopes(text)
    hits = {}
    for keyword in case.expected:
        alternatives = [keyword, *case.synonyms.get(keyword, [])]
        found = denied = None
        for alternative in alternatives:
            for m in keyword_pattern(alternative).finditer(text):
                if negated(scopes, m.start(), m.end()):
                    denied = denied or m.group()
                else:
                    found = found or alternative
        rivals = _rivals(text, scopes, alternatives) if found else ()
        hits[keyword] = KeywordHit(found, None if found else denied, rivals)
    return hits


def _hits_detail(hits: dict[str, KeywordHit]) -> str:
    found = ", ".join(k if hit.found == k else f"{k} ({hit.found})" for k, hit in hits.items() if hit.stated) or "none"
    missing = []
    for keyword, hit in hits.items():
        if hit.rivals:
            missing.append(f"{keyword} (one of several values: also {', '.join(hit.rivals)})")
        elif hit.denied:
            missing.append(f"{keyword} (negated: {hit.denied!r})")
        elif not hit.found:
            missing.append(keyword)
    return f"found: {found}; missing: {', '.join(missing) or 'none'}"


@scorer("contains_all")
def score_contains_all(answer: str, case: Case) -> Score:
    hits = keyword_hits(answer, case)
    stated = sum(1 for hit in hits.values() if hit.stated)
    return Score(stated == len(hits), stated / len(hits) if hits else 1.0, _hits_detail(hits))


@scorer("contains_none")
def score_contains_none(answer: str, case: Case) -> Score:
    hits = keyword_hits(answer, case)
    found = [k for k, hit in hits.items() if hit.found]
    denied = [f"{k} ({hit.denied!r})" for k, hit in hits.items() if hit.denied]
    detail = f"names: {', '.join(found) or 'none'}; negated: {', '.join(denied) or 'none'}"
    return Score(not found, 1.0 - len(found) / len(hits) if hits else 1.0, detail)


def _choice_pattern(choice: str) -> re.Pattern:
    """A one-letter choice must match in case and stand alone, so the article "a" is not choice
    "A"; other Latin choices are whole words; Chinese ones occur anywhere."""
    pattern = re.escape(unicodedata.normalize("NFKC", choice).strip())
    if choice.isascii():
        pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
    return re.compile(pattern, 0 if len(choice.strip()) == 1 else re.IGNORECASE)


@dataclass(frozen=True)
class ChoiceReading:
    """The choice an answer makes: `picked` (None when it makes none), what it names and denies."""

    picked: str | None
    named: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()


def _opening(text: str, choices: list[str]) -> str | None:
    """The choice the answer opens with as a clause of its own ("关。…", "No, …"), unless the
    next clause opens with another choice (the list "开，关" is a hedge)."""
    for choice in choices:
        pattern = _choice_pattern(choice)
        opening = re.match(rf"(?:{pattern.pattern})\s*(?:{CLAUSE_MARKS}|$)", text, pattern.flags)
        if opening:
            rest = text[opening.end() :].lstrip()
            return None if any(_choice_pattern(c).match(rest) for c in choices if c != choice) else choice
    return None


def read_choice(answer: str, choices: list[str]) -> ChoiceReading:
    """The choice the answer makes. The answer equal to a choice, or opening with one ("关。",
    "No, …", "B. because …"), makes it. Otherwise the choices it names outside negation count:
    one is picked; several ("开或关", "A, B") pick none. A mention inside a longer choice's
    mention is that choice's ("有" in "没有"). With two choices, denying one and naming neither
    picks the other ("阀门没有打开" picks 关)."""
    text = unicodedata.normalize("NFKC", answer).strip()
    equal = next((c for c in choices if normalise(c) == normalise(text)), None) or _opening(text, choices)
    if equal:
        return ChoiceReading(equal, (equal,))
    mentions = [(m.start(), m.end(), c) for c in choices for m in _choice_pattern(c).finditer(text)]
    mentions = [(s, e, c) for s, e, c in mentions if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in mentions)]
    scopes = negation_scopes(text)
    named = tuple(dict.fromkeys(c for s, e, c in mentions if not negated(scopes, s, e)))
    denied = tuple(dict.fromkeys(c for s, e, c in mentions if negated(scopes, s, e) and c not in named))
    if len(named) == 1:
        return ChoiceReading(named[0], named, denied)
    if not named and len(choices) == 2 and len(denied) == 1:
        return ChoiceReading(next(c for c in choices if c != denied[0]), named, denied)
    return ChoiceReading(None, named, denied)


def pick_choice(answer: str, choices: list[str]) -> str | None:
    """The choice the answer makes, or None (see `read_choice`)."""
    return read_choice(answer, choices).picked


@scorer("choice")
def score_choice(answer: str, case: Case) -> Score:
    reading = read_choice(strip_echo(answer, case), case.choices)
    denies = f" (denies {', '.join(map(repr, reading.denied))})" if reading.denied else ""
    if reading.picked is None:
        named = f"names several of {case.choices!r}: {', '.join(reading.named)}" if reading.named else f"names none of {case.choices!r}"
        return Score(False, 0.0, named + denies)
    passed = normalise(reading.picked) == normalise(case.expected)
    return Score(passed, float(passed), f"picked {reading.picked!r}{denies}; expected {case.expected!r}")


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
    best_value, best_span = max((anls(span, expected_strings(case)), span) for span in spans)
    return Score(best_value >= 0.5, best_value, f"ANLS {best_value:.3f} for {best_span.strip()!r}")


@scorer("free")
def score_free(answer: str, case: Case) -> Score:
    return Score(None, None, "recorded, not scored")
