"""The HTTP schema: OpenAI's chat completions, one pydantic class per wire object.

Fields follow the order of OpenAI's API reference; smolsight's own extras come after them,
each with a description, so `/openapi.json` documents them. Types are strict (`"10"` or `true`
is not a number). Every message shape OpenAI clients send is read: an assistant turn echoed
back with `refusal`/`tool_calls`/`audio` set to null, tool results, `image_url` as a bare
string, parts with extra keys such as `cache_control`. Request fields that change nothing
here are accepted and ignored (`IGNORED_FIELDS`); what would change the answer in a way
smolsight cannot honour yet (a forced tool call) is refused with a 400 that says so, never
silently dropped. Unknown fields are refused. `n` choices are generated as `n` rows (choice i
samples with `seed + i`), `logprobs` come from the model's own distribution (see
smolsight.engine.logprobs), `logit_bias` is added to the logits before anything else, and a JSON
`response_format` is enforced while decoding (smolsight.engine.structured).

Schema only: the request converts itself into generation options, and smolsight.serve.convert
turns it, media and all, into an engine `Request`.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from ..engine import Result
from ..engine.options import (
    DEFAULT_PRESET, IMAGE_SIZE_RULE, MAX_IMAGE_EDGE, MAX_TOP_LOGPROBS, NATIVE_IMAGE_SIZE, PRESETS, GenerationOptions, image_size_setting,
    resolve_options,
)  # fmt: skip
from ..errors import SmolsightError

if TYPE_CHECKING:
    from ..engine.logprobs import TokenLogprob as EngineTokenLogprob

# `qa` is left out: its prompt names a subject that only evaluation suites supply.
SERVER_TASKS = ("count", "read", "describe", "trend", "measure", "accident")


class Strict(BaseModel):
    """Unknown fields are an error, not silently ignored; JSON types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Part(BaseModel):
    """A content part: keys beyond OpenAI's (e.g. Anthropic-style `cache_control`) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


# ---- request -------------------------------------------------------------------------------


class TextPart(Part):
    type: Literal["text"]
    text: str


class ImageURL(Part):
    url: str = Field(description="A data URI (data:image/png;base64,…), or an http(s) URL when the server allows fetching.")
    detail: Literal["auto", "low", "high"] = Field(
        "auto", description="`low` skips tiling (about 8x fewer image tokens); `auto` and `high` tile the image."
    )


class ImagePart(Part):
    type: Literal["image_url"]
    image_url: ImageURL | str = Field(description="An object with `url` (and `detail`), or the URL as a bare string.")

    @property
    def image(self) -> ImageURL:
        return self.image_url if isinstance(self.image_url, ImageURL) else ImageURL(url=self.image_url)


class VideoURL(Part):
    url: str = Field(description="A data URI (data:video/mp4;base64,…), or an http(s) URL when the server allows fetching.")


class VideoPart(Part):
    """A video, in the shape vLLM accepts."""

    type: Literal["video_url"]
    video_url: VideoURL


UserPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class SystemMessage(Strict):
    content: str | list[TextPart]
    role: Literal["system", "developer"]
    name: str | None = None


class UserMessage(Strict):
    content: str | list[UserPart]
    role: Literal["user"]
    name: str | None = None


class AssistantMessage(Strict):
    """An earlier answer, as a client echoes it back: only `content` is read, and whatever
    else the client's own message object carries (`refusal`, `tool_calls`, `audio`,
    `annotations`, usually null, and fields added to it later) is ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    content: str | list[TextPart] | None = None
    role: Literal["assistant"]
    name: str | None = None


