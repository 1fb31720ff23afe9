"""The HTTP schema: OpenAI's chat completions, one pydantic class per wire object.

Fields follow the order of OpenAI's API reference; smolsight's own extras come after them,
each with a description, so `/openapi.json` documents them. Only what the engine can honour
is accepted (`n` must be 1, `logprobs` must be false, unknown fields are rejected), so a client
is never silently given something other than what it asked for.

The request converts itself into an engine `Request`. Media are read only from data URIs, or
from http(s) URLs when the server's `MediaPolicy` allows it: never from server-side paths.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from .engine import Request, Result
from .errors import LimitError, MediaError, SmolsightError
from .media import Video, decode_data_uri, describe, load_image, load_video
from .options import DEFAULT_PRESET, PRESETS, GenerationOptions, resolve_options
from .prompts import Message, validate
from .tasks import task_prompt

# `qa` is left out: its prompt names a subject that only evaluation suites supply.
SERVER_TASKS = ("count", "read", "describe", "trend", "measure", "accident")
URL_TIMEOUT_S = 10
MAX_IMAGES = 8  # per request; more would be over any sensible input-token limit anyway


class Strict(BaseModel):
    """Unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# ---- request -------------------------------------------------------------------------------


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str = Field(description="A data URI (data:image/png;base64,…), or an http(s) URL when the server allows fetching.")
    detail: Literal["auto", "low", "high"] = Field(
        "auto", description="`low` skips tiling (about 8x fewer image tokens); `auto` and `high` tile the image."
    )


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(Strict):
    url: str = Field(description="A data URI (data:video/mp4;base64,…), or an http(s) URL when the server allows fetching.")


class VideoPart(Strict):
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
    content: str | list[TextPart] | None = None
    role: Literal["assistant"]
    name: str | None = None


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]


class StreamOptions(Strict):
    include_usage: bool = False


@dataclass(frozen=True)
class UrlPolicy:
    """Whether and where media URLs may be fetched. Off by default: a server that fetches
    URLs for anyone can be used to probe the network it sits in."""

    allow_fetch: bool = False
    allow_list: tuple[str, ...] = ()  # exact host names; empty means any public host
    allow_private: bool = False  # loopback, private, link-local and other non-public addresses
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class MediaPolicy:
    """The server's media limits, applied while a request is converted."""

    max_pixels: int
    max_frames: int
    video_fps: float
    urls: UrlPolicy = UrlPolicy()


class ChatCompletionRequest(Strict):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, description="The served model's id (see /v1/models); may be left out.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: Literal[False] | None = Field(None, description="Not supported: must be false or absent.")
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="Deprecated by OpenAI in favour of max_completion_tokens.")
    n: Literal[1] | None = Field(None, description="Only one choice per request is supported.")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = Field(None, max_length=4)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy.")
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None
    # smolsight extensions
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="Penalty on tokens already seen (1 = off), as in transformers.")
    top_k: int | None = Field(None, ge=0, description="Sample only among the k likeliest tokens (0 = off).")
    preset: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="Decoding preset the other options override: precise (default; greedy with the loop guard), "
        "seed (the field report's settings), creative (sampling).",
    )
    task: Literal[SERVER_TASKS] | None = Field(  # type: ignore[valid-type]
        None, description="Append this task's short-answer instruction to the last user message."
    )
    task_lang: Literal["en", "zh"] = Field("en", description="Language of the task instruction.")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_request(self, media: MediaPolicy, max_tokens: int) -> Request:
        """The engine request: messages with their media loaded, and generation options.
        The cheap checks come first, so a bad option never costs a decoded image."""
        options = self.generation_options(max_tokens)
        parts = self.user_parts()
        images = sum(isinstance(p, ImagePart) for p in parts)
        if images > MAX_IMAGES:
            raise LimitError(f"{images} images in one request; this server takes at most {MAX_IMAGES}")
        messages = [convert_message(m, media) for m in self.messages]
        if self.task:
            last = messages[-1]
            last.text = "\n".join(t for t in (last.text, task_prompt(self.task, self.task_lang, "short")) if t)
        validate(messages)
        low_detail = any(isinstance(p, ImagePart) and p.image_url.detail == "low" for p in parts)
        return Request(messages, options, split=not low_detail)

    def generation_options(self, max_tokens: int) -> GenerationOptions:
        return resolve_options(
            self.preset,
            max_new_tokens=self.token_budget(max_tokens),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=self.stop,
            seed=self.seed,
        )

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


