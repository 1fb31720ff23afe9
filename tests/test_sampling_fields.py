"""`logprobs`/`top_logprobs`, `n` and `logit_bias`: the token chooser's pieces, the engine's
entries, and the server driven by the official `openai` client on loopback.

The tiny checkpoint is random, so answers are noise; what is checked is the arithmetic (the
log probabilities are the model's own, the bias moves the choice), that entries and text agree,
and OpenAI's shapes and refusals.
"""

from __future__ import annotations

import itertools
import re
import time

import httpx
import openai
import pytest
import torch
from helpers import picture
from transformers.convert_slow_tokenizer import bytes_to_unicode

from smolsight.engine import Chunk, GenerationOptions
from smolsight.engine.decoding import TokenChooser
from smolsight.engine.logprobs import LogprobTrail, Pick
from smolsight.errors import SmolsightError
from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings

VOCAB = 50
QUESTION = [{"role": "user", "content": "Describe a cat."}]
PLAIN = {"preset": "seed"}  # greedy, no penalty, no loop guard or de-duplication: nothing trims the text


def choose(options: GenerationOptions, logits: torch.Tensor) -> tuple[torch.Tensor, TokenChooser]:
    chooser = TokenChooser(options, torch.zeros(logits.shape[0], 1, dtype=torch.long), VOCAB)
    return chooser(logits.clone()), chooser


# ---- the token chooser ---------------------------------------------------------------------


def test_logit_bias_forces_one_token_and_bans_another():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(0))
    top, second = torch.topk(logits[0], 2).indices.tolist()
    forced, _ = choose(GenerationOptions(logit_bias=((7, 100.0),)), logits)
    assert forced.tolist() == [7, 7]
    banned, _ = choose(GenerationOptions(logit_bias=((top, -100.0),)), logits[:1])
    assert banned.tolist() == [second]


def test_logprobs_are_the_models_own_distribution_whatever_chose_the_token():
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1))
    options = GenerationOptions(logprobs=4, logit_bias=((9, 100.0),), repetition_penalty=1.3)
    tokens, chooser = choose(options, logits)
    picks = chooser.picks(tokens)
    expected = logits.log_softmax(-1)
    for row, pick in enumerate(picks):
        assert pick.token == 9 and pick.logprob == pytest.approx(expected[row, 9].item())
        assert [token for token, _ in pick.top] == torch.topk(logits[row], 4).indices.tolist()
        values = [value for _, value in pick.top]
        assert values == sorted(values, reverse=True) and values[0] == pytest.approx(expected[row].max().item())


def test_nothing_is_computed_for_logprobs_unless_asked():
    tokens, chooser = choose(GenerationOptions(), torch.randn(2, VOCAB))
    assert chooser.picks(tokens) is None and chooser.log_probs is None


def test_logit_bias_options_are_checked_and_hashable():
    options = GenerationOptions().with_overrides(logit_bias={"12": -100, "3": 5})
    assert options.logit_bias == ((3, 5.0), (12, -100.0)) and hash(options)
    assert options.to_dict()["logit_bias"] == {"3": 5.0, "12": -100.0}
    for bad in ({"3": 101}, {"-1": 1}, {"x": 1}):
        with pytest.raises(SmolsightError, match="logit_bias"):
            GenerationOptions().with_overrides(logit_bias=bad)
    with pytest.raises(SmolsightError, match="outside the model's vocabulary of 50"):
        options.with_overrides(logit_bias={"50": 1}).check_vocabulary(VOCAB)
    with pytest.raises(SmolsightError, match="logprobs"):
        GenerationOptions(logprobs=21)


def test_each_choice_samples_with_the_next_seed_and_greedy_choices_are_one():
    sampled = GenerationOptions(temperature=0.8, seed=41)
    assert [sampled.for_choice(i).seed for i in range(3)] == [41, 42, 43]
    assert GenerationOptions(seed=41).for_choice(2) == GenerationOptions(seed=41)
    assert GenerationOptions(temperature=0.8, seed=2**64 - 1).for_choice(1).seed == 0


