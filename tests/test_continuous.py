"""Continuous batching: rows that join a running generation, prefill in chunks, and leave early must
get exactly the tokens they get alone (greedy, float32), and the slot cache must hold exactly what
per-row concatenation would."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import picture

from smolsight.engine import Engine, Request
from smolsight.engine.options import resolve_options
from smolsight.engine.prompts import Message
from smolsight.engine.slots import SlotCache


@pytest.fixture(scope="module")
def exact(tiny_checkpoint) -> Engine:
    return Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True, fast="none")


def request(prompt: str, tokens: int, image: int | None = None) -> Request:
    images = [picture(160 + 40 * image, 120, seed=image)] if image is not None else []
    return Request([Message("user", prompt, images=images)], resolve_options("seed", max_new_tokens=tokens, min_new_tokens=tokens))


def alone(engine: Engine, req: Request) -> str:
    return engine.ask_batch([req])[0].raw_text


def run(engine: Engine, schedule: dict[int, list[Request]], max_rows: int, prefill_chunk: int) -> dict[int, str]:
    """Add `schedule[step]` before that step; run until idle; raw text by key."""
    generation = engine.generation(max_rows, prefill_chunk)
    texts, key, step = {}, 0, 0
    while step <= max(schedule) or not generation.idle:
        for req in schedule.get(step, []):
            generation.add(key, req, engine.prepare(req), 0.0)
            key += 1
        for event in generation.step():
            if hasattr(event, "finish_reason"):
                texts[event.row] = event.raw_text
        step += 1
    return texts


def test_rows_joining_mid_decode_get_their_own_answers(exact):
    """Short and long prompts (the window widens left and right), an image prompt that joins
    late, slots freed and reused: every row's tokens equal its tokens alone."""
    reqs = [
        request("Hi.", 6),
        request("Describe the road, the cars and the weather in detail.", 20),
        request("What is here?", 9, image=1),
        request("x", 4),
        request("Count the trucks near the loading bay.", 12, image=2),
    ]
    schedule = {0: reqs[:1], 2: reqs[1:3], 5: reqs[3:4], 11: reqs[4:]}
    got = run(exact, schedule, max_rows=3, prefill_chunk=40)
    assert got == {i: alone(exact, r) for i, r in enumerate(reqs)}


