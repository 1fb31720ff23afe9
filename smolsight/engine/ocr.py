"""Reading the text in images with a real OCR model, so answers about text rest on what is written.

SmolVLM2 reads text poorly (the field report's 2.2B listed fragments of a nameplate). With
`Request.ocr`, the engine runs an OCR model on every image (and on up to `VIDEO_FRAMES` of a
video's sampled frames) and either puts the lines it read, each with a rough position, into the
prompt through `TEMPLATES` (mode "prompt"), or answers with the text read, without generating
(mode "answer", for "what does it say?" questions).

Two engines, both reading their weights from what is installed and fetching nothing:
`rapidocr` (PP-OCRv4 detection and recognition, ONNX models inside the `rapidocr-onnxruntime`
wheel; the default, chosen by the accuracy measured in docs/eval.md) and `tesseract` (the
Debian binary with `chi_sim` and `eng`). `SMOLSIGHT_OCR_ENGINE` picks one. Readings are cached
by pixel content, as image features are, so a second question about a picture reads it once.
An image with no text, or one the engine cannot make sense of, gives no lines.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..errors import SmolsightError
from ..text import CJK, has_cjk
from .prompts import Message, images_of, video_of

ENGINES = ("rapidocr", "tesseract")
DEFAULT_ENGINE = "rapidocr"
MODES = ("prompt", "answer")
MISSING = "this needs OCR: pip install 'smolsight[ocr]'"
MISSING_TESSERACT = "OCR engine tesseract needs its binary: apt install tesseract-ocr tesseract-ocr-chi-sim"
CACHE_SIZE = 256
VIDEO_FRAMES = 8  # OCR costs about a second a frame on a CPU: a video is read on a few of its frames
TESSERACT_LANGS = "chi_sim+eng"
MAX_ASPECT = 8  # longest side over shortest, before RapidOCR sees an image

# What the prompt gains in mode "prompt": the lines read, then the user's question. The
# language follows the question's (a question with Chinese characters gets the Chinese one).
TEMPLATES = {
    "en": "Text read in the {media} by OCR (position: text):\n{lines}\n\n{question}",
    "zh": "OCR 识别出的{media}中的文字（位置：文字）：\n{lines}\n\n{question}",
}
NO_TEXT = {"en": "(none: OCR found no text)", "zh": "（无：OCR 未识别出文字）"}
MEDIA_WORDS = {"en": {"image": "image", "images": "images", "video": "video"}, "zh": {"image": "图像", "images": "图像", "video": "视频"}}
ROWS = {"en": ("top", "middle", "bottom"), "zh": ("上", "中", "下")}
COLUMNS = {"en": ("left", "centre", "right"), "zh": ("左", "中", "右")}


@dataclass(frozen=True)
class OcrLine:
    """One line of text read: its words, its box (x0, y0, x1, y1 in the image's pixels), the
    engine's confidence (0-1), and where it was read ("image 2", "frame at 1.5 s"; empty for a
    single image). `width`/`height` are the image's, so the position can be put in words."""

    text: str
    box: tuple[int, int, int, int]
    confidence: float
    width: int
    height: int
    source: str = ""

    def place(self, lang: str = "en") -> str:
        """The rough position in a 3x3 grid: 'top left', 'middle centre', '上左'…"""
        x = (self.box[0] + self.box[2]) / 2 / max(self.width, 1)
        y = (self.box[1] + self.box[3]) / 2 / max(self.height, 1)
        row, column = ROWS[lang][min(int(y * 3), 2)], COLUMNS[lang][min(int(x * 3), 2)]
        return row + column if lang == "zh" else f"{row} {column}"

    def to_dict(self) -> dict:
        return {"text": self.text, "box": list(self.box), "position": self.place(), "confidence": round(self.confidence, 3), "source": self.source}


# ---- engines -------------------------------------------------------------------------------


class RapidReader:
    """PP-OCRv4 through RapidOCR: its ONNX models ship inside the wheel."""

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise SmolsightError(MISSING) from None
        self.model = RapidOCR()

    def read(self, image: Image.Image) -> list[OcrLine]:
        found, _ = self.model(within_aspect(image))
        lines = []
        for points, text, confidence in found or []:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))
            lines.append(OcrLine(text.strip(), box, float(confidence), *image.size))
        return [line for line in lines if line.text]


