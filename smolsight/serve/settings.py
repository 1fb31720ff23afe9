"""One server's settings: limits, switches and API keys, each a `smolsight serve` option, and
the media policy they imply."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.fetch import UrlPolicy
from ..engine.options import PREFILL_CHUNK
from ..engine.prompts import image_tokens
from ..errors import SmolsightError
from .batching import BatchSettings

MB = 1024 * 1024
URL_TIMEOUT_S = 10  # for a whole fetch
MAX_IMAGES = 8  # per request; more would be over any sensible input-token limit anyway
CHARS_PER_TOKEN = 8  # a token rarely covers more characters: text longer than this times the token limit cannot fit


@dataclass(frozen=True)
class MediaPolicy:
    """The server's input limits, applied while a request is converted, before the costly work:
    `image_tokens(width, height, split, image_size)` predicts an image's tokens from its header."""

    max_pixels: int
    max_frames: int
    video_fps: float
    urls: UrlPolicy = UrlPolicy(allow_fetch=False, allow_private=False)
    max_input_tokens: int = 6144
    image_tokens: Callable[[int, int, bool, int | str | None], int] | None = None


@dataclass(frozen=True)
class ServerSettings:
    """Limits and switches of one server; every one is a `smolsight serve` option."""

    model_name: str | None = None  # id in /v1/models; default: the engine's model name
    max_batch_size: int = 8
    prefill_chunk: int = PREFILL_CHUNK
    max_queue: int = 64
    max_body_mb: float = 20
    max_image_pixels: int = 4096 * 4096
    max_frames: int = 64
    max_tokens: int = 2048
    max_input_tokens: int = 6144
    allow_url_fetch: bool = False
    url_allow_list: tuple[str, ...] = ()
    allow_private_urls: bool = False
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*" for any); none by default

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "prefill_chunk", "max_queue", "max_body_mb", "max_image_pixels", "max_frames", "max_tokens", "max_input_tokens"):
            if getattr(self, name) <= 0:
                raise SmolsightError(f"--{name.replace('_', '-')} must be positive")

    def batching(self) -> BatchSettings:
        return BatchSettings(self.max_batch_size, self.prefill_chunk, self.max_queue, self.max_input_tokens)

    def media(self, engine) -> MediaPolicy:
        """Frames are sampled at the model's own rate, at most `max_frames` of them."""
        sampling = engine.processor.video_processor
        urls = UrlPolicy(self.allow_url_fetch, tuple(h.lower() for h in self.url_allow_list), self.allow_private_urls, int(self.max_body_mb * MB), URL_TIMEOUT_S)
        tokens = functools.partial(image_tokens, engine.processor)
        return MediaPolicy(self.max_image_pixels, min(self.max_frames, sampling.num_frames), sampling.fps, urls, self.max_input_tokens, tokens)


def read_api_keys(key: str | None, key_file: str | None) -> tuple[str, ...]:
    """The key given directly, plus one key per non-empty line of the key file."""
    keys = [key] if key else []
    if key_file:
        try:
            lines = Path(key_file).read_text().splitlines()
        except OSError as exc:
            raise SmolsightError(f"cannot read API key file {key_file}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if len(keys) == (1 if key else 0):
            raise SmolsightError(f"API key file {key_file} holds no key")
    return tuple(keys)