def test_a_trail_hands_out_entries_as_their_text_settles_and_stops_at_the_cut():
    trail = LogprobTrail()
    texts = type("Texts", (), {"entry": staticmethod(lambda pick: pick.token)})()
    for token, (start, end) in enumerate([(0, 3), (3, 7), (7, 9), (9, 12)]):
        trail.add(Pick(token, -1.0, ()), start, end)
    assert trail.release(5, texts) == [0] and trail.release(5, texts) == []
    trail.cut(8)  # a stop string starts inside token 2: it made part of the answer, token 3 none
    assert trail.release(None, texts) == [1, 2] and trail.entries == [0, 1, 2]


# ---- the engine ----------------------------------------------------------------------------


def test_entries_cover_the_answers_tokens_streamed_or_not(engine):
    result = engine.ask(None, "Describe a cat.", max_new_tokens=10, logprobs=2, preset="seed")
    entries = result.logprobs
    assert len(entries) == result.output_tokens == 10
    assert bytes(b for entry in entries for b in entry.bytes).decode() == result.raw_text
    assert "".join(entry.token for entry in entries).strip() == result.text
    events = list(engine.stream(None, "Describe a cat.", max_new_tokens=10, logprobs=2, preset="seed"))
    chunks = [event for event in events if isinstance(event, Chunk)]
    assert [entry for chunk in chunks for entry in chunk.logprobs] == entries
    assert all("".join(e.token for e in chunk.logprobs).strip() == chunk.text.strip() for chunk in chunks)
    assert engine.ask(None, "Describe a cat.", max_new_tokens=4, preset="seed").logprobs is None


def test_a_last_token_without_text_keeps_its_entry(engine):
    """A special token decodes to no text: an answer that ends on one (here every token is one,
    forced by logit_bias, until max_tokens) still has one entry per token."""
    special = engine.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    assert special not in engine.eos_ids
    result = engine.ask(None, "Describe a cat.", max_new_tokens=3, logprobs=0, preset="seed", logit_bias=((special, 100.0),))
    assert result.raw_text == "" and result.output_tokens == 3
    assert [entry.token for entry in result.logprobs] == ["<fake_token_around_image>"] * 3


def test_entries_stop_at_the_loop_guards_cut(engine):
    for seed, split in itertools.product(range(4), (True, False)):  # as test_server's repetition test finds a loop
        result = engine.ask(picture(seed=seed), "Describe.", max_new_tokens=150, split=split, logprobs=0, dedupe_sentences=False)
        if result.finish_reason == "repetition":
            break
    else:
        pytest.fail("the tiny model looped on none of the inputs")
    assert len(result.logprobs) < result.output_tokens  # the loop's copies were generated, and cut with their entries
    assert "".join(entry.token for entry in result.logprobs).strip() == result.text


def test_special_tokens_have_a_name_but_no_bytes_and_the_bytes_join_into_the_raw_text(engine):
    tile = engine.tokenizer.convert_tokens_to_ids("<row_5_col_3>")
    forced = engine.ask(None, "Describe a cat.", max_new_tokens=3, logprobs=0, preset="seed", logit_bias={tile: 100})
    assert forced.logprobs and {(entry.token, entry.bytes) for entry in forced.logprobs} == {("<row_5_col_3>", None)}  # decoding skips it
    assert forced.raw_text == ""
    result = engine.ask(None, "Describe a cat.", max_new_tokens=150, logprobs=0, preset="seed")
    joined = bytes(b for entry in result.logprobs for b in entry.bytes or [])
    assert joined.decode(errors="replace") == result.raw_text


def test_entries_end_where_a_stop_string_ends_the_answer(engine):
    plain = engine.ask(None, "Describe a cat.", max_new_tokens=10, logprobs=0, preset="seed")
    stop = plain.logprobs[4].token.strip()  # the fifth token's word
    stopped = engine.ask(None, "Describe a cat.", max_new_tokens=10, logprobs=0, preset="seed", stop=[stop])
    assert stopped.finish_reason == "stop" and stopped.logprobs == plain.logprobs[:5]
    assert all(entry.top_logprobs == [] for entry in stopped.logprobs)


# ---- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(engine):
    with LoopbackServer(create_app(engine, ServerSettings(max_tokens=64, max_batch_size=4))) as live:
        yield live


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def ask(client, **fields):
    extra = {**PLAIN, **fields.pop("extra_body", {})}
    return client.chat.completions.create(model=None, messages=QUESTION, extra_body=extra, **fields)


