"""Text answers: exact text, keywords present or absent, choices, ANLS, and free answers."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from ...text import normalise
from .answers import answer_spans, expected_strings, strip_echo
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
