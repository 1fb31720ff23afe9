"""Loading images and videos from whatever users have: paths, URLs, data URIs, bytes, PIL images.

Everything ends as RGB PIL images (EXIF orientation applied) or as sampled video frames with
their timestamps, so the engine never sees a file format. Every failure is a `MediaError`
that names the input and what was wrong with it.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import LimitError, MediaError
from .fetch import LOCAL_USER, decode_base64, decode_data_uri, describe, fetch

# The one list of media file types: suites, training data and `ask` all take these.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov"}
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

MediaInput = Union[str, Path, bytes, Image.Image, "Video"]


@dataclass
class Video:
    """Sampled frames of one video: `frames` is [T, H, W, 3] uint8, `indices` the frame numbers."""

    frames: np.ndarray
    indices: list[int]
    fps: float
    total_frames: int
    source: str

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


def is_video(src: object) -> bool:
    if isinstance(src, Video):
        return True
    if isinstance(src, (str, Path)):
        text = str(src)
        if text.startswith("data:video/"):
            return True
        return Path(text.split("?")[0]).suffix.lower() in VIDEO_SUFFIXES
    return False


def looks_like_media(text: str) -> bool:
    """Whether a command-line argument names media rather than asking a question: an existing
    file, a URL or data URI, or one word ending in an image or video suffix."""
    if text.startswith(("http://", "https://", "rtsp://", "data:")):
        return True
    if len(text.split()) != 1:
        return False
    try:
        return Path(text).expanduser().is_file() or Path(text.split("?")[0]).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
    except (OSError, ValueError):  # too long for a file name, or a NUL in it: a question
        return False


def read_source(src: str | Path | bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Bytes of a path, an http(s) URL, a data URI or plain base64."""
    if isinstance(src, bytes):
        return src
    text = str(src)
    if text.startswith("data:"):
        return decode_data_uri(text)
    if text.startswith(("http://", "https://")):
        return fetch(text, LOCAL_USER)
    path = Path(text).expanduser()
    if path.is_file():
        if path.stat().st_size > max_bytes:
            raise LimitError(f"{describe(src)}: file is larger than {max_bytes} bytes")
        return path.read_bytes()
    if path.is_dir():
        raise MediaError(f"{describe(src)}: is a directory, not an image or video file")
    if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES or len(text) < 64:
        raise MediaError(f"{describe(src)}: no such file")
    return decode_base64(text, describe(src))


def load_image(src: MediaInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB image with EXIF orientation applied; GIFs give their first frame."""
    if isinstance(src, Image.Image):
        check_pixels(src, describe(src), max_pixels)
        return to_rgb(src)
    with opened(src, max_pixels) as (image, name):
        try:
            image.seek(0)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaError(f"{name}: corrupt or truncated image ({exc})") from None


def image_size(src: MediaInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Width and height from the image's header, its pixels not decoded (so a limit on what the
    image will cost can be checked before the cost is paid)."""
    if isinstance(src, Image.Image):
        return src.size
    with opened(src, max_pixels) as (image, _):
        return image.size


@contextmanager
def opened(src: MediaInput, max_pixels: int) -> Iterator[tuple[Image.Image, str]]:
    """The image opened from its header only and checked against the pixel limit, with its name."""
    if isinstance(src, (str, Path)) and is_video(src):
        raise MediaError(f"{describe(src)}: is a video; pass it as the only media item")
    data = read_source(src)
    name = describe(src)
    try:
        with warnings.catch_warnings():  # our own pixel limit replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL refuses before reading the size: take it from its message
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "the image"
        raise LimitError(f"{name}: {size} is over the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise MediaError(f"{name}: not an image smolsight can read (PNG, JPEG, WebP, BMP, GIF, TIFF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{name}: corrupt or truncated image ({exc})") from None
    with image:
        check_pixels(image, name, max_pixels)
        yield image, name


def check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise LimitError(f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels")
    if width < 1 or height < 1:
        raise MediaError(f"{name}: image is empty")


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def sample_indices(total: int, fps: float, target_fps: float, max_frames: int) -> list[int]:
    """Evenly spaced frame numbers: `target_fps` per second of video, at most `max_frames`."""
    duration = total / fps if fps else 0
    wanted = max(1, min(max_frames, round(target_fps * duration)))
    return sorted(set(np.linspace(0, total - 1, wanted, dtype=int).tolist()))


def load_video(
    src: str | Path | bytes | Video,
    target_fps: float = 1.0,
    max_frames: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Video:
    """Decode a video with PyAV, keeping only the sampled frames in memory."""
    if isinstance(src, Video):
        return src
    import av

    name = describe(src)
    data = read_source(src)
    try:
        total, fps, (width, height) = count_frames(data, name)
        if width * height > max_pixels:  # from the stream's header, before any frame is decoded
            raise LimitError(f"{name}: {width}x{height} = {width * height:,} pixels per frame is over the limit of {max_pixels:,} pixels")
        indices = sample_indices(total, fps, target_fps, max_frames)
        frames = decode_frames(data, set(indices))
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise MediaError(f"{name}: not a video smolsight can decode ({decoder_complaint(exc)})") from None
    if not frames:
        raise MediaError(f"{name}: video has no decodable frames")
    indices = indices[: len(frames)]
    picked = np.stack(frames)
    return Video(frames=picked, indices=indices, fps=fps, total_frames=total, source=name)


def decoder_complaint(exc: Exception) -> str:
    """FFmpeg's words without its errno and file name ("[Errno 1094995529] Invalid data found
    when processing input: '<none>'" becomes "invalid data found when processing input")."""
    text = getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text).split(": '")[0].strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def count_frames(data: bytes, name: str) -> tuple[int, float, tuple[int, int]]:
    """Frame count, rate and frame size from the container (no frame decoded), counting packets
    where the header has no count."""
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise MediaError(f"{name}: has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
        size = (stream.codec_context.width, stream.codec_context.height)
        total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if total < 1:
        raise MediaError(f"{name}: video has no decodable frames")
    return total, fps, size


def decode_frames(data: bytes, wanted: set[int]) -> list[np.ndarray]:
    """Decode once, keeping only the wanted frames, so long videos don't fill memory."""
    import av

    frames = []
    with av.open(io.BytesIO(data)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if number >= max(wanted):
                break
    return frames