def convert_message(message: SystemMessage | UserMessage | AssistantMessage, media: MediaPolicy) -> Message:
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if content is None or isinstance(content, str):
        return Message(role, content or "")
    texts = [p.text for p in content if isinstance(p, TextPart)]
    images = [load_image(fetch(p.image_url.url, media.urls), media.max_pixels) for p in content if isinstance(p, ImagePart)]
    videos = [p.video_url.url for p in content if isinstance(p, VideoPart)]
    if len(videos) > 1:
        raise MediaError("give at most one video per request")
    video = load_server_video(videos[0], media) if videos else None
    return Message(role, "\n".join(texts), images=images, video=video)


def load_server_video(url: str, media: MediaPolicy) -> Video:
    return load_video(fetch(url, media.urls), media.video_fps, media.max_frames, media.max_pixels)


# ---- fetching media ------------------------------------------------------------------------


def fetch(url: str, policy: UrlPolicy) -> bytes:
    """Bytes of a data URI or, if the policy allows it, of an http(s) URL. Anything else,
    server-side file paths above all, is refused."""
    if url.startswith("data:"):
        return decode_data_uri(url)
    if not url.startswith(("http://", "https://")):
        raise MediaError(f"{describe(url)}: media must be a data URI (data:image/png;base64,…) or an http(s) URL")
    if not policy.allow_fetch:
        raise MediaError(f"{describe(url)}: this server does not fetch URLs; send the media as a data URI")
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise MediaError(f"{describe(url)}: URL has no host")
    if policy.allow_list and host.lower() not in policy.allow_list:
        raise MediaError(f"{describe(url)}: host {host!r} is not on this server's URL allow-list")
    address = resolve_public(host, policy.allow_private, url)
    return http_get(parts, address, policy.max_bytes, url)


def resolve_public(host: str, allow_private: bool, url: str) -> str:
    """One address of `host`, refusing hosts with any non-public address unless allowed."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError(f"{describe(url)}: host {host!r} cannot be resolved ({exc})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise MediaError(f"{describe(url)}: {host} resolves to the non-public address {address}, which this server does not fetch from")
    return addresses[0]


def http_get(parts, address: str, max_bytes: int, url: str) -> bytes:
    """GET over a connection pinned to the checked address (so a second DNS answer cannot
    point elsewhere); redirects are not followed, since they could lead anywhere."""
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=URL_TIMEOUT_S)
    connection._create_connection = lambda addr, *args: socket.create_connection((address, addr[1]), *args)
    path = parts.path or "/"
    try:
        connection.request("GET", f"{path}?{parts.query}" if parts.query else path, headers={"User-Agent": "smolsight"})
        response = connection.getresponse()
        if response.status != 200:
            raise MediaError(f"{describe(url)}: the server answered HTTP {response.status} (redirects are not followed)")
        data = response.read(max_bytes + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(f"{describe(url)}: could not be fetched ({exc})") from None
    finally:
        connection.close()
    if len(data) > max_bytes:
        raise LimitError(f"{describe(url)}: larger than {max_bytes} bytes")
    return data


# ---- response ------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "repetition", "cancelled"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, result: Result) -> "Usage":
        return cls(prompt_tokens=result.input_tokens, completion_tokens=result.output_tokens, total_tokens=result.input_tokens + result.output_tokens)


class Timings(BaseModel):
    """smolsight extension: where the time went, in seconds from the request's arrival."""

    queue_s: float = Field(description="Waiting for a batch slot (includes decoding the media).")
    ttft_s: float = Field(description="Time to the first generated token.")
    total_s: float = Field(description="Time to the last token.")
    tokens_per_s: float = Field(description="Generation speed after the first token.")


class ResponseMessage(BaseModel):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"


class Choice(BaseModel):
    finish_reason: FinishReason = Field(description="OpenAI's reasons plus `repetition` (the loop guard stopped a loop) and `cancelled`.")
    index: int = 0
    logprobs: None = None
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
    # smolsight extension
    timings: Timings | None = None


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
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None
    # smolsight extension, on the chunk that carries the finish reason
    timings: Timings | None = None

    @model_serializer(mode="wrap")
    def serialize(self, handler) -> dict:
        return without_none(handler(self), ("timings",))


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
