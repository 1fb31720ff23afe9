"""Generation options: one typed object, and presets that are named instances of it.

The field report ran greedy decoding with max_new_tokens=5000 and no repetition settings; four
of seven answers were spoiled by repeated text. `precise` is the default that fixes that (chosen
by measurement on a real language model, docs/repetition.md); `seed` keeps the report's settings
for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import SmolsightError


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 512
    min_new_tokens: int = 0
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    repetition_penalty: float = 1.0
    penalize_prompt: bool = True  # repetition_penalty on the prompt's tokens too, as transformers does
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    loop_guard: bool = True
    guard_repeats: int = 4  # K: times a unit must occur in a row at the tail
    guard_window: int = 512  # longest period (in tokens) the guard looks for: a paragraph
    guard_min_tokens: int = 24  # short units must also span this many tokens ("ha ha ha" survives); layout units 4x
    dedupe_sentences: bool = True
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs added to the logits, sorted by id
    logprobs: int | None = None  # None: none; k: each token's log probability and the k likeliest alternatives

    def __post_init__(self) -> None:
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be between 0 and max_new_tokens"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0"),
            (self.guard_repeats >= 2, "guard_repeats must be at least 2"),
            (1 <= self.guard_window <= 1024, "guard_window must be in [1, 1024]"),
            (self.guard_min_tokens >= 0, "guard_min_tokens must be >= 0"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
            (all(token >= 0 for token, _ in self.logit_bias), "logit_bias token ids must be >= 0"),
            (all(-100 <= bias <= 100 for _, bias in self.logit_bias), "logit_bias values must be in [-100, 100]"),
            (self.logprobs is None or 0 <= self.logprobs <= MAX_TOP_LOGPROBS, f"logprobs must be in [0, {MAX_TOP_LOGPROBS}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise SmolsightError(f"invalid generation option: {message}")

    def check_vocabulary(self, vocab: int) -> None:
        """Refuse a `logit_bias` on token ids the model does not have (checked before any work)."""
        outside = [token for token, _ in self.logit_bias if token >= vocab]
        if outside:
            raise SmolsightError(f"invalid generation option: logit_bias token id(s) {', '.join(map(str, outside[:5]))} "
                                 f"outside the model's vocabulary of {vocab} tokens (ids 0..{vocab - 1})")  # fmt: skip

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def for_choice(self, index: int) -> "GenerationOptions":
        """The options of choice `index` of several answers to one request: sampling with a seed
        uses seed + index (so each choice differs and all are reproducible); greedy choices are
        the same options, hence the same answer."""
        if index == 0 or self.greedy or self.seed is None:
            return self
        return replace(self, seed=(self.seed + index) % 2**64)

    def with_overrides(self, **overrides) -> "GenerationOptions":
        """A copy with the given fields changed; None means 'keep the preset's value'."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise SmolsightError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        values = {k: v for k, v in overrides.items() if v is not None}
        if "stop" in values:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        if "logit_bias" in values:
            values["logit_bias"] = bias_pairs(values["logit_bias"])
        return replace(self, **values)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["logit_bias"] = {str(token): bias for token, bias in self.logit_bias}
        return data


MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI allows
PREFILL_CHUNK = 512  # prompt tokens prefilled per step: a step with a prefill costs about this much more
FLOAT32_SDPA = "sdpa_float32"  # SDPA in float32 for a bf16 model (loading.register_float32_sdpa)
ATTENTIONS = ("sdpa", FLOAT32_SDPA, "eager", "flash_attention_2")  # what --attn accepts


def bias_pairs(bias) -> tuple[tuple[int, float], ...]:
    """A logit bias as sorted (token id, bias) pairs, from a mapping (JSON's string keys
    included) or pairs, so that options stay hashable and equal biases compare equal."""
    items = bias.items() if isinstance(bias, dict) else bias
    try:
        pairs = {int(token): float(value) for token, value in items}
    except (TypeError, ValueError):
        raise SmolsightError("invalid generation option: logit_bias maps token ids (integers) to numbers") from None
    return tuple(sorted(pairs.items()))


PRESETS: dict[str, GenerationOptions] = {
    # Measured on a real language model (docs/repetition.md): penalising the prompt's tokens as
    # transformers does cost facts ("How many days are there in a week?" cannot say "days"), so
    # the default penalises generated tokens only.
    "precise": GenerationOptions(repetition_penalty=1.1, penalize_prompt=False, max_new_tokens=512),
    "seed": GenerationOptions(max_new_tokens=5000, loop_guard=False, dedupe_sentences=False),
    "creative": GenerationOptions(temperature=0.7, top_p=0.9, repetition_penalty=1.05, max_new_tokens=512),
}
DEFAULT_PRESET = "precise"

# How a request's media are processed and what form its answer takes (fields of `engine.Request`),
# as opposed to how tokens are chosen: the keyword arguments that callers pass beside the decoding knobs.
PROCESSING_SETTINGS = ("image_size", "split", "video_fps", "max_frames", "max_pixels", "ocr", "response_format")

# `image_size`: None keeps the model's longest edge (SmolVLM2 upscales every image to 2048 px, so a
# 640x480 frame costs 13 tiles); a number of pixels sets the longest edge for every image; "native"
# keeps each image's own size, rounded up to whole tiles and capped at the model's edge
# (`prompts.native_images`). The model's setting stays the default: what the smaller inputs cost
# in accuracy cannot be measured without real weights (docs/performance.md).
NATIVE_IMAGE_SIZE = "native"
MAX_IMAGE_EDGE = 4096  # transformers' SmolVLM processor never resizes beyond this
IMAGE_SIZE_RULE = f"use {NATIVE_IMAGE_SIZE!r} (each image at its own size, in whole tiles) or a longest edge in pixels from 1 to {MAX_IMAGE_EDGE}"


def image_size_setting(value: int | str | None) -> int | str | None:
    """`value` checked, as every surface (CLI, server, suites, batch jobs, watch rules) takes it:
    None, "native", or a longest edge in pixels (a number or its digits)."""
    if value is None or value == NATIVE_IMAGE_SIZE:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_EDGE:
        raise SmolsightError(f"invalid image size {value!r}: {IMAGE_SIZE_RULE}")
    return value


def resolve_options(preset: str | None = None, **overrides) -> GenerationOptions:
    """A preset (default `precise`) with any knob overridden."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise SmolsightError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].with_overrides(**overrides)