@pytest.mark.parametrize("chunk", [1, 17])
def test_chunked_prefill_gives_the_unchunked_tokens(exact, chunk):
    """The image prompt joins while a long answer decodes, so it is prefilled `chunk` tokens a step."""
    decoding = request("Tell me about roads.", 400)
    req = request("What colour is the shape?", 8, image=3)
    steps = []
    generation = exact.generation(max_rows=2, prefill_chunk=chunk)
    generation.add(0, decoding, exact.prepare(decoding), 0.0)
    generation.step()
    generation.add(1, req, exact.prepare(req), 0.0)
    prompt = len(generation.queued[0].prepared["embeds"])
    while not (done := [e for e in generation.step() if getattr(e, "row", None) == 1 and hasattr(e, "finish_reason")]):
        steps.append(generation.queued[0].prefilled if generation.queued else prompt)
    assert done[0].raw_text == alone(exact, req)
    assert steps[: prompt // chunk - 1] == [chunk * (i + 1) for i in range(prompt // chunk - 1)]  # chunk by chunk


def test_with_nothing_decoding_a_prompt_is_prefilled_in_one_step(exact):
    req = request("What colour is the shape?", 4, image=3)
    generation = exact.generation(max_rows=1, prefill_chunk=8)
    generation.add(0, req, exact.prepare(req), 0.0)
    generation.step()
    assert not generation.queued and len(generation.running) == 1  # it decodes from the next step on
    assert run(exact, {0: [req]}, max_rows=1, prefill_chunk=8) == {0: alone(exact, req)}


def test_a_long_prefill_does_not_stop_running_rows(exact):
    """While a long prompt is prefilled in chunks, the running row gets a token at every step."""
    generation = exact.generation(max_rows=2, prefill_chunk=16)
    running = request("Hi.", 200)
    generation.add(0, running, exact.prepare(running), 0.0)
    while not generation.running:  # prefilled, first token
        generation.step()
    long = request("Describe everything.", 5, image=1)
    prepared = exact.prepare(long)
    generation.add(1, long, prepared, 0.0)
    chunks_needed = -(-len(prepared["input_ids"]) // 16)
    assert chunks_needed > 5
    tokens = len(generation.running[0].tokens)
    for _ in range(chunks_needed - 1):
        events = generation.step()
        assert {e.row for e in events} == {0} and generation.queued[0].prefilled > 0  # row 0 moved on, row 1 still prefilling
        assert len(generation.running[0].tokens) == tokens + 1
        tokens += 1
    events = generation.step()
    assert {e.row for e in events} == {0, 1}  # the long row's first token


def test_a_cancelled_queued_row_ends_before_prefill(exact):
    generation = exact.generation(max_rows=1, prefill_chunk=512)
    first, second = request("Hi.", 5), request("Hello.", 5)
    generation.add(0, first, exact.prepare(first), 0.0)
    generation.add(1, second, exact.prepare(second), 0.0)
    events = []
    while not generation.idle:
        events += generation.step(cancelled=lambda key: key == 1)
    results = {e.row: e for e in events if hasattr(e, "finish_reason")}
    assert results[1].finish_reason == "cancelled" and results[1].output_tokens == 0
    assert results[0].finish_reason == "length" and results[0].output_tokens == 5


class Prefilled:
    """A batch-of-one cache as a prefill leaves it: `layers[i].keys/values` [1, heads, length, dim]."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.layers = [type("Layer", (), {"keys": k[None], "values": v[None]}) for k, v in zip(keys, values, strict=True)]


def test_slot_cache_holds_what_per_row_concatenation_holds():
    """Random joins (shorter and longer than the window), steps and leaves, with growth past the
    first block: each running row's columns in the window, read through the mask, equal its own
    keys; the mask covers exactly its tokens."""
    from transformers import LlamaConfig

    rng = random.Random(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=16)
    slots = SlotCache(config, max_rows=4)
    rows: list[list[torch.Tensor]] = []  # per slot: per layer keys [heads, tokens, dim]
    for step in range(400):
        if slots.rows < 4 and rng.random() < 0.15:
            length = rng.choice([1, 3, 40, 300])
            keys = [torch.randn(2, length, 8) for _ in range(2)]
            slots.join(Prefilled(keys, [k + 1 for k in keys]))
            rows.append(keys)
        if slots.rows and rng.random() < 0.05:
            slot = rng.randrange(slots.rows)
            slots.remove(slot)
            rows[slot] = rows[-1]
            rows.pop()
        if slots.rows:
            mask = slots.step_mask()
            new = [torch.randn(slots.rows, 2, 1, 8) for _ in range(2)]
            for layer, keys in zip(slots.cache.layers, new, strict=True):
                got_keys, got_values = layer.update(keys, keys + 1)
            rows = [[torch.cat([k, new[i][r]], dim=1) for i, k in enumerate(row)] for r, row in enumerate(rows)]
            slots.advance()
            assert mask.shape == (slots.rows, slots.window.end - slots.window.start)
            for r, row in enumerate(rows):
                length = row[0].shape[1]
                assert mask[r].sum() == length and mask[r, -length:].all()
                for i, layer in enumerate(slots.cache.layers):
                    window = layer.key_buffer[r, :, slots.window.start : slots.window.end]
                    assert torch.equal(window[:, -length:], row[i])
                    assert torch.equal(layer.value_buffer[r, :, slots.window.end - length : slots.window.end], row[i] + 1)
            assert max(row[0].shape[1] for row in rows) == slots.window.end - slots.window.start  # no padding-only columns attended
