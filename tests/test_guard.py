"""Repetition control: the loop guard on hand-made token streams and on legitimate text, then the
presets end to end on the tiny checkpoint (whose greedy output loops), batches, and compare-presets."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import fields

import numpy as np
import pytest
from helpers import cli, picture

from smolsight.evals.presets import COLUMNS, columns_table, compare, plan, preview
from smolsight.engine.decoding import LAYOUT_CHARS, LAYOUT_SPAN_FACTOR, LoopGuard, layout_tokens, make_guard
from smolsight.errors import SmolsightError
from smolsight.engine.options import GenerationOptions, resolve_options
from smolsight.engine.redundancy import RepetitionMetrics

DEFAULTS = GenerationOptions()
# The tiny checkpoint's greedy answer to this loops from its third token to any limit (seed),
# and the precise preset's penalty keeps it out of the loop (checked on float32, with and without
# the int8 decode path).
LOOPING_INPUT = (0, "What colour is the truck?")
LIMIT = 120


def first_hit(tokens: list[int], guard: LoopGuard) -> tuple[int, object] | None:
    """(number of tokens pushed when the guard fired, its LoopHit), or None."""
    for count, token in enumerate(tokens, start=1):
        hit = guard.push(token)
        if hit is not None:
            return count, hit
    return None


def occurrences(period: int, options: GenerationOptions = DEFAULTS) -> int:
    """Copies of a unit the guard needs: K, or more for short units so they span guard_min_tokens."""
    return max(options.guard_repeats, math.ceil(options.guard_min_tokens / period))


def reference_loop(tokens: list[int], options: GenerationOptions = DEFAULTS) -> tuple[int, int, int] | None:
    """The guard's rule by brute force: the first length n at which the last `occurrences(p)` units of
    some period p <= window are identical; returns (n, p, index where that periodic run began)."""
    for n in range(1, len(tokens) + 1):
        for p in range(1, options.guard_window + 1):
            span = occurrences(p, options) * p
            if span <= n and tokens[n - span : n] == tokens[n - p : n] * (span // p):
                start = n - span
                while start > 0 and tokens[start - 1] == tokens[start - 1 + p]:
                    start -= 1
                return n, p, start
    return None


# --- hand-made token streams -------------------------------------------------------------------


@pytest.mark.parametrize("period", [1, 2, 7, 50])
def test_guard_stops_a_loop_of_each_period_once_complete(period):
    prefix = list(range(1000, 1010))
    unit = list(range(1, period + 1))
    tokens = prefix + unit * 200
    stop = len(prefix) + occurrences(period) * period

    count, hit = first_hit(tokens, make_guard(DEFAULTS))

    assert count == stop  # not a token earlier, not a token later
    assert (hit.period, hit.loop_start, hit.keep) == (period, len(prefix), len(prefix) + period)
    assert tokens[: hit.keep] == prefix + unit  # what the answer keeps: the unit once
    assert stop - hit.loop_start <= max(DEFAULTS.guard_repeats * period, DEFAULTS.guard_min_tokens + period)


def test_repeats_and_window_are_configurable():
    unit = list(range(1, 81))
    tokens = [999] + unit * 10
    assert first_hit(tokens, LoopGuard(repeats=4, window=64, min_tokens=0)) is None  # period 80 > window
    count, hit = first_hit(tokens, LoopGuard(repeats=4, window=128, min_tokens=0))
    assert (count, hit.period) == (1 + 4 * 80, 80)
    count, hit = first_hit([999] + [5, 6, 7] * 20, LoopGuard(repeats=6, window=64, min_tokens=0))
    assert (count, hit.period) == (1 + 6 * 3, 3)


def test_loop_that_begins_mid_unit_keeps_the_first_full_copy():
    """The unit is whatever repeats from where the repetition began: here it starts at "8 9"."""
    tokens = [500, 501, 8, 9] + [1, 2, 3, 8, 9] * 20
    count, hit = first_hit(tokens, make_guard(DEFAULTS))
    assert hit.period == 5 and hit.loop_start == 2
    assert tokens[: hit.keep] == [500, 501, 8, 9, 1, 2, 3]
    assert (count, hit.period, hit.loop_start) == reference_loop(tokens)


@pytest.mark.parametrize(
    "name, tokens",
    [
        # A numbered list: the same item words, a different number each time.
        ("counter", [t for i in range(60) for t in (7000 + i, 11, 12, 13, 14, 15, 16)]),
        # One copy fewer than K, again and again, with new text in between.
        ("k-1 copies", [t for i in range(30) for t in [2000 + i, 2100 + i] + list(range(1, 11)) * (DEFAULTS.guard_repeats - 1)]),
        # A short unit that repeats K times but spans fewer than guard_min_tokens ("ha ha ha ha").
        ("short unit", [t for i in range(40) for t in [3000 + i] + [42, 43] * DEFAULTS.guard_repeats]),
        # A long unit repeated verbatim except one token that changes each time (a timestamp).
        ("changing token", [t for i in range(40) for t in list(range(1, 30)) + [4000 + i] + list(range(30, 40))]),
    ],
)
def test_near_repeats_do_not_trigger(name, tokens):
    assert first_hit(tokens, make_guard(DEFAULTS)) is None
    assert reference_loop(tokens) is None


@pytest.mark.parametrize("options", [DEFAULTS, GenerationOptions(guard_repeats=2, guard_window=8, guard_min_tokens=0)])
def test_guard_agrees_with_brute_force_on_random_streams(options):
    """Streams built from a few random units, so loops of many periods and phases occur by chance."""
    rng = random.Random(7)
    fired = 0
    for _ in range(120):
        units = [[rng.randrange(20) for _ in range(rng.randint(2, 12))] for _ in range(10)]
        tokens = [t for _ in range(60) for t in units[rng.randrange(10)] * rng.randint(1, 3)][:300]
        expected = reference_loop(tokens, options)
        got = first_hit(tokens, make_guard(options))
        assert (got and (got[0], got[1].period, got[1].loop_start)) == (expected or None)
        fired += got is not None
    assert fired > 0


def test_cost_per_step_is_bounded_by_the_window_not_the_length():
    guard = make_guard(DEFAULTS)
    rng = random.Random(0)
    for _ in range(50_000):
        assert guard.push(rng.randrange(40_000)) is None
    # The state is a ring of window+1 tokens and one counter per period, whatever has been generated.
    assert guard.history.size == DEFAULTS.guard_window + 1 and guard.run.size == DEFAULTS.guard_window

    def seconds_per_push(g: LoopGuard) -> float:
        tokens = [rng.randrange(40_000) for _ in range(1000)]
        start = time.perf_counter()
        for token in tokens:
            g.push(token)
        return (time.perf_counter() - start) / len(tokens)

    # Interleaved, best of several, so load from other processes hits both alike.
    fresh, late = zip(*[(seconds_per_push(make_guard(DEFAULTS)), seconds_per_push(guard)) for _ in range(7)])
    assert min(late) < 2.5 * min(fresh)


# --- legitimate text must survive ---------------------------------------------------------------

TABLE = (
    "| Camera | Zone | Vehicles | People | Status |\n"
    "| --- | --- | --- | --- | --- |\n"
    "| cam-01 | gate | 3 | 0 | ok |\n"
    "| cam-02 | yard | 0 | 2 | ok |\n"
    "| cam-03 | road | 12 | 1 | ok |\n"
    "| cam-04 | dock | 1 | 1 | ok |\n"
)
NUMBERED = "Vehicles seen:\n" + "".join(f"{i}. A white van parked at bay {i}.\n" for i in range(1, 13))
LAUGH = "The driver waved and laughed, ha ha ha, then drove through the open gate."
SEPARATORS = (
    "Gate\n----------------------------------------\nOpen, one truck waiting.\n\n---\n\n"
    "Yard\n\n---\n\n---\n\nEmpty.\n\n--- --- ---\n\nRoad: clear.\n"
)
LEGIT = {"table": TABLE, "numbered list": NUMBERED, "ha ha ha": LAUGH, "separators": SEPARATORS}
# Tokenized a character at a time (the tiny tokenizer is byte-level), a 5-column rule row is a
# 6-token unit repeated over 30 tokens and a 40-dash line one token 40 times: over the default
# guard_min_tokens (24), but made of layout characters only, so they need 4x that span.


def streams(text: str, tokenizer) -> dict[str, tuple[list[int], np.ndarray]]:
    """The text as token streams of three granularities, each with its layout mask."""
    words: dict[str, int] = {}
    word_ids = [words.setdefault(w, len(words)) for w in text.split()]
    chars = [ord(c) for c in text]
    return {
        "tiny tokenizer": (tokenizer(text, add_special_tokens=False)["input_ids"], layout_tokens(tokenizer, len(tokenizer))),
        "characters": (chars, np.array([chr(i) in LAYOUT_CHARS for i in range(max(chars) + 1)])),
        "words": (word_ids, np.array([set(w) <= LAYOUT_CHARS for w in words])),
    }


@pytest.mark.parametrize("name, kind", [(name, kind) for name in LEGIT for kind in ("tiny tokenizer", "characters", "words")])
def test_legitimate_text_is_not_cut(engine, name, kind):
    tokens, layout = streams(LEGIT[name], engine.tokenizer)[kind]
    assert len(tokens) > 10
    assert first_hit(tokens, make_guard(DEFAULTS, layout)) is None


def test_layout_loops_still_stop_and_content_loops_stop_sooner(engine):
    layout = layout_tokens(engine.tokenizer, len(engine.tokenizer))
    dash, word = engine.tokenizer.convert_tokens_to_ids(["-", "Ġw7"])
    assert layout[dash] and not layout[word]
    count, _ = first_hit([word] * 500, make_guard(DEFAULTS, layout))
    assert count == DEFAULTS.guard_min_tokens
    count, _ = first_hit([dash] * 500, make_guard(DEFAULTS, layout))
    assert count == LAYOUT_SPAN_FACTOR * DEFAULTS.guard_min_tokens


def test_layout_tokens_agree_with_transformers_decoding_over_the_whole_vocabulary(engine):
    """The Rust tokenizer's one-call decode classifies every token as transformers' `batch_decode`
    would, ids past the tokenizer's end (the model's padded vocabulary) included."""
    tokenizer, vocab = engine.tokenizer, len(engine.tokenizer) + 7
    texts = tokenizer.batch_decode([[i] for i in range(vocab)])
    expected = np.array([bool(text) and set(text) <= LAYOUT_CHARS for text in texts])
    layout = layout_tokens(tokenizer, vocab)
    assert 5 < layout.sum() < vocab // 2 and not layout[-7:].any()
    assert np.array_equal(layout, expected)


# --- through the engine ------------------------------------------------------------------------


@pytest.fixture
def generated(monkeypatch) -> list[tuple[int, list[int]]]:
    """(row, token ids) of each row the engine finishes, in finishing order (a Result carries text only)."""
    from smolsight.engine.generation import Generation

    seen: list[tuple[int, list[int]]] = []
    result = Generation.result

    def record(generation, row):
        seen.append((row.key, list(row.tokens)))
        return result(generation, row)

    monkeypatch.setattr(Generation, "result", record)
    return seen


def test_presets_end_to_end(engine, generated):
    """seed runs to its limit and is flagged looped; guard-only is seed's answer cut where the loop
    began, stopped once the loop was certain; precise does not loop."""
    seed_image, prompt = LOOPING_INPUT
    image = picture(seed=seed_image)
    seed = engine.ask(image, prompt, "seed", max_new_tokens=LIMIT)
    guard = engine.ask(image, prompt, "seed", max_new_tokens=LIMIT, loop_guard=True)
    precise = engine.ask(image, prompt, "precise", max_new_tokens=LIMIT)
    (_, seed_tokens), (_, guard_tokens), _ = generated

    assert (seed.finish_reason, seed.output_tokens, seed.metrics["looped"]) == ("length", LIMIT, True)

    stop, period, loop_start = reference_loop(seed_tokens)
    assert guard.finish_reason == "repetition"
    assert guard_tokens == seed_tokens[:stop]  # the guard changed nothing before it stopped
    assert stop - loop_start <= max(DEFAULTS.guard_repeats * period, DEFAULTS.guard_min_tokens + period)
    assert guard.text == engine.decode(seed_tokens[: loop_start + period]).strip()
    assert seed.text.startswith(guard.text) and len(guard.text) < len(seed.text)

    assert guard.metrics["looped"] is False  # metrics describe the answer returned, loop trimmed
    assert precise.metrics["looped"] is False
    for result in (seed, guard, precise):
        assert set(result.metrics) == {f.name for f in fields(RepetitionMetrics)}


def test_batch_rows_stop_on_their_own_and_match_one_by_one(engine, generated):
    """A looping row stops without stopping the others, and each row's answer is its answer alone."""
    gate, truck, cars = picture(seed=0), picture(seed=0), picture(seed=4)
    requests = [
        engine.request(gate, "Is the gate open?", "seed", max_new_tokens=100),
        engine.request(gate, "Is the gate open?", "seed", max_new_tokens=100, loop_guard=True),
        engine.request(truck, LOOPING_INPUT[1], "seed", max_new_tokens=100, loop_guard=True),
        engine.request(cars, "Count the cars.", "precise", max_new_tokens=100),
    ]
    alone = [engine.ask_batch([request])[0] for request in requests]
    alone_tokens = [tokens for _, tokens in generated]
    generated.clear()
    together = engine.ask_batch(requests)
    together_tokens = [tokens for _, tokens in sorted(generated)]

    assert {r.finish_reason for r in together} >= {"length", "repetition"}
    assert together[0].output_tokens == 100 and together[2].output_tokens < 100
    for one, batched in zip(alone, together):
        assert (batched.text, batched.finish_reason, batched.output_tokens) == (one.text, one.finish_reason, one.output_tokens)
        assert batched.metrics == one.metrics
    assert together_tokens == alone_tokens


