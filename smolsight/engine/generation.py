"""Continuous batching: the one decode loop, in which rows join and leave between steps.

A `Generation` holds the rows being decoded together. `add` queues a prepared request (its
prompt's embeddings, images merged in); each `step` first spends up to `prefill_chunk` prompt
tokens on the queued rows, oldest first (a long prompt is prefilled over several steps, so the
rows already decoding keep getting a token per step; with none decoding, the oldest prompt goes
in whole), and a row whose prompt is done chooses its first token and takes a slot in the running
batch (`slots.SlotCache`). Then one decode step runs
for every running row, each row chooses its token with its own `TokenChooser`, and rows that
finish (end of utterance, a stop string, the loop guard, the token limit, cancellation) leave at
once, freeing their slot for the next queued row.

`Engine.stream_batch` is this loop with all requests added up front; the server's batcher keeps
one `Generation` running and adds requests as they arrive. There is no other decode loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from . import decoding, fastpaths, logprobs
from .answer import AnswerText
from .options import PREFILL_CHUNK, GenerationOptions
from .redundancy import repetition_metrics
from .slots import SlotCache

if TYPE_CHECKING:
    from .engine import Engine, Request
    from .structured import Constraint


@dataclass
class Chunk:
    """A piece of streamed text for row `row` of a batch."""

    row: int
    text: str
    logprobs: list[logprobs.TokenLogprob] | None = None  # the tokens this text settled, when the request asks for logprobs


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
    logprobs: list[logprobs.TokenLogprob] | None = None  # the answer's tokens, when the options ask for logprobs

    @property
    def tokens_per_s(self) -> float:
        decode_time = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode_time if self.output_tokens > 1 and decode_time > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        data.pop("row")
        for name in ("ocr", "logprobs"):
            if data[name] is None:
                data.pop(name)
        return data


class Generation:
    """The rows being generated together (see the module docstring). Not thread-safe: one thread drives it."""

    def __init__(self, engine: Engine, max_rows: int, prefill_chunk: int = PREFILL_CHUNK, decode_threads: int | str | None = None) -> None:
        if max_rows < 1 or prefill_chunk < 1:
            raise ValueError("a generation needs at least one row and a prefill chunk of at least one token")
        self.engine = engine
        self.max_rows = max_rows
        self.prefill_chunk = prefill_chunk
        self.decode_threads = decode_threads  # intra-op threads for decode steps (fastpaths.thread_count)
        self.queued: deque[RowState] = deque()  # added, prompt not (fully) prefilled yet
        self.running: list[RowState] = []  # running[i] holds slot i
        self.slots = SlotCache(engine.model.config.text_config, max_rows)
        self.ready: list[Chunk | Result] = []  # events due at the next step (answers read by OCR alone)

    @property
    def idle(self) -> bool:
        return not (self.queued or self.running or self.ready)

    @property
    def rows(self) -> int:
        """Rows added and not finished: the ones running and the ones queued."""
        return len(self.running) + len(self.queued)

    def add(self, key: int, request: Request, prepared: dict, start: float) -> None:
        """Queue a prepared request (`Engine.prepare`); its events carry `key` as their row.
        `start` is when its clock started, for its time to first token and total time."""
        if request.ocr == "answer":
            self.ready.append(self.engine.ocr_answer(key, prepared["ocr"], start))
            return
        row = RowState(key, request.options, len(prepared["input_ids"]), self.engine.layout, start, self.engine.constraint(request))
        row.prepared = prepared
        row.ocr = None if prepared.get("ocr") is None else [line.to_dict() for line in prepared["ocr"]]
        row.chooser = decoding.TokenChooser(row.options, prepared["input_ids"][None], self.engine.vocab)
        self.queued.append(row)

    def step(self, cancelled: Callable[[int], bool] = lambda key: False) -> list[Chunk | Result]:
        """Prefill some of the queue, then one decode step for the running rows; the events it made."""
        events, self.ready = self.ready, []
        with torch.inference_mode():
            self.drop_cancelled(events, cancelled)
            self.prefill(events, cancelled)
            if self.running:
                self.decode(events, cancelled)
        return events

    def drop_cancelled(self, events: list, cancelled: Callable[[int], bool]) -> None:
        """Queued rows whose caller went away end now, before any prefill is spent on them."""
        for row in [row for row in self.queued if cancelled(row.key)]:
            self.queued.remove(row)
            row.finish("cancelled", self.engine)
            events.append(self.result(row))

    def prefill(self, events: list, cancelled: Callable[[int], bool]) -> None:
        """Up to `prefill_chunk` prompt tokens of the queued rows, oldest first, while slots are free.
        With no row decoding there is no stream to keep flowing, so the oldest row's prompt goes in
        one forward (905 tokens: 0.78 s against 0.84 s in two chunks, docs/performance.md)."""
        budget = self.prefill_chunk
        while self.queued and len(self.running) < self.max_rows and budget > 0:
            row = self.queued[0]
            embeds = row.prepared["embeds"]
            left = len(embeds) - row.prefilled
            count = min(budget, left) if self.running else left
            if row.cache is None:
                row.cache = fastpaths.growing_cache(self.engine.model.config.text_config)
            end = row.prefilled + count
            output = self.engine.model(
                inputs_embeds=embeds[None, row.prefilled : end],
                attention_mask=torch.ones(1, end, dtype=torch.long, device=embeds.device),
                position_ids=torch.arange(row.prefilled, end, device=embeds.device)[None],
                cache=row.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            row.prefilled, budget = end, budget - count
            if row.prefilled < len(embeds):
                return
            self.queued.popleft()
            self.take(row, output.logits[0, -1].float(), events, cancelled)
            if not row.done:
                self.slots.join(row.cache)
                self.running.append(row)
            row.cache = row.prepared = None  # the slot holds the keys and values now

    def decode(self, events: list, cancelled: Callable[[int], bool]) -> None:
        """One token for every running row, then the finished rows leave."""
        rows, device = self.running, self.engine.device
        mask = self.slots.step_mask()
        with fastpaths.thread_count(self.decode_threads):
            output = self.engine.decode_forward(
                input_ids=torch.tensor([[row.next_token] for row in rows], device=device),
                attention_mask=mask,
                position_ids=torch.tensor([[row.position] for row in rows], device=device),
                cache=self.slots.cache,
                use_cache=True,
            )
        self.slots.advance()
        logits = output.logits[:, -1, :].float()
        for slot, row in enumerate(rows):
            row.position += 1
            self.take(row, logits[slot], events, cancelled)
        for slot in reversed(range(len(rows))):  # from the end, so the row moved into a freed slot is still running
            if rows[slot].done:
                self.slots.remove(slot)
                rows[slot] = rows[-1]
                rows.pop()

    def take(self, row: RowState, logits: torch.Tensor, events: list, cancelled: Callable[[int], bool]) -> None:
        """Choose the row's next token from its logits [V], and report what that produced."""
        if row.constraint is not None:
            row.constraint.mask(logits)  # structured output: only what the grammar allows
        pending = torch.tensor([row.pending_min], device=logits.device)
        token = row.chooser(logits[None], sorted(self.engine.eos_ids), pending)
        row.chooser.record(token)
        picks = row.chooser.picks(token)
        if row.ttft is None:
            row.ttft = time.perf_counter() - row.start
        piece = row.push(int(token[0]), self.engine, picks[0] if picks else None)
        if not row.done and cancelled(row.key):
            piece += row.finish("cancelled", self.engine)
        entries = row.settled_logprobs(self.engine)
        if piece or entries:
            events.append(Chunk(row.key, piece, entries))
        if row.done:
            events.append(self.result(row))
        else:
            row.next_token = int(token[0])

    def result(self, row: RowState) -> Result:
        total = time.perf_counter() - row.start
        text = row.answer.text
        return Result(
            text=text,
            finish_reason=row.reason,
            input_tokens=row.input_tokens,
            output_tokens=len(row.tokens),
            ttft_s=round(row.ttft if row.ttft is not None else total, 4),
            total_s=round(total, 4),
            row=row.key,
            raw_text=self.engine.decode(row.tokens),
            removed_chars=row.answer.removed,
            held_back_chars=row.answer.held_max,
            metrics=repetition_metrics(text).to_dict(),  # of the answer returned; raw_text keeps the rest
            ocr=row.ocr,
            logprobs=row.trail.entries if row.trail is not None else None,
            **self.engine.runtime,
        )


