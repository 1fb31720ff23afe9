"""Random-weight SmolVLM2 checkpoints with the real architecture, written locally.

No weights can be downloaded where smolsight is built and tested, so tests and benchmarks run
on checkpoints made here. A forward pass costs the same whatever the weight values, so the
real shapes give the real model's timings; the answers are noise (and greedy decoding on them
loops within a few tokens, which is how repetition control is tested honestly).
The numbers below come from ../shared/docs/smolvlm2-facts.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Special tokens at their real ids (49152 ordinary BPE entries come first).
LEADING_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BASE_VOCAB = 49152
IMAGE_TOKEN_ID = 49190
EOS_TOKEN_ID = 49279
VOCAB_SIZE = 49280


def added_special_tokens() -> list[str]:
    """The 128 added tokens, in id order from 49152."""
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(88)]
    return ["<global-img>", *rows, "<fake_token_around_image>", "<image>", *reserved, "<end_of_utterance>"]


@dataclass(frozen=True)
class Shape:
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    patch_size: int
    tile_size: int  # vision image_size == processor max_image_size
    scale_factor: int
    longest_edge: int  # processor "size"
    max_frames: int = 64
    max_positions: int = 8192
    tie_embeddings: bool = True
    # Wider random weights make the tiny model's greedy output depend on its input (and still
    # loop within tens of tokens); real shapes keep transformers' default.
    init_range: float = 0.02

    @property
    def image_seq_len(self) -> int:
        return (self.tile_size // self.patch_size) ** 2 // self.scale_factor**2


SHAPES: dict[str, Shape] = {
    # A few MB: two layers each side, small tiles (16 tokens per tile), for tests.
    "tiny": Shape(
        64, 128, 2, 4, 2, 32, 64, 2, 2, 16, 128, 2, 512, max_frames=8, max_positions=4096, init_range=0.15
    ),
    "256m": Shape(576, 1536, 30, 9, 3, 768, 3072, 12, 12, 16, 512, 4, 2048),
    "500m": Shape(960, 2560, 32, 15, 5, 768, 3072, 12, 12, 16, 512, 4, 2048),
    "2.2b": Shape(2048, 8192, 24, 32, 32, 1152, 4304, 27, 16, 14, 384, 3, 1536, tie_embeddings=False),
}


def build_tokenizer():
    """A byte-level BPE stand-in: 49152 base entries (specials, the 256 byte symbols, then
    readable filler words), the real added tokens at their real ids. Round-trips any text."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in LEADING_SPECIALS + sorted(byte_symbols):
        vocab[token] = len(vocab)
    filler = 0
    while len(vocab) < BASE_VOCAB:
        vocab[f"Ġw{filler}"] = len(vocab)
        filler += 1
    for token in added_special_tokens():
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.add_special_tokens([AddedToken(t, special=True) for t in LEADING_SPECIALS + added_special_tokens()])
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
        },
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(shape: Shape):
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        image_token_id=IMAGE_TOKEN_ID,
        scale_factor=shape.scale_factor,
        tie_word_embeddings=shape.tie_embeddings,
        vision_config={
            "hidden_size": shape.vision_hidden,
            "intermediate_size": shape.vision_intermediate,
            "num_hidden_layers": shape.vision_layers,
            "num_attention_heads": shape.vision_heads,
            "patch_size": shape.patch_size,
            "image_size": shape.tile_size,
            "initializer_range": shape.init_range,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": shape.text_hidden,
            "intermediate_size": shape.text_intermediate,
            "num_hidden_layers": shape.text_layers,
            "num_attention_heads": shape.text_heads,
            "num_key_value_heads": shape.text_kv_heads,
            "head_dim": shape.text_hidden // shape.text_heads,
            "max_position_embeddings": shape.max_positions,
            "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": shape.tie_embeddings,
            "bos_token_id": 1,
            "eos_token_id": EOS_TOKEN_ID,
            "pad_token_id": 2,
            "initializer_range": shape.init_range,
        },
        pad_token_id=2,
    )


def build_processor(shape: Shape):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 1,
        "rescale_factor": 1 / 255,
    }
    sampling = {"fps": 1, "max_frames": shape.max_frames, "video_size": {"longest_edge": shape.tile_size}}
    image_processor = SmolVLMImageProcessor(
        **common,
        do_image_splitting=True,
        do_pad=True,
        size={"longest_edge": shape.longest_edge},
        max_image_size={"longest_edge": shape.tile_size},
        video_sampling=sampling,
    )
    video_processor = SmolVLMVideoProcessor(
        **common,
        do_image_splitting=False,
        do_pad=True,
        do_sample_frames=True,
        size={"longest_edge": shape.tile_size},
        max_image_size={"longest_edge": shape.tile_size},
        video_sampling=sampling,
        fps=1,
        num_frames=shape.max_frames,
    )
    return SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        video_processor=video_processor,
        image_seq_len=shape.image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )


def make_checkpoint(out_dir: str | Path, shape: str = "tiny", seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Write a random-weight SmolVLM2 checkpoint loadable by AutoProcessor /
    AutoModelForImageTextToText and by `Engine.load(out_dir)`."""
    import torch
    from transformers import GenerationConfig, SmolVLMForConditionalGeneration

    from .errors import SmolsightError

    if shape not in SHAPES:
        raise SmolsightError(f"unknown checkpoint shape {shape!r}; choose one of {', '.join(SHAPES)}")
    spec = SHAPES[shape]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = build_config(spec)
    with torch.device("cpu"):
        model = SmolVLMForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=EOS_TOKEN_ID, pad_token_id=2)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    build_processor(spec).save_pretrained(out)
    (out / "smolsight_checkpoint.json").write_text(json.dumps({"shape": shape, "seed": seed, "random_weights": True}))
    return out
