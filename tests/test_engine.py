"""The whole path (processor -> model -> generate -> decode) on the tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
from helpers import picture
from test_media import write_video
from transformers import SmolVLMVisionConfig

from smolsight.engine import Chunk, Engine, Request, Result, choose_runtime, resolve_model
from smolsight.errors import MediaError, ModelNotFoundError, SmolsightError
from smolsight.engine.options import resolve_options
from smolsight.engine.torch_vision import MMAP_THRESHOLD, TorchVision, tiles_per_group

SEED_40 = {"preset": "seed", "max_new_tokens": 40}


def test_one_image_answer_has_every_field(engine):
    result = engine.ask(picture(), "Describe this image.", **SEED_40)
    assert isinstance(result, Result)
    assert result.finish_reason == "length" and result.output_tokens == 40
    assert result.input_tokens > 16  # at least one tile's worth of image tokens
    assert 0 < result.ttft_s <= result.total_s
    assert (result.model, result.device, result.dtype, result.attn)[1:] == ("cpu", "float32", "sdpa")
    assert result.text and set(result.metrics) >= {"distinct_1", "looped"}


def test_chinese_and_english_prompts_differ(engine):
    zh = engine.ask(picture(), "请描述这张图像？", **SEED_40)
    en = engine.ask(picture(), "Please describe this image?", **SEED_40)
    assert zh.input_tokens != en.input_tokens
    assert zh.raw_text != en.raw_text


def test_two_images_cost_more_tokens_than_one(engine):
    one = engine.ask(picture(), "Compare.", **SEED_40)
    two = engine.ask([picture(), picture(200, 300, seed=1)], "Compare.", **SEED_40)
    assert two.input_tokens > one.input_tokens


def test_video_uses_sampled_frames(engine, tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=12, fps=4)
    result = engine.ask(path, "What moves?", video_fps=1.0, **SEED_40)
    more = engine.ask(path, "What moves?", video_fps=2.0, **SEED_40)
    assert result.output_tokens == 40
    assert more.input_tokens > result.input_tokens  # more frames sampled, more image tokens


def test_image_size_and_no_split_cut_tokens(engine):
    tiled = engine.ask(picture(800, 600), "Describe.", **SEED_40)
    untiled = engine.ask(picture(800, 600), "Describe.", split=False, **SEED_40)
    smaller = engine.ask(picture(800, 600), "Describe.", image_size=256, **SEED_40)
    assert untiled.input_tokens < smaller.input_tokens < tiled.input_tokens


def test_stream_pieces_add_up_to_the_answer(engine):
    events = list(engine.stream(picture(), "Describe.", **SEED_40))
    pieces = [e.text for e in events if isinstance(e, Chunk)]
    assert len(pieces) > 5 and isinstance(events[-1], Result)
    assert "".join(pieces) == events[-1].text == events[-1].raw_text.strip()  # seed: nothing removed


def test_batch_equals_one_by_one(engine):
    cases = [
        (picture(800, 600), "Describe this image."),
        (picture(300, 500, seed=1), "这是虾苗养殖图像，请分析虾苗数量？"),
        (picture(64, 64, seed=2), "What colour is the square?"),
        ([picture(100, 200, seed=3), picture(640, 480, seed=4)], "Which image is brighter, and why?"),
    ]
    requests = [engine.request(media, prompt, **SEED_40) for media, prompt in cases]
    batched = engine.ask_batch(requests)
    alone = [engine.ask(media, prompt, **SEED_40) for media, prompt in cases]
    assert len({r.input_tokens for r in alone}) == len(cases)  # really different lengths
    assert len({r.raw_text for r in alone}) == len(cases)  # and different answers
    for b, a in zip(batched, alone):
        assert b.raw_text == a.raw_text and b.output_tokens == a.output_tokens


def test_stop_string_cuts_answer(engine):
    full = engine.ask(picture(), "Describe.", **SEED_40)
    word = full.raw_text.split()[3]
    stopped = engine.ask(picture(), "Describe.", stop=[word], **SEED_40)
    assert stopped.finish_reason == "stop"
    assert word not in stopped.text and full.raw_text.lstrip().startswith(stopped.text)


def test_sampling_is_reproducible_with_seed(engine):
    a = engine.ask(picture(), "Describe.", preset="creative", seed=7, max_new_tokens=20)
    b = engine.ask(picture(), "Describe.", preset="creative", seed=7, max_new_tokens=20)
    assert a.raw_text == b.raw_text


def test_min_new_tokens_forces_length(engine):
    result = engine.ask(picture(), "Describe.", preset="seed", max_new_tokens=30, min_new_tokens=30)
    assert result.output_tokens == 30


@pytest.mark.parametrize(
    "media, prompt, options, words",
    [
        (None, "   ", {}, "prompt is empty"),
        (None, "hi", {"preset": "fast"}, "unknown preset"),
        (None, "hi", {"temperature": -1}, "temperature"),
        (None, "hi", {"top_p": 0}, "top_p"),
        (None, "hi", {"max_new_tokens": 0}, "max_new_tokens"),
        (None, "hi", {"bogus_knob": 1}, "unknown generation option"),
    ],
)
def test_bad_requests_raise_one_error_type(engine, media, prompt, options, words):
    with pytest.raises(SmolsightError, match=words):
        engine.ask(media, prompt, **options)


def test_image_and_video_together_refused(engine, tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    with pytest.raises(MediaError, match="either images or one video"):
        engine.ask([picture(), path], "What?")


def test_text_only_question_works(engine):
    assert engine.ask(None, "Say hello.", **SEED_40).output_tokens == 40


def test_model_resolution():
    assert resolve_model("256M") == "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    assert resolve_model("2.2b") == "HuggingFaceTB/SmolVLM2-2.2B-Instruct"
    assert resolve_model("someone/their-model") == "someone/their-model"
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        resolve_model("999m")


def test_missing_model_directory_hint(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        Engine.load(str(tmp_path), quiet=True)


def test_runtime_choice_is_automatic_and_overridable():
    device, dtype, attn = choose_runtime(None, None, None)
    assert device == "cpu" and attn in ("sdpa", "sdpa_float32") and dtype in ("bfloat16", "float32")
    assert choose_runtime("cpu", "float32", "eager") == ("cpu", "float32", "eager")
    with pytest.raises(SmolsightError, match="no CUDA"):
        choose_runtime("cuda", None, None)


def test_request_options_default_to_precise():
    assert Request.simple(None, "hi").options == resolve_options("precise")


def test_checkpoint_loads_with_plain_transformers(tiny_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    tokens = processor.tokenizer.convert_tokens_to_ids(["<image>", "<end_of_utterance>", "<global-img>", "<|im_start|>"])
    assert tokens == [49190, 49279, 49152, 1]
    assert model.config.text_config.vocab_size == 49280
    text = "请描述这张图像？ Describe ✓"
    assert processor.tokenizer.decode(processor.tokenizer(text)["input_ids"]) == text


@pytest.mark.parametrize("group", [1, 2, None], ids=["one tile at a time", "two", "all at once"])
def test_torch_vision_in_groups_gives_the_models_own_features(engine, group):
    """On CPU the torch backend encodes tiles in groups (torch_vision.tiles_per_group): whatever the group,
    its features are transformers' `get_image_features`, with a padding image dropped and a half-masked
    tile attending to its image patches only."""
    side = engine.model.config.vision_config.image_size
    pixels = torch.rand(1, 4, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels[0, 3] = 0  # padding image
    mask = torch.ones(1, 4, side, side, dtype=torch.long)
    mask[0, 1, side // 2 :] = 0
    pixels[0, 1, :, side // 2 :] = 0
    backend = TorchVision(engine.model, "cpu")
    backend.group = group
    with torch.inference_mode():
        expected = torch.cat(list(engine.model.model.get_image_features(pixels, mask, return_dict=True).pooler_output))
        got = backend(pixels, mask)
    assert got.shape == expected.shape == (3 * engine.processor.image_seq_len, expected.shape[-1])
    assert (got - expected).abs().max().item() < 1e-5


def test_cpu_tile_groups_keep_the_widest_activation_under_glibcs_mmap_threshold():
    siglip_b = SmolVLMVisionConfig(image_size=512, patch_size=16, hidden_size=768, intermediate_size=3072)  # 256M and 500M
    assert (tiles_per_group(siglip_b, torch.bfloat16), tiles_per_group(siglip_b, torch.float32)) == (5, 2)
    assert 5 * 1024 * 3072 * 2 <= MMAP_THRESHOLD < 6 * 1024 * 3072 * 2
    wide = SmolVLMVisionConfig(image_size=2048, patch_size=16, hidden_size=768, intermediate_size=3072)
    assert tiles_per_group(wide, torch.float32) == 1  # never fewer than one


def test_float32_attention_of_a_bf16_model_covers_vision_and_decoder(tiny_checkpoint, monkeypatch):
    """`sdpa_float32` (chosen for a bf16 model on a CPU whose bf16 attention measured slower: engine.cpu):
    the vision tower and the decoder both attend through it, in float32, and the bf16 model's logits
    stay about as close to the float32 model's as with plain bf16 SDPA."""
    from transformers import AttentionInterface

    from smolsight.engine.loading import register_float32_sdpa

    def logits(dtype: str, attn: str) -> torch.Tensor:
        engine = Engine.load(tiny_checkpoint, device="cpu", dtype=dtype, attn=attn, quiet=True, fast="none")
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is here?"}]}]
        inputs = engine.processor(text=[engine.processor.apply_chat_template(chat, add_generation_prompt=True)],
                                  images=[[picture()]], return_tensors="pt")  # fmt: skip
        inputs = {name: value.to(engine.model.dtype) if value.is_floating_point() else value for name, value in inputs.items()}
        with torch.inference_mode():
            return engine.model(**inputs).logits.float()

    reference, bf16 = logits("float32", "sdpa"), logits("bfloat16", "sdpa")
    register_float32_sdpa()
    attend, callers = AttentionInterface._global_mapping["sdpa_float32"], []

    def counted(module, query, *args, **kwargs):
        callers.append(type(module).__name__)
        output, weights = attend(module, query, *args, **kwargs)
        assert output.dtype == query.dtype == torch.bfloat16
        return output, weights

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa_float32", counted)
    float32_attention = logits("bfloat16", "sdpa_float32")
    assert any("Vision" in name for name in callers) and any("Vision" not in name for name in callers), set(callers)
    assert 0 < (float32_attention - bf16).abs().max()  # it is not plain bf16 SDPA
    assert (float32_attention - reference).abs().max() <= 1.25 * (bf16 - reference).abs().max()
