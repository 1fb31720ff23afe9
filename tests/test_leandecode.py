"""The lean decode step must be transformers' forward, only faster: these tests run both on the same
prefilled caches of the tiny random checkpoint (float32) and compare their logits step by step, for
one row and for a left-padded batch of rows of different lengths, with and without int8; and the
engine must give the same greedy answers with the lean path on and off."""

from __future__ import annotations

import pytest
import torch

from smolsight.engine import Engine, cpu, fastpaths
from smolsight.engine.cpu import CpuDefaults
from smolsight.engine.leandecode import LeanDecodeStep
from smolsight.engine.slots import SlotCache

STEPS = 6
PROMPTS = ["Describe the farm and the road in a few words.", "Hi", "Count the red cars, please."]


def load(checkpoint: str, fast: str) -> Engine:
    return Engine.load(checkpoint, device="cpu", dtype="float32", quiet=True, fast=fast)


@pytest.fixture(scope="module")
def plain(tiny_checkpoint) -> Engine:
    return load(tiny_checkpoint, "none")


@pytest.fixture(scope="module")
def int8(tiny_checkpoint) -> Engine:
    return load(tiny_checkpoint, "int8")


def prefill(engine: Engine, prompts: list[str]):
    """Each prompt prefilled on its own through transformers' forward and joined to a slot cache, as
    the engine's loop does it: (slots, positions [B, 1], first tokens [B, 1])."""
    config = engine.model.config.text_config
    slots = SlotCache(config, len(prompts))
    positions, tokens = [], []
    for prompt in prompts:
        ids = engine.tokenizer(prompt, return_tensors="pt")["input_ids"]
        cache = fastpaths.growing_cache(config)
        out = engine.model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None], cache=cache, use_cache=True, logits_to_keep=1)
        slots.join(cache)
        positions.append(ids.shape[1] - 1)
        tokens.append(int(out.logits[0, -1].argmax()))
    return slots, torch.tensor(positions)[:, None], torch.tensor(tokens)[:, None]


def step_logits(engine: Engine, step, prompts: list[str]) -> list[torch.Tensor]:
    """Logits [B, V] of STEPS decode steps through `step`, fed the same tokens as the reference would be
    (a fixed token sequence, so both paths see identical inputs)."""
    with torch.inference_mode():
        slots, positions, tokens = prefill(engine, prompts)
        logits = []
        for i in range(STEPS):
            positions = positions + 1
            out = step(input_ids=tokens, attention_mask=slots.step_mask(), position_ids=positions, cache=slots.cache, use_cache=True)
            slots.advance()
            assert out.logits.shape == (len(prompts), 1, engine.model.config.text_config.vocab_size)
            logits.append(out.logits[:, -1].float())
            tokens = torch.full_like(tokens, 100 + 7 * i)
    return logits


def largest_gap(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """Largest |difference| over all steps, relative to the reference logits' largest magnitude."""
    return max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(reference, other))


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["one row", "padded batch of 3"])
def test_lean_step_gives_transformers_logits(plain, prompts):
    reference = step_logits(plain, plain.model, prompts)
    lean = step_logits(plain, LeanDecodeStep(plain.model, int8=False), prompts)
    assert largest_gap(reference, lean) < 1e-5


@pytest.mark.parametrize("attention", ["bfloat16", "float32"])
def test_a_bf16_lean_step_stays_as_near_the_float32_model_as_transformers_bf16_forward(tiny_checkpoint, plain, monkeypatch, attention):
    """In bf16 on CPU the lean step attends in bf16 or in float32 over a float32 copy of the bf16
    cache, as the CPU probe measured faster: either way its logits must stay as near the float32
    model's as transformers' own bf16 forward does, for a padded batch too."""
    monkeypatch.setattr(cpu, "defaults", lambda: CpuDefaults("bfloat16", True, "test", attention))
    bf16 = Engine.load(tiny_checkpoint, device="cpu", dtype="bfloat16", quiet=True, fast="none")
    exact = step_logits(plain, plain.model, PROMPTS)
    transformers_gap = largest_gap(exact, step_logits(bf16, bf16.model, PROMPTS))
    lean = LeanDecodeStep(bf16.model, int8=False)
    assert lean.attention_dtype == getattr(torch, attention)
    lean_gap = largest_gap(exact, step_logits(bf16, lean, PROMPTS))
    assert lean_gap <= 1.25 * transformers_gap


