"""Structured output in the engine (smolsight.engine.structured): a random-weight model's answer
is JSON that validates against the schema, streamed exactly, in batches beside free-text rows."""

from __future__ import annotations

import json

import jsonschema
import pytest

from smolsight.engine import Chunk, Request, Result
from smolsight.engine.structured import JsonPosition, json_object, json_schema, parse_response_format, read_schema_file
from smolsight.errors import SmolsightError

DETECTION = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "count": {"type": "integer", "minimum": 0},
        "confidence": {"type": "number"},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "box": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "seen": {"type": "boolean"}},
            "required": ["x", "y", "seen"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "count", "confidence", "colour", "tags", "box"],
    "additionalProperties": False,
}


def valid(text: str, schema: dict) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def streamed(engine, requests: list[Request]) -> tuple[dict[int, str], dict[int, Result]]:
    pieces: dict[int, str] = {}
    results: dict[int, Result] = {}
    for event in engine.stream_batch(requests):
        if isinstance(event, Chunk):
            pieces[event.row] = pieces.get(event.row, "") + event.text
        else:
            results[event.row] = event
    return pieces, results


def test_response_format_is_read_in_openais_shape():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format({"type": "json_object"}) == json_object()
    fmt = parse_response_format({"type": "json_schema", "json_schema": {"name": "detection", "schema": DETECTION, "strict": True}})
    assert fmt.kind == "json_schema" and fmt.name == "detection" and json.loads(fmt.schema) == DETECTION
    assert fmt == json_schema(json.loads(json.dumps(DETECTION)), "detection")  # the same schema is the same cache key


