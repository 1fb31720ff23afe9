"""Long loops and clean cuts: the guard on sentence- and paragraph-long units (as a real model's
loops are), where it cuts them, and streaming that sends exactly the answer returned.

Text is tokenized with the tiny checkpoint's byte-level tokenizer, a token per byte, so a unit's
period in tokens is its length in UTF-8 bytes and a Chinese character is three tokens: a cut in
the wrong place shows as U+FFFD."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import cli, picture

import smolsight
from smolsight.engine import Chunk, Result
from smolsight.engine.decoding import LoopGuard, boundary_rank, clean_cut, layout_tokens, make_guard
from smolsight.engine.options import GenerationOptions

DEFAULTS = GenerationOptions()
WORDS = "crane lifts steel beam over yard while worker signals driver waits near gate truck".split()


def guarded(engine, text: str, options: GenerationOptions = DEFAULTS) -> tuple[str, int, object] | None:
    """(kept text, tokens pushed when the guard fired, hit) for `text` streamed token by token."""
    tokens = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    guard = make_guard(options, layout_tokens(engine.tokenizer, len(engine.tokenizer)))
    for count, token in enumerate(tokens, start=1):
        hit = guard.push(token)
        if hit is not None:
            return engine.decode(tokens[: clean_cut(tokens, hit, engine.decode)]), count, hit
    return None


def sentence(length: int, seed: int) -> str:
    """Random words, exactly `length` characters, ending in '. ' (so never periodic itself)."""
    rng = random.Random(seed)
    words = []
    while len(" ".join(words)) < length:
        words.append(rng.choice(WORDS))
    return (" ".join(words)[: length - 2].rstrip() + ". ").rjust(length, "x")


@pytest.mark.parametrize("period", [100, 200, 500])
def test_long_units_are_stopped_after_k_copies_and_kept_once(engine, period):
    prefix = "The yard camera shows this:\n"
    unit = sentence(period, seed=period)
    kept, count, hit = guarded(engine, prefix + unit * 8)
    assert hit.period == period
    assert count == len(prefix) + DEFAULTS.guard_repeats * period
    assert kept == prefix + unit


def test_beyond_the_window_nothing_fires_and_a_wider_window_catches_it(engine):
    unit = sentence(600, seed=1)
    assert guarded(engine, unit * 5) is None
    kept, _, _ = guarded(engine, unit * 5, GenerationOptions(guard_window=1024))
    assert kept == unit


def test_chinese_sentence_ten_times(engine):
    lead = "图中是一枝开满红白花朵的树枝。"
    unit = "树枝在蓝天的映衬下格外醒目，这使得花朵显得更加美丽。"  # 26 characters, 78 tokens
    kept, count, hit = guarded(engine, lead + unit * 10)
    assert hit.period == len(unit.encode())
    assert kept == lead + unit and "\ufffd" not in kept
    assert count < len((lead + unit * 5).encode())


def test_whole_answer_five_times(engine):
    answer = ("The truck is red and parked by the gate. Two workers stand next to it, one holding "
              "a clipboard.\n\nNo smoke or fire is visible in the yard.\n\n")  # fmt: skip
    kept, _, hit = guarded(engine, answer * 5)
    assert hit.period == len(answer)
    assert kept == answer


def test_a_loop_whose_tail_matches_the_text_before_it_is_cut_after_a_whole_unit(engine):
    """The repeating stretch begins inside the sentence before the loop (" is blue. " is shared),
    so its first `period` tokens end mid-word ("…The car"); the cut goes to the unit's end."""
    prefix = "The sky over the yard is blue. "
    unit = "The new delivery truck by the gate is blue. "
    text = prefix + unit * 6
    kept, _, hit = guarded(engine, text)
    tokens = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert hit.loop_start < len(prefix)  # the stretch starts inside the prefix
    assert engine.decode(tokens[: hit.keep]).endswith("The new delivery truck by the gate")  # a rotated unit
    assert kept.rstrip() == (prefix + unit).rstrip()


def test_a_cut_never_splits_a_character(engine):
    """帽 (E5 B8 BD) and 丽 (E4 B8 BD) share their last two bytes, so the repeating stretch starts
    inside 帽 and its first copy ends inside 丽."""
    prefix, unit = "一顶帽", "子旁边的花朵显得更加美丽"
    text = prefix + unit * 8
    kept, _, hit = guarded(engine, text)
    tokens = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert engine.decode(tokens[: hit.keep]).endswith("\ufffd")  # where the first copy ends
    assert "\ufffd" not in kept and kept.encode().decode("utf-8") == kept
    assert kept.startswith(prefix) and len(kept) <= len(prefix + unit) + 1


