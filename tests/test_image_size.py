"""The image cost policy: `image_size` as a longest edge or "native", on the engine and every
surface that takes it (CLI, server, watch rules), with the token prediction the limits use.

The tiny checkpoint's processor has 128-px tiles of 16 tokens and a 512-px longest edge, so a
64x64 picture costs 17 tiles (16 + 1 global view) by default and 1 tile when native."""

from __future__ import annotations

import openai
import pytest
import yaml
from helpers import cli, picture
from PIL import Image

from smolsight.engine import Request
from smolsight.engine.options import image_size_setting
from smolsight.engine.prompts import image_tokens
from smolsight.errors import SmolsightError
from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings
from smolsight.watch.rules import RulesError, load_rules

SIZES = [(64, 64), (200, 150), (800, 600), (130, 1000), (2000, 500), (512, 512), (129, 128)]


def image_token_count(engine, inputs) -> int:
    return int((inputs["input_ids"] == engine.model.config.image_token_id).sum())


def tokens_saved(engine, image, prompt: str) -> int:
    """Prompt tokens (image tokens and their row/column markers) that native saves over the default."""
    lengths = [engine.process(engine.request(image, prompt, image_size=size))["input_ids"].shape[1] for size in (None, "native")]
    return lengths[0] - lengths[1]


@pytest.mark.parametrize("image_size", [None, "native", 300])
def test_predicted_tokens_match_the_processor_under_each_policy(engine, image_size):
    for width, height in SIZES:
        inputs = engine.process(engine.request(Image.new("RGB", (width, height)), "x", image_size=image_size))
        assert image_tokens(engine.processor, width, height, True, image_size) == image_token_count(engine, inputs), (width, height)


def test_native_never_upscales_beyond_the_next_whole_tile(engine):
    per_tile = engine.processor.image_seq_len
    assert image_tokens(engine.processor, 64, 64, True, "native") == per_tile  # one 128-px tile
    assert image_tokens(engine.processor, 64, 64, True) == 17 * per_tile  # upscaled to 512 px: 4x4 tiles + global
    assert image_tokens(engine.processor, 200, 150, True, "native") == 5 * per_tile  # 256x256: 2x2 + global
    # longer than the model's edge: scaled down to it, as the model's own setting does
    assert image_tokens(engine.processor, 2000, 500, True, "native") == image_tokens(engine.processor, 2000, 500, True)
    small = engine.ask(picture(64, 64), "Describe.", max_new_tokens=2, image_size="native")
    default = engine.ask(picture(64, 64), "Describe.", max_new_tokens=2)
    assert default.input_tokens - small.input_tokens == tokens_saved(engine, picture(64, 64), "Describe.") > 16 * per_tile


def test_several_images_of_different_sizes_are_each_sized_on_their_own(engine):
    """The processor takes one size per call; under native each image keeps its own: its tiles in a
    mixed request are the tiles it gets alone."""
    images = [picture(64, 64), picture(300, 120, seed=1), picture(1500, 400, seed=2)]
    mixed = engine.process(engine.request(images, "Compare.", image_size="native"))
    assert image_token_count(engine, mixed) == sum(image_tokens(engine.processor, i.width, i.height, True, "native") for i in images)
    pixels = mixed["pixel_values"][0]
    start = 0
    for image in images:
        alone = engine.process(engine.request(image, "Compare.", image_size="native"))["pixel_values"][0]
        assert pixels[start : start + len(alone)].equal(alone)
        start += len(alone)


@pytest.mark.parametrize("value, expected", [(None, None), ("native", "native"), (640, 640), ("640", 640)])
def test_good_image_sizes_are_read(value, expected):
    assert image_size_setting(value) == expected


@pytest.mark.parametrize("value", ["big", 0, -5, 5000, True, 2.5, "Native"])
def test_bad_image_sizes_are_refused_before_any_image_is_read(value):
    with pytest.raises(SmolsightError, match=r"invalid image size .*use 'native' .* or a longest edge in pixels from 1 to 4096"):
        Request.simple("/no/such/picture.png", "What is it?", image_size=value)


def test_cli_refuses_a_bad_image_size_in_one_line_before_loading(tmp_path):
    picture().save(tmp_path / "p.png")
    outcome = cli("ask", str(tmp_path / "p.png"), "What is it?", "--image-size", "huge", "-m", "/no/such/model")
    assert outcome.returncode == 1 and outcome.stderr.count("\n") == 1
    assert outcome.stderr.startswith("error: invalid image size 'huge': use 'native'")


def test_cli_ask_native_costs_fewer_tokens(engine, tiny_checkpoint, tmp_path):
    import json

    picture(64, 64).save(tmp_path / "p.png")
    runs = {size: cli("ask", str(tmp_path / "p.png"), "What?", "-m", str(tiny_checkpoint), "--json", "-q", "--max-new-tokens", "2",
                      *(["--image-size", size] if size else []))
            for size in ("native", None)}  # fmt: skip
    tokens = {size: json.loads(run.stdout)["input_tokens"] for size, run in runs.items()}
    assert tokens[None] - tokens["native"] == tokens_saved(engine, picture(64, 64), "What?") > 0


def test_server_takes_image_size_and_refuses_bad_ones(engine):
    from test_server import data_uri

    content = [{"type": "image_url", "image_url": {"url": data_uri(picture(64, 64))}}, {"type": "text", "text": "What is it?"}]
    messages = [{"role": "user", "content": content}]
    with LoopbackServer(create_app(engine, ServerSettings())) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=0)
        usage = {size: client.chat.completions.create(model=engine.name, messages=messages, max_tokens=2, extra_body={"image_size": size}).usage
                 for size in ("native", None)}  # fmt: skip
        assert usage[None].prompt_tokens - usage["native"].prompt_tokens == tokens_saved(engine, picture(64, 64), "What is it?") > 0
        with pytest.raises(openai.UnprocessableEntityError) as error:  # the server's status for a value off the schema
            client.chat.completions.create(model=engine.name, messages=messages, max_tokens=2, extra_body={"image_size": "huge"})
    assert error.value.status_code == 422 and error.value.body["param"] == "image_size"
    assert error.value.body["message"] == "image_size: Value error, use 'native' (each image at its own size, in whole tiles) or a longest edge in pixels from 1 to 4096, not 'huge'"


def test_watch_rules_take_native_and_refuse_bad_sizes(tmp_path):
    def rules(size) -> str:
        source = {"name": "cam", "url": str(tmp_path), "image_size": size, "split": True,
                  "rules": [{"name": "fire", "ask": "Fire?", "every_s": 1}]}  # fmt: skip
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"sources": [source]}, sort_keys=False))
        return tmp_path / "rules.yaml"

    assert load_rules(rules("native")).sources[0].image_size == "native"
    assert load_rules(rules(640)).sources[0].image_size == 640
    with pytest.raises(RulesError, match=r"rules.yaml:4: sources\[0\].image_size: use 'native' .*, not 'big'"):
        load_rules(rules("big"))
