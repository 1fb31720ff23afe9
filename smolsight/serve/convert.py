"""A chat completion request turned into an engine `Request`: messages with their media read
under the server's `MediaPolicy` (data URIs, or http(s) URLs when fetching is allowed; never
server-side paths), the task instruction added, and the generation options checked.

The cheap checks come first, and every limit is checked before the work it limits: options and
the response format's JSON schema before any media; the text's length in characters before it is
tokenised; each image's pixels and the tokens all images will cost from their headers, before any
pixel is decoded; a video's frame size from its stream header, before frames are decoded. So an
oversized request is refused in milliseconds, with flat memory, instead of after seconds of decoding.
"""

from __future__ import annotations

from ..engine import Request
from ..engine.fetch import fetch
from ..engine.media import Video, image_size, load_image, load_video
from ..engine.prompts import Message, validate
from ..engine.structured import parse_response_format
from ..errors import LimitError, MediaError
from ..tasks import styled_prompt
from .protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    VideoPart,
)
from .settings import CHARS_PER_TOKEN, MAX_IMAGES, MediaPolicy


def to_request(body: ChatCompletionRequest, media: MediaPolicy, max_tokens: int, vocab: int | None = None) -> Request:
    """The engine request for `body`, under the server's media policy and token limit (and the
    model's vocabulary size, which bounds `logit_bias`'s token ids)."""
    options = body.generation_options(max_tokens, vocab)
    response_format = parse_response_format(body.response_format.model_dump(by_alias=True, exclude_none=True)) if body.response_format else None
    check_text_length(body, media.max_input_tokens)
    parts = body.user_parts()
    images = [p for p in parts if isinstance(p, ImagePart)]
    if len(images) > MAX_IMAGES:
        raise LimitError(f"{len(images)} images in one request; this server takes at most {MAX_IMAGES}")
    split = not any(p.image.detail == "low" for p in images)
    fetched = fetch_images(images, media, split, body.image_size)
    messages = [convert_message(m, media, fetched) for m in body.messages]
    if body.task:
        last = messages[-1]
        last.text = styled_prompt(body.task, last.text.strip() or None, body.task_lang)
    validate(messages)
    return Request(messages, options, image_size=body.image_size, split=split, ocr=body.ocr_mode, response_format=response_format)


def check_text_length(body: ChatCompletionRequest, max_input_tokens: int) -> None:
    """Refuse text that cannot fit the token limit, by its length, before anything tokenises it."""
    texts = [m.content if isinstance(m.content, str) else "".join(p.text for p in m.content if isinstance(p, TextPart))
             for m in body.messages if m.content is not None]  # fmt: skip
    characters = sum(len(text) for text in texts)
    if characters > CHARS_PER_TOKEN * max_input_tokens:
        raise LimitError(f"the messages hold {characters:,} characters, more than {max_input_tokens} tokens can hold "
                         f"(this server's input limit)")  # fmt: skip


def fetch_images(parts: list[ImagePart], media: MediaPolicy, split: bool, longest_edge: int | str | None = None) -> dict[int, bytes]:
    """Each image part's bytes (by the part's id), once their headers show that every image is
    within the pixel limit and that together they fit the input-token limit."""
    fetched = {id(p): fetch(p.image.url, media.urls) for p in parts}
    sizes = [image_size(data, media.max_pixels) for data in fetched.values()]
    if media.image_tokens is not None and sizes:
        tokens = sum(media.image_tokens(width, height, split, longest_edge) for width, height in sizes)
        if tokens > media.max_input_tokens:
            raise LimitError(f"the {len(sizes)} image(s) would take {tokens} tokens, over this server's input limit of "
                             f"{media.max_input_tokens} (send fewer or smaller images, image_size: native, or detail: low)")  # fmt: skip
    return fetched


ROLES = {"developer": "system", "tool": "user", "function": "user"}  # SmolVLM2's template knows system, user, assistant


def convert_message(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage, media: MediaPolicy,
                    fetched: dict[int, bytes]) -> Message:
    role = ROLES.get(message.role, message.role)
    content = message.content
    if content is None or isinstance(content, str):
        return Message(role, content or "")
    texts = [p.text for p in content if isinstance(p, TextPart)]
    images = [load_image(fetched[id(p)], media.max_pixels) for p in content if isinstance(p, ImagePart)]
    videos = [p.video_url.url for p in content if isinstance(p, VideoPart)]
    if len(videos) > 1:
        raise MediaError("give at most one video per request")
    video = load_server_video(videos[0], media) if videos else None
    return Message(role, "\n".join(texts), images=images, video=video)


def load_server_video(url: str, media: MediaPolicy) -> Video:
    return load_video(fetch(url, media.urls), media.video_fps, media.max_frames, media.max_pixels)