TABLE_HEAD = "| Camera | Zone | Vehicles |\n| --- | --- | --- |\n"
ROW = "| cam-01 | gate | 3 |\n"


def test_identical_table_rows_are_cut_after_a_whole_row(engine):
    kept, _, _ = guarded(engine, TABLE_HEAD + ROW * 12)
    assert kept == TABLE_HEAD + ROW


def test_json_array_of_identical_objects_is_cut_after_a_whole_object(engine):
    item = '{"label": "truck", "zone": "gate"}'
    kept, _, _ = guarded(engine, "[" + ", ".join([item] * 12) + "]")
    assert kept.rstrip() in ("[" + item, "[" + item + ",")
    lines = "[\n" + '  {\n    "label": "truck",\n    "zone": "gate"\n  },\n' * 10
    kept, _, _ = guarded(engine, lines)
    assert kept == '[\n  {\n    "label": "truck",\n    "zone": "gate"\n  },\n'


LEGIT = {
    "json, similar objects": json.dumps([{"label": "truck", "zone": "gate", "count": i} for i in range(30)], indent=2),
    "json, one line": json.dumps([{"label": "truck", "zone": z, "count": 3} for z in "ABCDEFGHIJKLMNOPQRSTUV"]),
    "table": TABLE_HEAD + "".join(f"| cam-{i:02d} | gate | {i % 4} |\n" for i in range(1, 40)),
    "numbered list": "".join(f"{i}. A white van parked at bay {i}.\n" for i in range(1, 40)),
    "ha ha ha": "He laughed, " + "ha " * 7 + "and drove on. " * 1 + "She smiled.",
    "wide rule": "Results\n" + "-" * 90 + "\nAll clear.\n",
}


@pytest.mark.parametrize("name", list(LEGIT))
def test_legitimate_text_survives_the_default_window(engine, name):
    assert guarded(engine, LEGIT[name]) is None


@pytest.mark.parametrize(
    "left, right, rank",
    [("bea", "m", 0), ("beam", " over", 1), ("beam,", " then", 2), ("blue.", " The", 3), ('"gate"}', ", {", 3),
     ("3.", "5 m", 0), ("。", "这", 3), ("，", "这", 2), ("ok |\n", "| cam", 5), ("{\n", '  "a"', 4), ("美\ufffd", "x", -1)],
)  # fmt: skip
def test_boundary_rank(left, right, rank):
    assert boundary_rank(left, right) == rank


def test_cost_per_step_stays_bounded_at_window_512():
    """Not timed (times are for `smolsight.bench.guard_step_cost`): the state is fixed in size."""
    guard = LoopGuard(window=512)
    rng = random.Random(0)
    for _ in range(20_000):
        guard.push(rng.randrange(40_000))
    assert guard.history.size == 513 and guard.run.size == 512


# --- streaming through the engine ---------------------------------------------------------------


@pytest.mark.parametrize("preset, knobs", [("seed", {}), ("seed", {"loop_guard": True}), ("precise", {})])
def test_streamed_text_is_the_answer(engine, preset, knobs):
    for seed in range(4):
        events = list(engine.stream(picture(seed=seed), "Describe.", preset, max_new_tokens=80, split=False, **knobs))
        result = events[-1]
        assert isinstance(result, Result)
        assert "".join(e.text for e in events if isinstance(e, Chunk)) == result.text


def test_stream_holds_back_only_what_may_still_be_cut(engine):
    """Guard-only on the looping input: the loop's copies are never sent, the text before the
    loop arrives as it is made, and the answer says how much was held back at most."""
    events = list(engine.stream(picture(seed=0), "What colour is the truck?", "seed", loop_guard=True, max_new_tokens=120))
    result = events[-1]
    assert result.finish_reason == "repetition"
    assert "".join(e.text for e in events if isinstance(e, Chunk)) == result.text
    assert 0 < result.held_back_chars <= len(result.raw_text) - len(result.text) + DEFAULTS.guard_min_tokens * 8


# --- text-only measurement: compare-presets and eval without media --------------------------------