# --- compare-presets ---------------------------------------------------------------------------


def test_plan_layers_knobs_over_each_column():
    columns = dict(plan("seed, guard-only,precise", {"max_new_tokens": 50, "temperature": None}))
    assert columns["guard-only"] == resolve_options("seed", loop_guard=True, max_new_tokens=50)
    assert columns["seed"].loop_guard is False and columns["precise"].repetition_penalty > 1
    assert all(options.max_new_tokens == 50 for options in columns.values())
    assert set(COLUMNS) >= {"seed", "guard-only", "precise", "creative"}


@pytest.mark.parametrize(
    "spec, message",
    [("seed,sedd", "unknown preset(s) sedd"), ("seed,seed", "names a preset twice"), (" , ", "--presets is empty")],
)
def test_plan_rejects_bad_columns(spec, message):
    with pytest.raises(SmolsightError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(spec, {})


def test_compare_presets_command(tiny_checkpoint, tmp_path):
    image = tmp_path / "truck.png"
    picture(seed=LOOPING_INPUT[0]).save(image)
    base = ["compare-presets", str(image), LOOPING_INPUT[1], "-q",
            "--model", tiny_checkpoint, "--dtype", "float32", "--max-new-tokens", str(LIMIT)]  # fmt: skip
    run = cli(*base, "--json")
    assert run.returncode == 0, run.stderr
    columns = {c["name"]: c for c in json.loads(run.stdout)["columns"]}
    assert list(columns) == ["seed", "guard-only", "precise"]
    seed, guard = columns["seed"]["result"], columns["guard-only"]["result"]
    assert (seed["finish_reason"], seed["output_tokens"], seed["metrics"]["looped"]) == ("length", LIMIT, True)
    assert guard["finish_reason"] == "repetition" and guard["output_tokens"] < LIMIT
    assert seed["text"].startswith(guard["text"])
    assert columns["guard-only"]["options"]["loop_guard"] is True and columns["seed"]["options"]["loop_guard"] is False

    bad = cli(*base, "--presets", "seed,fast")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["error: unknown preset(s) fast in --presets; choose from seed, guard-only, precise, creative"]


def test_table_lists_every_measure_per_column(engine):
    request = engine.request(picture(seed=LOOPING_INPUT[0]), LOOPING_INPUT[1])
    columns = compare(engine, request, plan("seed,guard-only", {"max_new_tokens": 40}))
    table = columns_table(columns)
    header, rule, *rows = table.splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.split("|")]

    assert cells(header) == ["", "seed", "guard-only"] and set(rule) <= {"-", "+"}
    labels = [cells(row)[0] for row in rows if "|" in row]
    assert labels[:5] == ["tokens generated", "time (s)", "first token (s)", "tokens/s", "finish reason"]
    assert "looped" in labels and "distinct_4" in labels
    assert cells(rows[0])[1:] == [str(columns[0].result.output_tokens), str(columns[1].result.output_tokens)]
    assert len({len(line) for line in [header, rule, *rows[:3]]}) == 1  # columns line up
    assert f"[guard-only] {preview(columns[1].result.text)}" in table
