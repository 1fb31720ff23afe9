"""SmolVLM2 prompt building: messages with images or a video, in the model's own chat format.

All SmolVLM2-specific placement lives here. The chat template wants `content` as a list of
typed parts (a plain string is iterated character by character), and transformers swaps in a
template with `<video>` when a video is present, expanding it into timestamped frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PIL import Image

from ..errors import SmolsightError
from .media import Video

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str
    text: str = ""
    images: list[Image.Image] = field(default_factory=list)
    video: Video | None = None

    def parts(self) -> list[dict]:
        media: list[dict] = [{"type": "image"} for _ in self.images]
        if self.video is not None:
            media.append({"type": "video"})
        text = [{"type": "text", "text": self.text}] if self.text or not media else []
        return media + text


def validate(messages: list[Message]) -> None:
    if not messages:
        raise SmolsightError("no messages given")
    for message in messages:
        if message.role not in ROLES:
            raise SmolsightError(f"unknown message role {message.role!r}; use one of {', '.join(ROLES)}")
    if messages[-1].role != "user":
        raise SmolsightError("the last message must be the user's question")
    if not messages[-1].text.strip():
        raise SmolsightError("the prompt is empty: ask a question about the image or video")
    videos = [m.video for m in messages if m.video is not None]
    if len(videos) > 1 or (videos and any(m.images for m in messages)):
        raise SmolsightError("give either images or one video, not both and not several videos")


def chat_text(processor, messages: list[Message]) -> str:
    """The prompt string with one `<image>` / `<video>` placeholder per media item."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    conversation = [{"role": m.role, "content": m.parts()} for m in messages]
    has_video = any(m.video is not None for m in messages)
    template = DEFAULT_CHAT_TEMPLATE if has_video else None
    return processor.apply_chat_template(conversation, chat_template=template, add_generation_prompt=True)


def images_of(messages: list[Message]) -> list[Image.Image]:
    return [image for m in messages for image in m.images]


def video_of(messages: list[Message]) -> Video | None:
    return next((m.video for m in messages if m.video is not None), None)


def image_tokens(processor, width: int, height: int, split: bool = True, longest_edge: int | None = None) -> int:
    """How many tokens an image of this size becomes, worked out from the processor's settings
    without decoding it: resized so its longest edge is `longest_edge` (the model's, 2048 for
    SmolVLM2, upscaling small images too), then cut into tiles of the encoder's size, each
    `image_seq_len` tokens, plus one global view when there is more than one tile."""
    per_tile = processor.image_seq_len
    if not split:
        return per_tile
    settings = processor.image_processor
    edge, tile = longest_edge or settings.size["longest_edge"], settings.max_image_size["longest_edge"]
    scale = edge / max(width, height)
    tiles = math.ceil(max(1, round(width * scale)) / tile) * math.ceil(max(1, round(height * scale)) / tile)
    return per_tile * (tiles + 1 if tiles > 1 else 1)