@pytest.mark.parametrize(
    "value, message",
    [
        ({"type": "xml"}, "response_format type 'xml' is not one of text, json_object, json_schema"),
        ({"type": "json_schema"}, "response_format json_schema needs a json_schema object"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": []}}, "the JSON schema must be a JSON object, not list"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}, "invalid JSON schema: Invalid type: strin"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}, 'Unimplemented keys: ["not"]'),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}}, "does not exist"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_refused(value, message):
    with pytest.raises(SmolsightError) as caught:
        parse_response_format(value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_schema_files_are_checked(tmp_path):
    assert read_schema_file(write(tmp_path / "d.json", json.dumps(DETECTION))).name == "d"
    for path, message in [
        (tmp_path / "absent.json", "absent.json: no such JSON schema file"),
        (write(tmp_path / "bad.json", "{not json"), "bad.json: not valid JSON"),
        (write(tmp_path / "odd.json", '{"type": "object", "if": {}}'), 'odd.json: unsupported or invalid JSON schema: Unimplemented keys: ["if"]'),
    ]:
        with pytest.raises(SmolsightError) as caught:
            read_schema_file(str(path))
        assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("max_new_tokens", [120, 300])
def test_a_random_model_answers_json_that_validates(engine, max_new_tokens):
    """The tiny model's vocabulary is single bytes, so the smallest valid answer takes ~80 tokens;
    whatever the budget above that, closing finishes the JSON in time."""
    result = engine.ask(None, "Describe the scene.", response_format=json_schema(DETECTION), max_new_tokens=max_new_tokens)
    value = valid(result.text, DETECTION)
    assert list(value) == list(DETECTION["properties"])  # keys in the schema's order
    assert result.finish_reason == "stop" and result.output_tokens <= max_new_tokens
    assert result.raw_text == result.text


def test_a_budget_too_small_for_any_valid_json_ends_with_length(engine):
    result = engine.ask(None, "Describe the scene.", response_format=json_schema(DETECTION), max_new_tokens=20)
    assert result.finish_reason == "length" and result.output_tokens == 20
    assert result.text.startswith('{"label":"')


def test_json_object_streams_exactly_with_images_in_a_mixed_batch(engine, image_file):
    """Constrained and free rows in one batch; every row's chunks concatenate to its final text;
    the free row is the same as when asked alone."""
    requests = [
        engine.request(image_file, "What is this?", response_format=json_object(), max_new_tokens=60),
        engine.request(image_file, "What is this?", max_new_tokens=40),
        engine.request(None, "Count them.", response_format=json_schema(DETECTION), max_new_tokens=150),
        engine.request(image_file, "Colours?", response_format=json_object(), preset="creative", seed=3, max_new_tokens=80),
    ]
    pieces, results = streamed(engine, requests)
    assert all(pieces.get(row, "") == results[row].text for row in results)
    assert isinstance(valid(results[0].text, {"type": "object"}), dict) and results[0].finish_reason == "stop"
    valid(results[2].text, DETECTION)
    valid(results[3].text, {"type": "object"})
    assert results[1].text == engine.ask(image_file, "What is this?", max_new_tokens=40).text


def test_the_loop_guard_closes_a_constrained_answer(engine):
    """A row stuck repeating one token inside a string: the guard does not cut it (that would
    leave broken JSON) but switches the row to closing, which ends the JSON at once."""
    from smolsight.engine.options import resolve_options

    constraint = engine.grammars.constraint(json_schema(DETECTION), resolve_options(max_new_tokens=4000))
    stuck = engine.tokenizer.encode('{"label":"', add_special_tokens=False) + [engine.tokenizer.convert_tokens_to_ids("Ġw7")] * 30
    for token in stuck:
        constraint.accept(token)
    assert constraint.closing
    text = engine.tokenizer.decode(stuck + closed(constraint, limit=200))
    assert text.startswith('{"label":"' + " w7" * 30 + '","count":')
    valid(text, DETECTION)


def closed(constraint, limit: int) -> list[int]:
    """The tokens a model that prefers high ids (filler words) writes until the JSON is complete."""
    import torch

    tokens = []
    while not constraint.complete:
        assert len(tokens) < limit, "closing did not finish"
        logits = torch.arange(constraint.vocabulary.size, dtype=torch.float32)
        constraint.mask(logits)
        tokens.append(int(logits.argmax()))
        constraint.accept(tokens[-1])
    return tokens


def test_json_position_follows_strings_escapes_and_nesting():
    position = JsonPosition().after('{"a":[{"b":"x\\"}')
    assert (position.depth, position.in_string) == (3, True)
    assert JsonPosition().after('{"a":"\\\\"').in_string is False
    assert JsonPosition().after('{"a":[1,{"b":"]}"}]').openness == 1


def test_ocr_answers_cannot_follow_a_response_format():
    from smolsight.engine import Request
    from smolsight.engine.prompts import Message

    with pytest.raises(SmolsightError, match="OCR's answer mode generates nothing"):
        Request([Message("user", "read")], ocr="answer", response_format=json_object())


# ---- smolsight ask --json-schema / --json-object ---------------------------------------------


def test_ask_json_schema_prints_json_that_validates(tiny_checkpoint, image_file, tmp_path):
    from helpers import cli

    schema = write(tmp_path / "detection.json", json.dumps(DETECTION))
    run = cli("ask", "-q", "--model", tiny_checkpoint, image_file, "What is there?", "--json-schema", schema, "--max-new-tokens", "150")
    assert run.returncode == 0, run.stderr
    valid(run.stdout.strip(), DETECTION)
    as_json = cli("ask", "-q", "--json", "--json-object", "--model", tiny_checkpoint, "Hi", "--max-new-tokens", "40")
    result = json.loads(as_json.stdout)
    assert isinstance(json.loads(result["text"]), dict) and result["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "file, words",
    [
        (None, "absent.json: no such JSON schema file"),
        ("[1, 2", "broken.json: not valid JSON (Expecting ',' delimiter: line 1 column 6 (char 5))"),
        ('{"type": "object", "properties": {"a": {"type": "string", "format": "colour"}}}', "broken.json: unsupported or invalid JSON schema: Unknown format: colour"),
        ('"object"', "broken.json: the JSON schema must be a JSON object, not str"),
    ],
)
def test_ask_refuses_a_bad_schema_file_before_the_model_loads(tmp_path, file, words):
    from helpers import cli

    path = tmp_path / "absent.json" if file is None else tmp_path / "broken.json"
    if file is not None:
        path.write_text(file)
    run = cli("ask", "--model", "/no/such/model", "Hi", "--json-schema", str(path))  # the model would fail if it were loaded first
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [f"error: {path.parent}/{words}"]
    both = cli("ask", "--model", "/no/such/model", "Hi", "--json-schema", str(path), "--json-object")
    assert both.returncode == 1 and both.stderr.strip() == "error: give --json-schema or --json-object, not both"