def test_logprobs_in_a_response(client):
    reply = ask(client, max_tokens=8, logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens == 8 and choice.logprobs.refusal is None
    assert "".join(entry.token for entry in entries).strip() == choice.message.content
    for entry in entries:
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == entry.top_logprobs[0].logprob  # greedy
        assert bytes(entry.bytes).decode() == entry.token
    assert ask(client, max_tokens=2).choices[0].logprobs is None


def test_logprobs_in_a_stream_come_with_their_chunks_text(client):
    whole = ask(client, max_tokens=8, logprobs=True, top_logprobs=2).choices[0].logprobs.content
    chunks = list(ask(client, max_tokens=8, logprobs=True, top_logprobs=2, stream=True))
    pieces = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    assert all(piece.logprobs.content for piece in pieces)
    assert all("".join(e.token for e in p.logprobs.content).strip() == p.delta.content.strip() for p in pieces)
    assert [e for p in pieces for e in p.logprobs.content] == whole


def token_id(engine, entry) -> int:
    """The id of the token an entry names, from its bytes (byte-level BPE spells bytes as characters)."""
    return engine.tokenizer.convert_tokens_to_ids("".join(bytes_to_unicode()[b] for b in entry.bytes))


def test_logit_bias_forces_a_token_or_bans_greedys_pick(client, engine):
    forced = ask(client, max_tokens=3, logprobs=True, logit_bias={"1000": 100})
    assert [token_id(engine, entry) for entry in forced.choices[0].logprobs.content] == [1000] * 3
    first = ask(client, max_tokens=1, logprobs=True, top_logprobs=2).choices[0].logprobs.content[0]
    greedy_id = token_id(engine, first)
    banned = ask(client, max_tokens=1, logprobs=True, logit_bias={str(greedy_id): -100}).choices[0].logprobs.content[0]
    assert banned.token == first.top_logprobs[1].token and banned.logprob == first.top_logprobs[1].logprob


def test_n_sampled_choices_with_a_seed_are_distinct_and_reproducible(client):
    def three():
        return ask(client, max_tokens=6, n=3, temperature=1.0, seed=7, extra_body={"preset": "creative"})

    reply = three()
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in reply.choices]
    assert len(set(texts)) == 3 and [choice.message.content for choice in three().choices] == texts
    alone = ask(client, max_tokens=6, temperature=1.0, seed=7, extra_body={"preset": "creative"})
    assert alone.choices[0].message.content == texts[0]  # choice 0 uses the seed itself
    assert reply.usage.prompt_tokens == alone.usage.prompt_tokens
    assert reply.usage.completion_tokens == 3 * 6 and reply.usage.total_tokens == reply.usage.prompt_tokens + 18
    greedy = ask(client, max_tokens=6, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_n_streamed_chunks_name_their_choice(client):
    fields = {"max_tokens": 5, "n": 3, "temperature": 1.0, "seed": 3, "extra_body": {"preset": "creative"}}
    whole = ask(client, **fields)
    chunks = list(ask(client, **fields, stream=True, stream_options={"include_usage": True}))
    texts, finished = ["", "", ""], []
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.append(choice.index)
    assert texts == [choice.message.content for choice in whole.choices] and sorted(finished) == [0, 1, 2]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 15


BAD = [
    ("top_logprobs over 20", {"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ("top_logprobs without logprobs", {"top_logprobs": 2}, "top_logprobs needs logprobs"),
    ("logit_bias id outside the vocabulary", {"logit_bias": {"VOCAB": 5}}, "outside the model's vocabulary"),
    ("logit_bias over 100", {"logit_bias": {"5": 100.5}}, r"logit_bias values must be in \[-100, 100\]"),
    ("logit_bias key not a token id", {"logit_bias": {"cat": 5}}, "token ids"),
    ("n = 0", {"n": 0}, "n must be between 1 and 4"),
    ("n over the batch size", {"n": 5}, "n must be between 1 and 4"),
]  # fmt: skip


@pytest.mark.parametrize("fields, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_sampling_fields_answer_400_at_once(server, engine, fields, message):
    if "VOCAB" in fields.get("logit_bias", {}):  # the first id past the model's vocabulary
        fields = {"logit_bias": {str(engine.model.config.text_config.vocab_size): 5}}
    body = {"messages": QUESTION, "max_tokens": 4, **fields}
    started = time.perf_counter()
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400 and time.perf_counter() - started < 1.0, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert re.search(message, error["message"]), error["message"]