class RowState:
    """What one row has generated, what of it is answer text, and why it stopped."""

    def __init__(self, key: int, options: GenerationOptions, input_tokens: int, layout, start: float, constraint: Constraint | None = None) -> None:
        self.key = key
        self.constraint = constraint  # structured output; its rows keep their exact text (structured.row_options)
        self.options = options if constraint is None else constraint.options
        self.input_tokens = input_tokens
        self.start = start
        self.ttft: float | None = None
        self.prepared: dict | None = None  # until prefilled
        self.ocr: list[dict] | None = None  # the lines OCR read, for the result
        self.chooser: decoding.TokenChooser | None = None
        self.cache = None  # the prefill's own cache, until the row takes a slot
        self.prefilled = 0  # prompt tokens prefilled so far
        self.position = input_tokens  # position of the token fed to the next decode step
        self.next_token = -1
        self.tokens: list[int] = []
        self.guard = decoding.make_guard(self.options, layout)
        self.answer = AnswerText(self.options)
        self.reason = ""
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # decoded text of the tokens so far (but an incomplete last character)
        self.ends: list[int] = []  # ends[i]: len(text) once token i was decoded
        self.trail = logprobs.LogprobTrail() if options.logprobs is not None else None

    @property
    def done(self) -> bool:
        return bool(self.reason)

    @property
    def pending_min(self) -> bool:
        return len(self.tokens) < self.options.min_new_tokens

    def finish(self, reason: str, engine: Engine, end: int | None = None) -> str:
        """Stop the row; return the rest of its answer, the raw text ending at character `end`
        (default: all that was generated, every token's logprobs included, text or none)."""
        self.reason = reason
        if end is None:
            self.text += self.rest(engine)
            end = len(self.text)
        elif self.trail is not None:
            self.trail.cut(end)
        return self.answer.close(self.text, end)

    def push(self, token: int, engine: Engine, pick: logprobs.Pick | None = None) -> str:
        """Record a token (and its logprobs, when asked for); return newly final answer text;
        decide whether the row is done."""
        if token in engine.eos_ids and not self.pending_min:
            return self.finish("stop", engine)
        self.tokens.append(token)
        if self.constraint is not None:
            self.constraint.accept(token)
        hit = self.guard.push(token) if self.guard is not None else None
        self.text += self.next_text(engine)
        self.ends.append(len(self.text))
        if self.trail is not None:
            self.trail.add(pick, self.ends[-2] if len(self.ends) > 1 else 0, self.ends[-1])
        if self.constraint is not None and self.constraint.complete:
            return self.finish("stop", engine)
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

    def settled_logprobs(self, engine: Engine) -> list[logprobs.TokenLogprob] | None:
        """Logprob entries of the tokens whose text the answer has now returned or dropped (all the
        answer's tokens once the row is done) and that were not handed out yet; None if not asked."""
        if self.trail is None:
            return None
        return self.trail.release(None if self.done else self.answer.settled, engine.token_texts)

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