def within_aspect(image: Image.Image) -> Image.Image:
    """`image` padded at the right or bottom (boxes keep their coordinates) to at most
    `MAX_ASPECT`: PP-OCR's detector scales the short side up to 736 px, so a 1×1000 strip
    would become 736×736,000 and exhaust memory."""
    width, height = image.size
    if max(width, height) <= MAX_ASPECT * min(width, height):
        return image
    padded = Image.new("RGB", (max(width, -(-height // MAX_ASPECT)), max(height, -(-width // MAX_ASPECT))), (255, 255, 255))
    padded.paste(image)
    return padded


class TesseractReader:
    """Tesseract's command-line binary, one call per image, its TSV words grouped into lines."""

    def __init__(self) -> None:
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise SmolsightError(MISSING_TESSERACT)

    def read(self, image: Image.Image) -> list[OcrLine]:
        png = io.BytesIO()
        image.save(png, format="PNG")
        done = subprocess.run([self.binary, "stdin", "stdout", "-l", TESSERACT_LANGS, "tsv"], input=png.getvalue(),
                              capture_output=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise SmolsightError(f"tesseract failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
        return tesseract_lines(done.stdout.decode("utf-8", errors="replace"), *image.size)


def tesseract_lines(tsv: str, width: int, height: int) -> list[OcrLine]:
    """Tesseract's TSV (one row per word) as lines: words joined with spaces, except between
    Chinese characters; the line's confidence is its words' mean."""
    words: dict[tuple[str, ...], list[tuple[str, tuple[int, int, int, int], float]]] = {}
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] != "5" or not cells[11].strip():
            continue
        left, top, w, h = (int(v) for v in cells[6:10])
        words.setdefault(tuple(cells[1:5]), []).append((cells[11].strip(), (left, top, left + w, top + h), float(cells[10]) / 100))
    lines = []
    for group in words.values():
        boxes = [box for _, box, _ in group]
        box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        lines.append(OcrLine(join_words([text for text, _, _ in group]), box, float(np.mean([c for _, _, c in group])), width, height))
    return lines


_CJK_EDGE = re.compile(f"(?<=[{CJK}]) (?=[{CJK}])")


def join_words(words: list[str]) -> str:
    return _CJK_EDGE.sub("", " ".join(words))


@functools.cache
def reader(name: str) -> RapidReader | TesseractReader:
    """The engine `name`, loaded once per process."""
    if name not in ENGINES:
        raise SmolsightError(f"unknown OCR engine {name!r}; choose one of {', '.join(ENGINES)}")
    return RapidReader() if name == "rapidocr" else TesseractReader()


def engine_name(name: str | None = None) -> str:
    return name or os.environ.get("SMOLSIGHT_OCR_ENGINE") or DEFAULT_ENGINE


# ---- reading, cached -----------------------------------------------------------------------

_cache: OrderedDict[str, tuple[OcrLine, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def pixel_key(image: Image.Image, engine: str) -> str:
    digest = hashlib.sha1(f"{engine} {image.mode} {image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def read_image(image: Image.Image, engine: str | None = None, cached: bool = True) -> list[OcrLine]:
    """The lines of text in `image`, in reading order, cached by pixel content (`cached=False`
    reads afresh, for timing)."""
    name = engine_name(engine)
    key = pixel_key(image, name)
    with _cache_lock:
        if cached and key in _cache:
            _cache.move_to_end(key)
            return list(_cache[key])
    lines = reading_order(reader(name).read(image.convert("RGB")))
    with _cache_lock:
        _cache[key] = tuple(lines)
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return lines


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom, and left to right along a row (boxes whose vertical middles lie within
    half a line height of each other share a row)."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda l: (l.box[1] + l.box[3]) / 2):
        middle, half = (line.box[1] + line.box[3]) / 2, (line.box[3] - line.box[1]) / 2
        if rows and abs(middle - (rows[-1][0].box[1] + rows[-1][0].box[3]) / 2) <= half:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda l: l.box[0])]


def read_media(images: list[Image.Image], video=None, engine: str | None = None) -> list[OcrLine]:
    """The lines in every image ("image N" when there are several) or in up to `VIDEO_FRAMES`
    evenly spaced sampled frames of `video` (a line seen on several frames is kept once, at
    the first)."""
    if video is not None:
        return read_video(video, engine)
    if len(images) == 1:
        return read_image(images[0], engine)
    return [replace(line, source=f"image {n}") for n, image in enumerate(images, start=1) for line in read_image(image, engine)]


def read_video(video, engine: str | None = None) -> list[OcrLine]:
    picks = np.unique(np.linspace(0, len(video.frames) - 1, min(VIDEO_FRAMES, len(video.frames))).astype(int))
    seen: dict[str, OcrLine] = {}
    for pick in picks:
        at = f"frame at {video.indices[pick] / video.fps:.1f} s"
        for line in read_image(Image.fromarray(video.frames[pick]), engine):
            seen.setdefault(line.text, replace(line, source=at))
    return list(seen.values())


# ---- what the model or the user gets -------------------------------------------------------


def grounded_messages(messages: list[Message], lines: list[OcrLine]) -> list[Message]:
    """The conversation with the lines read put before the last question (a copy; a request
    without images or a video is left as it is)."""
    images, video = images_of(messages), video_of(messages)
    if not images and video is None:
        return messages
    media = "video" if video is not None else "images" if len(images) > 1 else "image"
    return [*messages[:-1], replace(messages[-1], text=grounded_prompt(messages[-1].text, lines, media))]


def grounded_prompt(question: str, lines: list[OcrLine], media: str) -> str:
    """`question` after the lines read, per `TEMPLATES`; `media` is 'image', 'images' or 'video'."""
    lang = "zh" if has_cjk(question) else "en"
    listed = "\n".join(f"- {line_label(line, lang)}: {line.text}" for line in lines) or NO_TEXT[lang]
    return TEMPLATES[lang].format(media=MEDIA_WORDS[lang][media], lines=listed, question=question)


def line_label(line: OcrLine, lang: str) -> str:
    separator = "，" if lang == "zh" else ", "
    return separator.join(part for part in (line.source, line.place(lang)) if part)


def answer_text(lines: list[OcrLine]) -> str:
    """Mode "answer": the text read, lines in reading order joined by spaces."""
    return " ".join(line.text for line in lines)


def check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise SmolsightError(f"unknown OCR mode {mode!r}; use one of {', '.join(MODES)}")
