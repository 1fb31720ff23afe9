"""The one inference path: everything (CLI, server, eval, bench, finetune) goes through `Engine`.

A request is processed on its own (its own image size and tiling), its image features are
computed once (and cached by content, so a second question about the same picture skips the
vision encoder), then requests are left-padded into one batch and decoded together by a plain
loop that owns every stopping decision: end of utterance, stop strings, the loop guard,
cancellation and the token limit, each per row.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

from . import openmp  # noqa: F401  (must come before torch)

import torch  # noqa: E402

from . import decoding

from . import fastpaths, ocr, vision
from ..errors import MediaError
from .fastpaths import FastPaths
from .loading import DEFAULT_MODEL, choose_runtime, load_model
from .media import DEFAULT_MAX_PIXELS, MediaInput, Video, is_video, load_image, load_video
from .options import PROCESSING_SETTINGS, GenerationOptions, resolve_options
from .prompts import Message, chat_text, images_of, validate, video_of
from .answer import AnswerText
from .redundancy import repetition_metrics

VISION_CACHE_SIZE = 32


@dataclass
class Request:
    """One question: a conversation whose last message is the user's, plus processing settings."""

    messages: list[Message]
    options: GenerationOptions = field(default_factory=resolve_options)
    image_size: int | None = None  # longest edge before tiling; None keeps the model's setting
    split: bool = True  # cut images into tiles (costly but sharper)
    video_fps: float | None = None
    max_frames: int | None = None
    ocr: str | None = None  # "prompt": text read by OCR goes into the prompt; "answer": it is the answer (engine.ocr)

    @classmethod
    def simple(cls, media: MediaInput | list[MediaInput] | None, prompt: str, max_pixels: int = DEFAULT_MAX_PIXELS, **settings) -> "Request":
        """Images (any number) or one video, and a prompt, as one user turn."""
        items = [] if media is None else media if isinstance(media, list) else [media]
        videos = [m for m in items if is_video(m)]
        if videos and len(items) > 1:
            raise MediaError("give either images or one video, not both and not several videos")
        images = [load_image(m, max_pixels) for m in items if not is_video(m)]
        return cls([Message("user", prompt, images=images, video=videos[0] if videos else None)], **settings)


@dataclass
class Chunk:
    """A piece of streamed text for row `row` of a batch."""

    row: int
    text: str


