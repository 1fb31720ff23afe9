"""The one inference path: everything (CLI, server, eval, bench, finetune) goes through `Engine`.

A request is processed on its own (its own image size and tiling), its image features are
computed once (and cached by content, so a second question about the same picture skips the
vision encoder); then `generation.Generation`, the one decode loop, prefills it and decodes it
with whatever other rows are running, owning every stopping decision: end of utterance, stop
strings, the loop guard, cancellation and the token limit, each per row.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from . import openmp  # noqa: F401  (must come before torch)

import torch  # noqa: E402

from . import decoding, fastpaths, logprobs, ocr, vision
from ..errors import MediaError, SmolsightError
from .fastpaths import FastPaths
from .generation import Chunk, Generation, Result
from .loading import DEFAULT_MODEL, choose_runtime, load_model
from .media import DEFAULT_MAX_PIXELS, MediaInput, Video, is_video, load_image, load_video
from .options import NATIVE_IMAGE_SIZE, PREFILL_CHUNK, PROCESSING_SETTINGS, GenerationOptions, image_size_setting, resolve_options
from .prompts import Message, chat_text, images_of, native_images, validate, video_of
from .redundancy import repetition_metrics
from .structured import Constraint, Grammars, ResponseFormat
from .torch_vision import image_tiles

__all__ = ["Chunk", "Engine", "Request", "Result"]

TILE_CACHE_SIZE = 416  # tiles whose features are kept: 32 pictures of 13 tiles (an 800x600 frame at the model's size)


@dataclass
class Request:
    """One question: a conversation whose last message is the user's, plus processing settings."""

    messages: list[Message]
    options: GenerationOptions = field(default_factory=resolve_options)
    image_size: int | str | None = None  # longest edge before tiling, or "native"; None keeps the model's (options.image_size_setting)
    split: bool = True  # cut images into tiles (costly but sharper)
    video_fps: float | None = None
    max_frames: int | None = None
    ocr: str | None = None  # "prompt": text read by OCR goes into the prompt; "answer": it is the answer (engine.ocr)
    response_format: ResponseFormat | None = None  # the answer must be this JSON (engine.structured); None: free text

    def __post_init__(self) -> None:
        self.image_size = image_size_setting(self.image_size)
        if self.response_format is not None and self.ocr == "answer":
            raise SmolsightError("OCR's answer mode generates nothing, so it cannot follow a response_format")

    @classmethod
    def simple(cls, media: MediaInput | list[MediaInput] | None, prompt: str, max_pixels: int = DEFAULT_MAX_PIXELS, **settings) -> "Request":
        """Images (any number) or one video, and a prompt, as one user turn."""
        image_size_setting(settings.get("image_size"))  # a bad setting fails before any image is read
        items = [] if media is None else media if isinstance(media, list) else [media]
        videos = [m for m in items if is_video(m)]
        if videos and len(items) > 1:
            raise MediaError("give either images or one video, not both and not several videos")
        images = [load_image(m, max_pixels) for m in items if not is_video(m)]
        return cls([Message("user", prompt, images=images, video=videos[0] if videos else None)], **settings)


