"""Structured output: an answer that is JSON, or JSON valid against a JSON Schema, enforced while
decoding (OpenAI's `response_format` `json_object` and `json_schema`).

The grammar library is llguidance (chosen by measurement against xgrammar, docs/performance.md:
it compiles a schema in about a millisecond, imports in 10 ms, has no dependencies, and refuses
the schema keywords it cannot enforce instead of ignoring them, so a schema it accepts is one
every answer validates against). Per row, a `Constraint` turns the grammar's state into a token
mask before the row's token is chosen, and is told the token chosen; the row is done ("stop")
once the JSON is complete. The JSON is written compactly (`,` and `:` without spaces, no
whitespace between tokens), so a model cannot wander off into endless whitespace.

A grammar alone does not make a weak (or random-weight) model finish: it may write a string or
a number forever, or loop. So each constraint has a closing policy. It switches to closing
when the row's loop guard fires (a constrained row is never cut, it is closed) or when the
tokens left get as few as closing would take (estimated by running the policy on a copy of
the grammar's state, `closing_cost`). While closing, the mask keeps only the end of the answer
once the JSON may end; else, of the allowed tokens made of `"`, `]`, `}` and `,` alone, those
that leave least open (where a string, object or array is open is followed by `JsonPosition`);
else the allowed tokens that open no new object or array, the model choosing among what is
kept. A `max_new_tokens` too small for any valid JSON ends with "length", as OpenAI's does.

`parse_response_format` reads the OpenAI shape and checks the schema (no tokenizer, no model:
it is cheap, so every surface checks before any work); `Grammars` compiles a format once per
tokenizer and hands out a fresh `Constraint` per row.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import llguidance
import numpy as np
import torch

from ..errors import SmolsightError
from .decoding import LoopGuard, make_guard
from .options import GenerationOptions

# llguidance's JSON compiler: compact separators and no free whitespace (see the docstring).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
ANY_OBJECT = {"type": "object"}
CLOSING_CHARS = frozenset('"]},')
SLACK = 2  # tokens kept beyond the estimate: the model's own choices may take a step or two more than it
RECHECK_EVERY = 8  # the closing cost is re-estimated at least every RECHECK_EVERY tokens near the end, more
RECHECK_SHARE = 4  # seldom far from it (after a RECHECK_SHARE-th of the tokens to spare), and once the tokens
NEAR_END = 2 * RECHECK_EVERY  # to spare are NEAR_END or fewer, after every structural token too
STRUCTURAL = frozenset('"{}[],:')  # a token with none of these leaves the closing cost as it was (give or take a digit)
MAX_ESTIMATE = 256  # an estimate stops counting here (the budget's end is then this near when closing begins)
CACHE_SIZE = 64  # compiled grammars kept per tokenizer


@dataclass(frozen=True)
class ResponseFormat:
    """What an answer must be: JSON valid against `schema` (its compact JSON text; `{"type":
    "object"}` for OpenAI's `json_object`). Made by `parse_response_format`, `json_schema`,
    `json_object` or `read_schema_file`, which check it."""

    kind: str  # json_object | json_schema
    schema: str
    name: str = ""

    @property
    def grammar(self) -> str:
        return llguidance.LLMatcher.grammar_from_json_schema(self.schema, defaults=JSON_OPTIONS)


def json_schema(schema, name: str = "") -> ResponseFormat:
    """A format for JSON valid against `schema` (a dict), checked: a schema with a keyword the
    grammar cannot enforce (`not`, `if`, an unknown `format` …) is refused, not half-enforced."""
    if not isinstance(schema, dict):
        raise SmolsightError(f"the JSON schema must be a JSON object, not {type(schema).__name__}")
    return checked(ResponseFormat("json_schema", canonical(schema), name))


def json_object() -> ResponseFormat:
    """OpenAI's `json_object`: any JSON object."""
    return ResponseFormat("json_object", canonical(ANY_OBJECT))


def canonical(schema: dict) -> str:
    """The schema as compact text: the cache key (property order stays: it is the order written)."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def checked(fmt: ResponseFormat) -> ResponseFormat:
    try:
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(fmt.grammar)
    except ValueError as exc:
        raise SmolsightError(f"invalid JSON schema: {exc}") from None
    if failed:
        raise SmolsightError(f"unsupported or invalid JSON schema: {messages[0]}")
    return fmt


def parse_response_format(value: dict | None) -> ResponseFormat | None:
    """OpenAI's `response_format` object: None (or `{"type": "text"}`) for free text, else the
    checked format. `json_schema.strict` is accepted either way: the schema is always enforced.
    A `json_schema` without its `schema` means any JSON object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SmolsightError("response_format must be an object like {\"type\": \"json_object\"}")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object()
    if kind != "json_schema":
        raise SmolsightError(f"response_format type {kind!r} is not one of text, json_object, json_schema")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise SmolsightError("response_format json_schema needs a json_schema object: {\"name\": …, \"schema\": {…}}")
    name = spec.get("name") or ""
    if spec.get("schema") is None:
        return ResponseFormat("json_schema", canonical(ANY_OBJECT), name)
    return json_schema(spec["schema"], name)


def read_schema_file(path: str) -> ResponseFormat:
    """A JSON Schema file (for `ask --json-schema`), checked before any model loads."""
    file = Path(path)
    if not file.is_file():
        raise SmolsightError(f"{path}: no such JSON schema file")
    try:
        schema = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmolsightError(f"{path}: not valid JSON ({exc})") from None
    try:
        return json_schema(schema, file.stem)
    except SmolsightError as exc:
        raise SmolsightError(f"{path}: {exc}") from None


def row_options(options: GenerationOptions) -> GenerationOptions:
    """How a constrained row is decoded: its text is the exact JSON, so nothing cuts or trims it
    (the constraint runs the loop guard itself and closes the JSON instead); no n-gram ban and
    no minimum length (a grammar may force the same keys again, or only the end: a ban on a
    forced token leaves none)."""
    return replace(options, loop_guard=False, dedupe_sentences=False, no_repeat_ngram_size=0, min_new_tokens=0)


@dataclass(frozen=True)
class JsonPosition:
    """Where a JSON text stands after its tokens so far: how many objects and arrays are open,
    and whether a string is (the grammar keeps the text valid, so a scan of the text is exact)."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False  # the last character was a backslash inside a string

    @property
    def openness(self) -> int:
        """What closing still has to close."""
        return self.depth + self.in_string

    def after(self, text: str) -> "JsonPosition":
        depth, in_string, escaped = self.depth, self.in_string, self.escaped
        for char in text:
            if in_string:
                escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
        return JsonPosition(depth, in_string, escaped)


class Vocabulary:
    """The grammar library's view of one tokenizer, and how each token serves closing."""

    def __init__(self, tokenizer, size: int, eos: list[int]) -> None:
        from llguidance.hf import from_tokenizer

        self.size = size
        self.llg = from_tokenizer(tokenizer, n_vocab=size, eos_token=eos)
        self.texts = tokenizer.batch_decode([[i] for i in range(size)])
        self.eos = np.array(sorted(eos), dtype=np.int64)
        self.closers = np.array([i for i, text in enumerate(self.texts) if text and set(text) <= CLOSING_CHARS], dtype=np.int64)
        self.opens = np.array([any(c in text for c in "{[") for text in self.texts])  # [V] may open a structure
        self.lengths = np.array([len(text) or 1 << 20 for text in self.texts])  # tokens without text last

    def allowed(self, matcher: llguidance.LLMatcher) -> np.ndarray:
        """[V] bool: the tokens the grammar allows next."""
        words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(words, bitorder="little")[: self.size].view(np.bool_)

    def closing_candidates(self, allowed: np.ndarray, position: JsonPosition) -> np.ndarray | None:
        """The tokens closing prefers (ids): the end of the answer once it may end; else, of the
        allowed tokens made of `"`, `]`, `}` and `,` alone, those that leave least open (and the
        fewest commas, which lead to more); None when none is allowed."""
        for tier in (self.eos, self.closers):
            ids = tier[allowed[tier]]
            if len(ids):
                break
        else:
            return None
        keys = [(position.after(self.texts[i]).openness, self.texts[i].count(",")) for i in ids]
        best = min(keys)
        return ids[[key == best for key in keys]]

    def closing_pick(self, allowed: np.ndarray, position: JsonPosition) -> int:
        """The token closing takes when no model chooses (to estimate its cost): the shortest of
        the candidates, else of the allowed tokens that open nothing, else of all allowed."""
        ids = self.closing_candidates(allowed, position)
        if ids is None:
            ids = np.flatnonzero(allowed & ~self.opens)
        if len(ids) == 0:
            ids = np.flatnonzero(allowed)
        return int(ids[np.argmin(self.lengths[ids])])


class Constraint:
    """One row's structured output: masks its logits, follows its tokens, closes the JSON in time."""

    def __init__(self, matcher: llguidance.LLMatcher, vocabulary: Vocabulary, options: GenerationOptions,
                 guard: LoopGuard | None) -> None:  # fmt: skip
        self.matcher = matcher
        self.vocabulary = vocabulary
        self.options = row_options(options)
        self.guard = guard
        self.position = JsonPosition()
        self.left = options.max_new_tokens  # tokens the row may still generate
        self.accepted = 0
        self.cost = 0  # the last estimate of the tokens closing takes
        self.moved = False  # a structural token came since that estimate
        self.next_check = 0  # the estimate is due again when this many tokens are accepted
        self.closing = False

    @property
    def complete(self) -> bool:
        """The JSON is whole and nothing may follow it: the row is done ("stop")."""
        return self.matcher.is_stopped()

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits [V] of the tokens not allowed next to -inf, in place."""
        allowed = self.vocabulary.allowed(self.matcher)
        if not self.closing and self.budget_short():
            self.closing = True
        if self.closing:
            allowed = self.closing_choice(allowed)
        if logits.device.type == "cpu":  # numpy: torch's masked_fill_ spins its threads on a busy CPU
            np.copyto(logits.numpy(), -np.inf, where=~allowed)
        else:
            logits.masked_fill_(torch.from_numpy(~allowed).to(logits.device), float("-inf"))

    def closing_choice(self, allowed: np.ndarray) -> np.ndarray:
        """[V] bool, what the model may choose from while closing: the closing candidates, or
        without any, the allowed tokens that open no new object or array (when there are such)."""
        ids = self.vocabulary.closing_candidates(allowed, self.position)
        if ids is None:
            quiet = allowed & ~self.vocabulary.opens
            return quiet if quiet.any() else allowed
        choice = np.zeros_like(allowed)
        choice[ids] = True
        return choice

    def accept(self, token: int) -> None:
        """The token chosen for this row (never the end of the answer, which the engine handles)."""
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"structured output: token {token} is not allowed here ({self.matcher.get_error()})")
        text = self.vocabulary.texts[token]
        self.position = self.position.after(text)
        self.moved = self.moved or not STRUCTURAL.isdisjoint(text)
        self.left -= 1
        self.accepted += 1
        if self.guard is not None and self.guard.push(token) is not None:
            self.closing = True

    def budget_short(self) -> bool:
        """Whether the tokens left are about what closing takes. The estimate costs some dozen
        mask computations, so it is refreshed the more often the fewer tokens there are to
        spare, and near the budget's end after each token that may change it (inside a long
        string it stays the same)."""
        spare = self.left - self.cost - SLACK
        if self.accepted >= self.next_check or (spare <= NEAR_END and self.moved):
            self.cost = closing_cost(self.matcher, self.position, self.vocabulary, min(self.left, MAX_ESTIMATE))
            self.moved = False
            self.next_check = self.accepted + max(RECHECK_EVERY, (self.left - self.cost) // RECHECK_SHARE)
        return self.left <= self.cost + SLACK


def closing_cost(matcher: llguidance.LLMatcher, position: JsonPosition, vocabulary: Vocabulary, limit: int) -> int:
    """Tokens the closing policy takes from this state (the end-of-answer token included, unless
    the JSON simply stops), counted on a copy of the matcher, up to `limit`. Tokens the grammar
    forces (a key's name after its comma) are taken in one go."""
    probe = matcher.deep_copy()
    steps = 0
    while steps < limit and not probe.is_stopped():
        tokens = probe.compute_ff_tokens() or [vocabulary.closing_pick(vocabulary.allowed(probe), position)]
        if tokens[0] in vocabulary.eos:
            return steps + 1
        probe.consume_tokens(tokens)
        position = position.after("".join(vocabulary.texts[t] for t in tokens))
        steps += len(tokens)
    return min(steps, limit)


class Grammars:
    """The formats compiled for one tokenizer (the first constrained request pays for preparing
    the vocabulary, about a second; a format is compiled once and copied per row)."""

    def __init__(self, tokenizer, size: int, eos: list[int]) -> None:
        self.tokenizer = tokenizer
        self.size = size
        self.eos = eos
        self.compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()

    @cached_property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.tokenizer, self.size, self.eos)

    def constraint(self, fmt: ResponseFormat | None, options: GenerationOptions, layout: np.ndarray | None = None) -> Constraint | None:
        """A fresh constraint for one row (None for free text); `layout` as for the loop guard
        (decoding.layout_tokens)."""
        if fmt is None:
            return None
        return Constraint(self.matcher(fmt).deep_copy(), self.vocabulary, options, make_guard(options, layout))

    def matcher(self, fmt: ResponseFormat) -> llguidance.LLMatcher:
        """The format's matcher at the start of an answer, compiled on first use."""
        if fmt.schema in self.compiled:
            self.compiled.move_to_end(fmt.schema)
            return self.compiled[fmt.schema]
        matcher = llguidance.LLMatcher(self.vocabulary.llg, fmt.grammar, log_level=0)
        if matcher.is_error():
            raise SmolsightError(f"unsupported or invalid JSON schema: {matcher.get_error()}")
        self.compiled[fmt.schema] = matcher
        if len(self.compiled) > CACHE_SIZE:
            self.compiled.popitem(last=False)
        return matcher