@dataclass
class Result:
    text: str
    finish_reason: str  # stop | length | repetition | cancelled
    input_tokens: int
    output_tokens: int
    ttft_s: float
    total_s: float
    model: str
    device: str
    dtype: str
    attn: str
    row: int = 0
    raw_text: str = ""  # before loop trimming and sentence de-duplication
    removed_chars: int = 0  # by sentence de-duplication
    held_back_chars: int = 0  # most characters generated but not yet streamed, at any one time
    metrics: dict = field(default_factory=dict)
    ocr: list[dict] | None = None  # the lines OCR read, when the request asked for OCR

    @property
    def tokens_per_s(self) -> float:
        decode_time = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode_time if self.output_tokens > 1 and decode_time > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        data.pop("row")
        if self.ocr is None:
            data.pop("ocr")
        return data


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
        self.layout = decoding.layout_tokens(self.tokenizer, model.config.text_config.vocab_size)
        self.vision_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.vision = vision_backend or vision.TorchVision(model, device)  # image features: torch or OpenVINO
        self.decode_forward = fastpaths.decode_step(model, fast)  # the model's one-token forward, compiled if asked

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
        """`fast`: the speed-ups to apply (a `FastPaths`, or a spec like 'int8,static_cache' or 'none');
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
        cancelled = cancelled or (lambda row: False)
        for row, request in enumerate(requests):
            if request.ocr == "answer":
                yield self.ocr_answer(row, prepared[row]["ocr"], start)
        rows = [row for row, request in enumerate(requests) if request.ocr != "answer"]
        if not rows:
            return
        with torch.inference_mode():
            for event in self.generate([requests[r] for r in rows], [prepared[r] for r in rows], start, lambda i: cancelled(rows[i])):
                event.row = rows[event.row]  # back to the caller's numbering, answered-by-OCR rows included
                if isinstance(event, Result) and prepared[event.row].get("ocr") is not None:
                    event.ocr = [line.to_dict() for line in prepared[event.row]["ocr"]]
                yield event

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
            kwargs["images"] = [images]
            kwargs["do_image_splitting"] = request.split
            if request.image_size:
                kwargs["size"] = {"longest_edge": request.image_size}
        if video is not None:
            kwargs["videos"] = [video.frames]
            kwargs["video_metadata"] = [
                VideoMetadata(total_num_frames=video.total_frames, fps=video.fps, frames_indices=video.indices, duration=video.duration)
            ]
            kwargs["do_sample_frames"] = False
        return self.processor(text=[text], **kwargs)

    def image_features(self, inputs: dict) -> torch.Tensor:
        """Vision encoder + connector output, cached by pixel content."""
        pixels = inputs["pixel_values"]
        key = hashlib.sha1(pixels.contiguous().numpy()).hexdigest()  # hashes the buffer, no copy
        if key in self.vision_cache:
            self.vision_cache.move_to_end(key)
            return self.vision_cache[key]
        features = self.vision(pixels, inputs.get("pixel_attention_mask"))
        self.vision_cache[key] = features
        if len(self.vision_cache) > VISION_CACHE_SIZE:
            self.vision_cache.popitem(last=False)
        return features

    def generate(self, requests, prepared, start, cancelled) -> Iterator[Chunk | Result]:
        batch = len(prepared)
        lengths = [len(p["input_ids"]) for p in prepared]
        width = max(lengths)
        hidden = prepared[0]["embeds"].shape[-1]
        embeds = torch.zeros(batch, width, hidden, dtype=prepared[0]["embeds"].dtype, device=self.device)
        attention = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        prompt_ids = torch.full((batch, width), -1, dtype=torch.long, device=self.device)  # -1: padding
        for row, p in enumerate(prepared):
            embeds[row, width - lengths[row] :] = p["embeds"]
            attention[row, width - lengths[row] :] = 1
            prompt_ids[row, width - lengths[row] :] = p["input_ids"]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        rows = [RowState(r, requests[r].options, lengths[r], self.layout) for r in range(batch)]
        choosers = self.choosers(rows, prompt_ids)
        new_tokens = max(row.options.max_new_tokens for row in rows)
        cache, mask = fastpaths.make_cache(self.model.config.text_config, self.fast.static_cache, attention, new_tokens)
        output = self.model(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        with fastpaths.thread_count(self.fast.decode_threads):
            yield from self.steps(rows, choosers, output, mask, positions, cache, start, cancelled)

    def steps(self, rows, choosers, output, mask: "fastpaths.DecodeMask", positions, cache, start, cancelled) -> Iterator[Chunk | Result]:
        """Choose a token per row, report it, stop rows that are done, run the next decode step."""
        batch = len(rows)
        ttft = None
        while True:
            logits = output.logits[:, -1, :].float()
            tokens = torch.empty(batch, dtype=torch.long, device=self.device)
            for indices, chooser in choosers:
                pending = torch.tensor([rows[i].pending_min for i in indices], device=self.device)
                tokens[indices] = chooser(logits[indices], sorted(self.eos_ids), pending)
                chooser.record(tokens[indices])
            if ttft is None:
                ttft = time.perf_counter() - start
            for row, token in zip(rows, tokens.tolist()):
                if row.done:
                    continue
                piece = row.push(token, self)
                if not row.done and cancelled(row.index):
                    piece += row.finish("cancelled", self)
                if piece:
                    yield Chunk(row.index, piece)
                if row.done:
                    yield self.finish(row, ttft, start)
            if all(row.done for row in rows):
                return
            step = torch.tensor([[self.pad_id if row.done else t] for row, t in zip(rows, tokens.tolist())], device=self.device)
            positions = positions[:, -1:] + 1
            output = self.decode_forward(input_ids=step, attention_mask=mask.advance(), position_ids=positions, cache=cache, use_cache=True)

    def choosers(self, rows: list["RowState"], prompt_ids: torch.Tensor) -> list[tuple[list[int], decoding.TokenChooser]]:
        """One token chooser per distinct set of options, over the rows that share it."""
        groups: dict[GenerationOptions, list[int]] = {}
        for row in rows:
            groups.setdefault(row.options, []).append(row.index)
        vocab = self.model.config.text_config.vocab_size
        return [(indices, decoding.TokenChooser(options, prompt_ids[indices], vocab)) for options, indices in groups.items()]

    def finish(self, row: "RowState", ttft: float, start: float) -> Result:
        text = row.answer.text
        return Result(
            text=text,
            finish_reason=row.reason,
            input_tokens=row.input_tokens,
            output_tokens=len(row.tokens),
            ttft_s=round(ttft, 4),
            total_s=round(time.perf_counter() - start, 4),
            row=row.index,
            raw_text=self.decode(row.tokens),
            removed_chars=row.answer.removed,
            held_back_chars=row.answer.held_max,
            metrics=repetition_metrics(text).to_dict(),  # of the answer returned; raw_text keeps the rest
            **self.runtime,
        )

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


class RowState:
    """What one row of a batch has generated, what of it is answer text, and why it stopped."""

    def __init__(self, index: int, options: GenerationOptions, input_tokens: int, layout) -> None:
        self.index = index
        self.options = options
        self.input_tokens = input_tokens
        self.tokens: list[int] = []
        self.guard = decoding.make_guard(options, layout)
        self.answer = AnswerText(options)
        self.reason = ""
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # decoded text of the tokens so far (but an incomplete last character)
        self.ends: list[int] = []  # ends[i]: len(text) once token i was decoded

    @property
    def done(self) -> bool:
        return bool(self.reason)

    @property
    def pending_min(self) -> bool:
        return len(self.tokens) < self.options.min_new_tokens

    def finish(self, reason: str, engine: Engine, end: int | None = None) -> str:
        """Stop the row; return the rest of its answer, the raw text ending at character `end`
        (default: all that was generated)."""
        self.reason = reason
        if end is None:
            self.text += self.rest(engine)
            end = len(self.text)
        return self.answer.close(self.text, end)

    def push(self, token: int, engine: Engine) -> str:
        """Record a token; return newly final answer text; decide whether the row is done."""
        if token in engine.eos_ids and not self.pending_min:
            return self.finish("stop", engine)
        self.tokens.append(token)
        hit = self.guard.push(token) if self.guard is not None else None
        self.text += self.next_text(engine)
        self.ends.append(len(self.text))
        if hit is not None:
            keep = decoding.clean_cut(self.tokens, hit, engine.decode)
            return self.finish("repetition", engine, self.ends[keep - 1])
        at = decoding.find_stop(self.text, self.options.stop) if self.options.stop else None
        if at is not None:
            return self.finish("stop", engine, at)
        if len(self.tokens) >= self.options.max_new_tokens:
            return self.finish("length", engine)
        final = len(self.tokens) if self.guard is None else self.guard.safe
        piece = self.answer.advance(self.text, self.ends[final - 1] if final else 0)
        if self.guard is not None and self.answer.repeating:
            self.reason = "repetition"
            piece += self.answer.end_repeating()
        return piece

    def next_text(self, engine: Engine) -> str:
        """Incremental detokenisation (prefix/read offsets) so streaming costs O(1) per token,
        holding back text that ends in an incomplete UTF-8 sequence."""
        before = engine.decode(self.tokens[self.prefix_offset : self.read_offset])
        after = engine.decode(self.tokens[self.prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return after[len(before) :]
        return ""

    def rest(self, engine: Engine) -> str:
        """What `next_text` still holds back (an incomplete character at the very end)."""
        before = engine.decode(self.tokens[self.prefix_offset : self.read_offset])
        return engine.decode(self.tokens[self.prefix_offset :])[len(before) :]
