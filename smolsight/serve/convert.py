"""A chat completion request turned into an engine `Request`: messages with their media read
under the server's `MediaPolicy` (data URIs, or http(s) URLs when fetching is allowed; never
server-side paths), the task instruction added, and the generation options checked.

The cheap checks come first, so a bad option never costs a decoded image.
"""

from __future__ import annotations

from ..engine import Request
from ..engine.fetch import fetch
from ..engine.media import Video, load_image, load_video
from ..engine.prompts import Message, validate
from ..errors import LimitError, MediaError
from ..tasks import styled_prompt
from .protocol import AssistantMessage, ChatCompletionRequest, ImagePart, SystemMessage, TextPart, UserMessage, VideoPart
from .settings import MAX_IMAGES, MediaPolicy


def to_request(body: ChatCompletionRequest, media: MediaPolicy, max_tokens: int) -> Request:
    """The engine request for `body`, under the server's media policy and token limit."""
    options = body.generation_options(max_tokens)
    parts = body.user_parts()
    images = sum(isinstance(p, ImagePart) for p in parts)
    if images > MAX_IMAGES:
        raise LimitError(f"{images} images in one request; this server takes at most {MAX_IMAGES}")
    messages = [convert_message(m, media) for m in body.messages]
    if body.task:
        last = messages[-1]
        last.text = styled_prompt(body.task, last.text.strip() or None, body.task_lang)
    validate(messages)
    low_detail = any(isinstance(p, ImagePart) and p.image_url.detail == "low" for p in parts)
    return Request(messages, options, split=not low_detail, ocr=body.ocr_mode)


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