class ToolMessage(Strict):
    """A tool's result (`function` is the deprecated form); passed to the model as a user turn."""

    content: str | list[TextPart]
    role: Literal["tool", "function"]
    tool_call_id: str | None = None
    name: str | None = None


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class StreamOptions(Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = Field(None, description="Accepted and ignored (no obfuscation padding is sent).")


class JsonSchemaFormat(Strict):
    name: str | None = Field(None, description="The schema's name (OpenAI requires one; here it may be left out).")
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema", description="The JSON Schema the answer must validate against (absent: any JSON object).")
    strict: bool | None = Field(None, description="Accepted either way: the schema is always enforced.")


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# Accepted and ignored: they change nothing about a SmolVLM2 answer served here.
IGNORED_FIELDS = (
    "audio", "function_call", "functions", "metadata", "modalities", "parallel_tool_calls", "prediction",
    "prompt_cache_key", "reasoning_effort", "safety_identifier", "service_tier", "store", "tool_choice", "tools",
    "verbosity", "web_search_options",
)  # fmt: skip


class ChatCompletionRequest(Strict):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, description="The served model's id (see /v1/models); may be left out.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) to a bias in [-100, 100], added to the model's logits before penalties and sampling."
    )
    logprobs: bool | None = Field(
        None, description="Return each answer token's log probability (the model's own distribution, before bias, penalties and temperature)."
    )
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="Deprecated by OpenAI in favour of max_completion_tokens.")
    n: int | None = Field(
        None, description="Choices to generate (1 up to the server's --max-batch-size), as rows of one batch; with a seed, choice i uses seed + i."
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    response_format: ResponseFormat | None = Field(
        None, description="`json_object` or `json_schema`: the answer is JSON (valid against the schema), enforced while decoding; "
        "a schema with keywords that cannot be enforced is refused with a 400."
    )
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = Field(None, max_length=4)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy.")
    top_logprobs: int | None = Field(None, description=f"With `logprobs`: the 0..{MAX_TOP_LOGPROBS} likeliest tokens at each position.")
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None
    # accepted and ignored (see IGNORED_FIELDS); `tool_choice` that forces a call is refused
    audio: dict | None = None
    function_call: str | dict | None = None
    functions: list[dict] | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict | None = None
    prompt_cache_key: str | None = None
    reasoning_effort: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    tool_choice: str | dict | None = None
    tools: list[dict] | None = None
    verbosity: str | None = None
    web_search_options: dict | None = None
    # smolsight extensions
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="Penalty on tokens already seen (1 = off), as in transformers.")
    top_k: int | None = Field(None, ge=0, description="Sample only among the k likeliest tokens (0 = off).")
    min_tokens: int | None = Field(None, ge=0, description="Generate at least this many tokens before the end of the answer (as in vLLM).")
    preset: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="Decoding preset the other options override: precise (default; greedy with the loop guard), "
        "seed (the field report's settings), creative (sampling).",
    )
    task: Literal[SERVER_TASKS] | None = Field(  # type: ignore[valid-type]
        None, description="Append this task's short-answer instruction to the last user message (or, when it holds no text, ask the task's own question)."
    )
    task_lang: Literal["en", "zh"] | None = Field(None, description="Language of the task instruction (default: the question's).")
    ocr: bool | Literal["prompt", "answer"] | None = Field(
        None, description="Read the text in the images or video with OCR (the server needs smolsight[ocr]): true or `prompt` gives the "
        "model the lines read, with their positions, before the question; `answer` answers with the text read and generates nothing. "
        "The lines read come back in the response's `ocr`.",
    )
    image_size: int | str | None = Field(
        None, description=f"Longest image edge before tiling, 1 to {MAX_IMAGE_EDGE} px, or `native`: each image at its own size, rounded "
        "up to whole tiles (a 640x480 frame: 5 tiles instead of 13). Default: the model's (2048 px for SmolVLM2, small images upscaled).",
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def check_image_size(cls, value: object) -> int | str | None:
        """The engine's one check (`options.image_size_setting`), so a bad value is a 422 naming the field."""
        if isinstance(value, str) and value != NATIVE_IMAGE_SIZE:
            raise ValueError(f"{IMAGE_SIZE_RULE}, not {value!r}")  # digits too: a JSON number is asked for
        try:
            return image_size_setting(value)
        except SmolsightError:
            raise ValueError(f"{IMAGE_SIZE_RULE}, not {value!r}") from None

    @property
    def ocr_mode(self) -> str | None:
        return "prompt" if self.ocr is True else self.ocr or None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def generation_options(self, max_tokens: int, vocab: int | None = None) -> GenerationOptions:
        """The engine's options for this request (choice 0 of `n`); `vocab` bounds `logit_bias`'s ids."""
        self.refuse_unsupported()
        self.check_logprobs()
        greedy = self.temperature == 0 or (self.temperature is None and PRESETS[self.preset or DEFAULT_PRESET].greedy)
        options = resolve_options(
            self.preset,
            max_new_tokens=self.token_budget(max_tokens),
            min_new_tokens=self.min_tokens,
            temperature=self.temperature,
            top_p=None if greedy else self.top_p,  # greedy decoding reads no top_p, so top_p 0 is harmless
            top_k=self.top_k,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=self.stop,
            seed=self.seed,
            logit_bias=self.logit_bias,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
        )
        if vocab is not None:
            options.check_vocabulary(vocab)
        return options

    def check_logprobs(self) -> None:
        """OpenAI's rules: `top_logprobs` in 0..20, and only with `logprobs: true`."""
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise SmolsightError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}")
        if self.top_logprobs is not None and not self.logprobs:
            raise SmolsightError("top_logprobs needs logprobs: true")

    def choice_count(self, most: int) -> int:
        """`n`, checked against the server's batch size (the choices are rows of one batch)."""
        n = 1 if self.n is None else self.n
        if not 1 <= n <= most:
            raise SmolsightError(f"n must be between 1 and {most} (this server's --max-batch-size), got {n}")
        return n

    def refuse_unsupported(self) -> None:
        """What would change the answer in a way not honoured yet: a 400 that says so."""
        unsupported = [
            (self.tool_choice not in (None, "none", "auto"), "tool calls are not supported: tool_choice may only be none or auto"),
        ]  # fmt: skip
        for refused, message in unsupported:
            if refused:
                raise SmolsightError(message)

    def token_budget(self, limit: int) -> int:
        """The asked-for output length, refused above the server's limit; a preset's own
        (e.g. `seed`'s 5000) is capped to it instead, since the client did not ask for it."""
        asked = self.max_completion_tokens or self.max_tokens
        if asked is None:
            return min(PRESETS[self.preset or DEFAULT_PRESET].max_new_tokens, limit)
        if asked > limit:
            raise SmolsightError(f"max_tokens {asked} is over this server's limit of {limit}")
        return asked

    def user_parts(self) -> list[TextPart | ImagePart | VideoPart]:
        return [p for m in self.messages if isinstance(m, UserMessage) and isinstance(m.content, list) for p in m.content]


