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
from .options import MAX_IMAGE_EDGE, NATIVE_IMAGE_SIZE

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


def image_tokens(processor, width: int, height: int, split: bool = True, longest_edge: int | str | None = None) -> int:
    """How many tokens an image of this size becomes, worked out from the processor's settings
    without decoding it: resized so its longest edge is `longest_edge` (the model's, 2048 for
    SmolVLM2, upscaling small images too; "native": its own size, see `native_images`), then
    scaled up to whole tiles of the encoder's size, each `image_seq_len` tokens, plus one global
    view when there is more than one tile."""
    per_tile = processor.image_seq_len
    if not split:
        return per_tile
    settings = processor.image_processor
    edge, tile = settings.size["longest_edge"], settings.max_image_size["longest_edge"]
    if longest_edge == NATIVE_IMAGE_SIZE:
        width, height = native_size(width, height, edge)
    else:
        width, height = resized(width, height, min(longest_edge or edge, MAX_IMAGE_EDGE))
    rows, cols = tile_grid(width, height, tile)
    tiles = rows * cols
    return per_tile * (tiles + 1 if tiles > 1 else 1)


def resized(width: int, height: int, edge: int) -> tuple[int, int]:
    """The processor's resize to a longest edge (up or down; the other side truncated, then made even)."""
    if width >= height:
        return edge, max(1, even(int(edge / (width / height))))
    return max(1, even(int(edge * (width / height)))), edge


def even(value: int) -> int:
    return value + value % 2


def tile_grid(width: int, height: int, tile: int) -> tuple[int, int]:
    """(rows, columns) of tiles: the processor scales the longest side up to whole tiles, the
    other side in proportion, and rounds that up to whole tiles too."""
    if width >= height:
        columns = math.ceil(width / tile)
        return math.ceil(int(columns * tile / (width / height)) / tile), columns
    rows = math.ceil(height / tile)
    return rows, math.ceil(int(rows * tile * (width / height)) / tile)


def native_size(width: int, height: int, edge: int) -> tuple[int, int]:
    """An image's size under the "native" policy: its own, or scaled down to the model's edge."""
    return (width, height) if max(width, height) <= edge else resized(width, height, edge)


def native_images(processor, images: list[Image.Image]) -> list[Image.Image]:
    """The images to give the processor (with `do_resize=False`) under the "native" policy.

    The processor takes one `size` per call, applied to every image, so no single size serves
    images of different sizes in one request. Instead its first resize is switched off and each
    image is given at its own size: the processor then scales it up only to the next whole number
    of tiles (a 640x480 frame: 1024x1024 in 4 tiles + 1 global view, not 2048x1536 in 12 + 1).
    An image longer than the model's edge is scaled down to it here, as the model's setting would."""
    settings = processor.image_processor
    edge = settings.size["longest_edge"]
    resample = Image.Resampling(settings.resample)
    sized = []
    for image in images:
        size = native_size(image.width, image.height, edge)
        sized.append(image if size == image.size else image.resize(size, resample))
    return sized