class Engine:
    def __init__(self, model, processor, name: str, device: str, dtype: str, attn: str, fast: FastPaths = FastPaths(), vision_backend=None) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype
        self.attn = attn
        self.fast = fast
        self.tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.vocab = model.config.text_config.vocab_size
        self.layout = decoding.layout_tokens(self.tokenizer, self.vocab)
        self.token_texts = logprobs.TokenTexts(self.tokenizer)
        self.vision_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # tile key -> features (`image_features`)
        self.vision_cache_lock = threading.Lock()
        self.vision = vision_backend or vision.TorchVision(model, device)  # image features: torch or OpenVINO
        self.decode_forward = fastpaths.decode_step(model, fast)  # the model's one-token forward
        self.grammars = Grammars(self.tokenizer, self.vocab, sorted(self.eos_ids))  # structured output

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        attn: str | None = None,
        adapter: str | None = None,
        quiet: bool = False,
        fast: FastPaths | str | None = None,
        verbose: bool = False,
    ) -> "Engine":
        """`fast`: the speed-ups to apply (a `FastPaths`, or a spec like 'int8,decode_threads=1' or 'none');
        None takes what measured as a win on the device (see smolsight.engine.fastpaths)."""
        device, dtype, attn = choose_runtime(device, dtype, attn)
        if not isinstance(fast, FastPaths):
            fast = fastpaths.parse_fast_paths(fast, device)
        vision.check(fast.vision, device)
        network, processor = load_model(model, device, dtype, attn, adapter=adapter, quiet=quiet, verbose=verbose,
                                         note=f"; fast paths: {', '.join(fast.names()) or 'none'}")
        fastpaths.apply(network, fast, device)
        backend = vision.make(fast.vision, network, processor, device, dtype, quiet)
        return cls(network, processor, model, device, dtype, attn, fast, backend)

    @property
    def runtime(self) -> dict:
        return {"model": self.name, "device": self.device, "dtype": self.dtype, "attn": self.attn}

    def ask(self, media: MediaInput | list[MediaInput] | None, prompt: str, preset: str | None = None, **options) -> Result:
        """One answer, drained from `stream`."""
        return self.ask_batch([self.request(media, prompt, preset, **options)])[0]

    def stream(self, media: MediaInput | list[MediaInput] | None, prompt: str, preset: str | None = None, **options) -> Iterator[Chunk | Result]:
        """Text pieces as they are generated, then the final `Result`."""
        yield from self.stream_batch([self.request(media, prompt, preset, **options)])

    def request(self, media, prompt: str, preset: str | None = None, **options) -> Request:
        settings = {k: options.pop(k) for k in PROCESSING_SETTINGS if k in options}
        return Request.simple(media, prompt, options=resolve_options(preset, **options), **settings)

    def ask_batch(self, requests: list[Request]) -> list[Result]:
        """Several requests as one padded batch; results in request order."""
        results = [event for event in self.stream_batch(requests) if isinstance(event, Result)]
        return sorted(results, key=lambda r: r.row)

    def stream_batch(
        self, requests: list[Request], cancelled: Callable[[int], bool] | None = None, prepared: list[dict] | None = None
    ) -> Iterator[Chunk | Result]:
        """Generate all requests together, yielding `Chunk`s and one `Result` per row as it ends.
        `prepared` (from `prepare`) lets a caller that already checked each request skip redoing it."""
        start = time.perf_counter()
        prepared = prepared or [self.prepare(request) for request in requests]
        generation = self.generation(max_rows=max(1, len(requests)))
        for row, (request, inputs) in enumerate(zip(requests, prepared, strict=True)):
            generation.add(row, request, inputs, start)
        while not generation.idle:
            yield from generation.step(cancelled or (lambda row: False))

    def generation(self, max_rows: int, prefill_chunk: int = PREFILL_CHUNK, keep_threads: bool = False) -> Generation:
        """A decode loop that requests can join while it runs (the server keeps one going). Its decode
        steps use the engine's `decode_threads`, unless `keep_threads`: then torch's thread count is
        left alone, which a caller running torch on another thread at the same time needs (the server)."""
        return Generation(self, max_rows, prefill_chunk, None if keep_threads else self.fast.decode_threads)

    def constraint(self, request: Request) -> Constraint | None:
        """The row's structured output (engine.structured): None for free text."""
        return self.grammars.constraint(request.response_format, request.options, self.layout)

    def ocr_answer(self, row: int, lines: list[ocr.OcrLine], start: float) -> Result:
        """Mode "answer": the text OCR read is the answer; nothing is generated."""
        text = ocr.answer_text(lines)
        elapsed = round(time.perf_counter() - start, 4)
        return Result(text=text, finish_reason="stop", input_tokens=0, output_tokens=0, ttft_s=elapsed, total_s=elapsed, row=row,
                      raw_text=text, metrics=repetition_metrics(text).to_dict(), ocr=[line.to_dict() for line in lines], **self.runtime)  # fmt: skip

    def prepare(self, request: Request) -> dict:
        """Tokens and input embeddings (image features merged in) of one request."""
        for message in request.messages:
            if message.video is not None and not isinstance(message.video, Video):
                message.video = self.load_video(message.video, request)
        validate(request.messages)
        request.options.check_vocabulary(self.vocab)
        lines = self.read_text(request)
        if request.ocr == "answer":
            return {"input_ids": torch.empty(0, dtype=torch.long), "ocr": lines}
        inputs = self.process(replace(request, messages=ocr.grounded_messages(request.messages, lines)) if lines is not None else request)
        input_ids = inputs["input_ids"].to(self.device)
        with torch.inference_mode():
            embeds = self.model.get_input_embeddings()(input_ids)
            if "pixel_values" in inputs:
                features = self.image_features(inputs)
                mask = (input_ids == self.model.config.image_token_id)[..., None]
                embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
        return {"input_ids": input_ids[0], "embeds": embeds[0], "ocr": lines}

    def read_text(self, request: Request) -> list[ocr.OcrLine] | None:
        """The lines OCR reads in the request's images or video when it asks for OCR, else None."""
        ocr.check_mode(request.ocr)
        if request.ocr is None:
            return None
        return ocr.read_media(images_of(request.messages), video_of(request.messages))

    def load_video(self, source: MediaInput, request: Request) -> Video:
        """Sample by fps and frame cap, defaulting to the model's own video settings."""
        sampling = self.processor.video_processor
        return load_video(source, request.video_fps or sampling.fps, request.max_frames or sampling.num_frames)

    def process(self, request: Request) -> dict:
        from transformers.video_utils import VideoMetadata

        text = chat_text(self.processor, request.messages)
        kwargs: dict = {"return_tensors": "pt"}
        images = images_of(request.messages)
        video = video_of(request.messages)
        if images:
            native = request.image_size == NATIVE_IMAGE_SIZE
            kwargs["images"] = [native_images(self.processor, images) if native else images]
            kwargs["do_image_splitting"] = request.split
            if native:
                kwargs["do_resize"] = False  # each image at its own size (prompts.native_images)
            elif request.image_size:
                kwargs["size"] = {"longest_edge": request.image_size}
        if video is not None:
            kwargs["videos"] = [video.frames]
            kwargs["video_metadata"] = [
                VideoMetadata(total_num_frames=video.total_frames, fps=video.fps, frames_indices=video.indices, duration=video.duration)
            ]
            kwargs["do_sample_frames"] = False
        return self.processor(text=[text], **kwargs)

    def image_features(self, inputs: dict) -> torch.Tensor:
        """Vision encoder + connector output, cached per tile by pixel content: a tile seen before (the
        same picture asked about again, a reference picture beside a new one) is not encoded again.
        SigLIP encodes each tile on its own, so a tile's features do not depend on the tiles beside it.
        The request keeps its own references to its tiles' features, so requests prepared on other
        threads meanwhile can evict them from the cache without taking them from this one."""
        tiles, masks = image_tiles(inputs["pixel_values"], inputs.get("pixel_attention_mask"))
        keys = [tile_key(tile, None if masks is None else masks[i]) for i, tile in enumerate(tiles)]
        with self.vision_cache_lock:
            found = {key: self.vision_cache.get(key) for key in keys}  # a tile repeated in this request: once
        new = [key for key, features in found.items() if features is None]
        if new:
            index = torch.tensor([keys.index(key) for key in new])
            features = self.vision(tiles[index][None], None if masks is None else masks[index][None])
            for key, tile_features in zip(new, features.unflatten(0, (len(new), -1))):
                found[key] = tile_features.clone()  # not a view that would keep the whole call's output alive
        with self.vision_cache_lock:
            for key, tile_features in found.items():
                self.vision_cache[key] = tile_features
                self.vision_cache.move_to_end(key)
            while len(self.vision_cache) > TILE_CACHE_SIZE:
                self.vision_cache.popitem(last=False)
        return torch.cat([found[key] for key in keys])

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def tile_key(tile: torch.Tensor, mask: torch.Tensor | None) -> str:
    """A tile's pixels and pixel mask, hashed (the buffers themselves, no copy)."""
    digest = hashlib.sha1(tile.contiguous().numpy())
    if mask is not None:
        digest.update(mask.contiguous().numpy())
    return digest.hexdigest()