# ---- response ------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "repetition", "cancelled"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, results: list[Result]) -> "Usage":
        """The choices of one request: its prompt counted once, every choice's tokens."""
        prompt, completion = results[0].input_tokens, sum(result.output_tokens for result in results)
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class Timings(BaseModel):
    """smolsight extension: where the time went, in seconds from the request's arrival."""

    queue_s: float = Field(description="Waiting for a batch slot (includes decoding the media).")
    ttft_s: float = Field(description="Time to the first generated token.")
    total_s: float = Field(description="Time to the last token.")
    tokens_per_s: float = Field(description="Generation speed after the first token.")


class OcrLine(BaseModel):
    """smolsight extension: one line of text OCR read."""

    text: str
    box: list[int] = Field(description="x0, y0, x1, y1 in the image's pixels.")
    position: str = Field(description="Rough position: top/middle/bottom and left/centre/right.")
    confidence: float
    source: str = Field(description="Which image (`image 2`) or video frame (`frame at 1.5 s`); empty for a single image.")


class TopLogprob(BaseModel):
    token: str
    bytes: list[int] | None = Field(description="The token's UTF-8 bytes (a character split over tokens joins from these).")
    logprob: float


class TokenLogprob(BaseModel):
    token: str
    bytes: list[int] | None
    logprob: float = Field(description="Under the model's own distribution, before logit_bias, penalties and temperature.")
    top_logprobs: list[TopLogprob] = Field(description="The likeliest tokens at this position, likeliest first (`top_logprobs` of them).")


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = Field(
        description="The tokens the answer was made from: up to where its text ends, including tokens of sentences the "
        "de-duplication dropped; without the end-of-utterance token."
    )
    refusal: list[TokenLogprob] | None = None

    @classmethod
    def of(cls, entries: list[EngineTokenLogprob] | None) -> "ChoiceLogprobs | None":
        if entries is None:
            return None
        return cls(content=[TokenLogprob.model_validate(entry, from_attributes=True) for entry in entries])


class ResponseMessage(BaseModel):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"


class Choice(BaseModel):
    finish_reason: FinishReason = Field(description="OpenAI's reasons plus `repetition` (the loop guard stopped a loop) and `cancelled`.")
    index: int = 0
    logprobs: ChoiceLogprobs | None = None
    message: ResponseMessage


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    choices: list[Choice]
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    usage: Usage
    # smolsight extensions
    timings: Timings | None = None
    ocr: list[OcrLine] | None = Field(None, description="The lines OCR read, when the request asked for `ocr`.")

    @model_serializer(mode="wrap")
    def serialize(self, handler) -> dict:
        return without_none(handler(self), ("ocr",))


def without_none(data: dict, keys: tuple[str, ...]) -> dict:
    """OpenAI's stream leaves some fields out rather than sending null."""
    return {k: v for k, v in data.items() if not (k in keys and v is None)}


class Delta(BaseModel):
    content: str | None = None
    role: Literal["assistant"] | None = None

    @model_serializer(mode="wrap")
    def serialize(self, handler) -> dict:
        return without_none(handler(self), ("content", "role"))


class ChunkChoice(BaseModel):
    delta: Delta
    finish_reason: FinishReason | None = None
    index: int = 0
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None
    # smolsight extensions, on the chunk that carries the finish reason
    timings: Timings | None = None
    ocr: list[OcrLine] | None = None

    @model_serializer(mode="wrap")
    def serialize(self, handler) -> dict:
        return without_none(handler(self), ("timings", "ocr"))


class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "smolsight"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