def test_compare_presets_takes_a_prompt_alone(tiny_checkpoint):
    run = cli("compare-presets", "What colour is a ripe banana?", "-q", "--model", tiny_checkpoint, "--dtype", "float32",
              "--presets", "seed,guard-only", "--max-new-tokens", "30", "--no-prompt-penalty", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    columns = json.loads(run.stdout)["columns"]
    assert [c["name"] for c in columns] == ["seed", "guard-only"]
    assert all(c["result"]["output_tokens"] > 0 and c["options"]["penalize_prompt"] is False for c in columns)


def test_eval_runs_a_text_only_suite(tiny_checkpoint, tmp_path):
    suite = tmp_path / "text.yaml"
    suite.write_text("cases:\n"
                     "  - {id: capital, scenario: facts, lang: en, prompt: 'What is the capital of France?', answer_type: contains_all, expected: [Paris]}\n"
                     "  - {id: fire, scenario: accident, lang: en, prompt: 'Describe a fire.', answer_type: free}\n")  # fmt: skip
    run = cli("eval", str(suite), "-q", "--model", tiny_checkpoint, "--dtype", "float32", "--max-new-tokens", "20",
              "--prompt-style", "raw", "--batch-size", "2", "-o", str(tmp_path / "out"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(c["id"], c["media"], c["finish_reason"] != "error") for c in results["cases"]] == [("capital", [], True), ("fire", [], True)]
    assert "text only" in (tmp_path / "out" / "report.html").read_text()


def test_the_shipped_text_suite_loads():
    from smolsight.evals.suite import load_suite

    suite = load_suite(Path(smolsight.__file__).parent / "evals" / "data" / "repetition.yaml")
    assert len(suite) >= 40 and all(not case.media for case in suite)
    assert {c.scenario for c in suite} == {"facts", "scenery", "accident", "simulation", "counting", "text", "measurement"}
    assert {c.lang for c in suite if c.scenario == "facts"} == {"en", "zh"}


def test_server_sent_events_carry_exactly_the_answer(engine):
    """Over HTTP: the events' text, joined, is the non-streamed answer, loops trimmed or not."""
    import base64
    import io

    import httpx

    from smolsight.serve.loopback import LoopbackServer
    from smolsight.serve.app import create_app
    from smolsight.serve.settings import ServerSettings

    buffer = io.BytesIO()
    picture(seed=0).save(buffer, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "What colour is the truck?"}]}]
    with LoopbackServer(create_app(engine, ServerSettings(max_tokens=160))) as server:
        url = f"{server.url}/v1/chat/completions"
        for preset in ("seed", "precise"):
            body = {"messages": messages, "max_tokens": 120, "preset": preset}
            answer = httpx.post(url, json=body, timeout=60).json()["choices"][0]["message"]["content"]
            with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as response:
                events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
            streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
            assert streamed == answer and answer


def test_sentences_repeating_with_varying_separators_end_the_answer():
    """No stretch of tokens is periodic ("S. S.\\n\\nT S.\\n\\n…"), so the guard cannot see this loop;
    the sentence filter drops every repeat and, three in a row, the answer ends."""
    from smolsight.engine.answer import STOP_AFTER_DROPPED, AnswerText

    s = "The heat equation is used to solve this equation. "
    t = "It describes the motion of a heat source in a heat field."
    text = f"Intro about heat. {s}{t}\n\n" + f"{s}{s}\n\n{t} {s}\n\n" * 5
    answer, raw, out = AnswerText(DEFAULTS), "", ""
    for char in text:
        raw += char
        out += answer.advance(raw, len(raw))
        if answer.repeating:
            out += answer.end_repeating()
            break
    assert answer.repeating and STOP_AFTER_DROPPED == 3
    assert out == answer.text == f"Intro about heat. {s}{t}"
    assert len(raw) < len(text) / 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 3. " + "Japanese-style " * 10 + "screens.", True),
        ("开头。" + "这使得花朵显得更加美丽。" * 3, True),
        ("中国的首都是哪里？？" + "－" * 30 + "！" * 5 + "\ufffd", True),
        ("S one is here. S one is here.\n\nS one is here. Done.", True),
        (LEGIT["numbered list"], False),
        (LEGIT["table"], False),
        (LEGIT["json, similar objects"], False),
        ("He laughed, ha ha ha ha, and left. def f():\n        return 1\n", False),
    ],
)
def test_independent_loop_detector(text, expected):
    from loopcheck import looped

    assert looped(text) is expected
