"""Reading a model's answer as its rule's type (yes/no, a number, a choice, free text) and
deciding whether it meets the rule's alert condition; the readers are evaluation's, so a
camera rule and a suite case read "Two people." the same way."""

from __future__ import annotations

from dataclasses import dataclass

from ..evals.scoring.numbers import find_numbers
from ..evals.scoring.text import pick_choice
from .rules import COMPARISONS, THRESHOLD, Rule

YES_NO = {"yes": "yes", "no": "no", "是": "yes", "否": "no", "有": "yes", "没有": "no", "不是": "no"}


@dataclass(frozen=True)
class Reading:
    """What an answer says (None when it says nothing the rule can use) and whether it alerts."""

    value: str | float | None
    alert: bool


def read_answer(rule: Rule, text: str) -> Reading:
    value = READERS[rule.answer](rule, text)
    return Reading(value, value is not None and rule.alert_when is not None and meets(rule, value))


def read_yes_no(rule: Rule, text: str) -> str | None:
    picked = pick_choice(text, list(YES_NO))
    return YES_NO[picked] if picked else None


def read_number(rule: Rule, text: str) -> float | None:
    numbers = find_numbers(text)
    return numbers[0].value if numbers else None


def read_choice(rule: Rule, text: str) -> str | None:
    return pick_choice(text, list(rule.choices))


def read_text(rule: Rule, text: str) -> str | None:
    return text.strip() or None


READERS = {"yes_no": read_yes_no, "number": read_number, "choice": read_choice, "text": read_text}


def meets(rule: Rule, value: str | float) -> bool:
    condition = rule.alert_when
    if rule.answer == "yes_no":
        return value == condition
    if rule.answer == "number":
        op, number = THRESHOLD.match(condition).groups()
        return COMPARISONS[op](float(value), float(number))
    if rule.answer == "choice":
        return value in condition
    return any(word.lower() in str(value).lower() for word in condition)