def test_lean_int8_step_gives_the_int8_forwards_logits(int8):
    """One row: the same int8 quantisation (per output channel, one activation scale per row) as the
    int8 fast path in transformers' forward; only the float arithmetic around it is ordered differently."""
    reference = step_logits(int8, int8.model, PROMPTS[:1])
    lean = step_logits(int8, LeanDecodeStep(int8.model, int8=True), PROMPTS[:1])
    assert largest_gap(reference, lean) < 1e-4


def test_lean_int8_batch_stays_near_the_float_logits(plain, int8):
    """Several rows go through one integer product (`Int8Linear`): each row's logits stay as near the
    float model's as the one-row int8 kernel's do."""
    exact = step_logits(plain, plain.model, PROMPTS)
    batched = step_logits(int8, LeanDecodeStep(int8.model, int8=True), PROMPTS)
    alone = [step_logits(int8, LeanDecodeStep(int8.model, int8=True), [prompt]) for prompt in PROMPTS]
    per_row_gap = max(largest_gap([step[i : i + 1] for step in exact], row) for i, row in enumerate(alone))
    assert largest_gap(exact, batched) <= max(2 * per_row_gap, 1e-3)


def test_lean_step_writes_the_engines_cache(plain):
    """Keys and values land in the same cache slots transformers' forward writes, at the same places."""
    with torch.inference_mode():
        caches = []
        for step in (plain.model, LeanDecodeStep(plain.model, int8=False)):
            slots, positions, tokens = prefill(plain, PROMPTS)
            step(input_ids=tokens, attention_mask=slots.step_mask(), position_ids=positions + 1, cache=slots.cache, use_cache=True)
            slots.advance()
            caches.append(slots.cache)
    for hf_layer, lean_layer in zip(*(c.layers for c in caches), strict=True):
        assert torch.allclose(lean_layer.key_buffer, hf_layer.key_buffer, atol=1e-5)
        assert torch.allclose(lean_layer.value_buffer, hf_layer.value_buffer, atol=1e-5)


@pytest.mark.parametrize("spec", ["lean", "int8,lean"])
def test_engine_answers_the_same_with_the_lean_path(tiny_checkpoint, plain, int8, spec):
    reference = plain if spec == "lean" else int8
    lean = load(tiny_checkpoint, spec)
    assert isinstance(lean.decode_forward, LeanDecodeStep)
    questions = [("Say something about farms and roads.", 20), ("What is red?", 12)]
    for question, tokens in questions:
        expected = reference.ask(None, question, "seed", max_new_tokens=tokens, min_new_tokens=tokens)
        got = lean.ask(None, question, "seed", max_new_tokens=tokens, min_new_tokens=tokens)
        assert got.raw_text == expected.raw_text and got.output_tokens == tokens


def test_batched_int8_rows_are_independent_and_close_to_float():
    """From two rows on, one integer product with a scale per row: a row's output does not depend on
    the other rows' values, and stays as close to the float product as the one-row kernel does."""
    from smolsight.engine.leandecode import Int8Linear

    torch.manual_seed(0)
    weight = torch.randn(96, 64) * 0.05
    linear = Int8Linear(weight)
    rows = torch.randn(3, 64) * torch.tensor([1.0, 40.0, 0.01])[:, None]
    together = linear(rows)
    with_other_neighbours = linear(torch.cat([rows[:1], torch.randn(2, 64) * 1000]))
    assert torch.equal(together[0], with_other_neighbours[0])
    exact = rows @ weight.t()
    alone = torch.cat([linear(row[None]) for row in rows])
    for got in (together, alone):
        assert ((got - exact).abs().amax(1) <= 0.04 * exact.abs().amax(1)).all()  # 7-bit activations alone: ~2 %
