"""Continuous batching for the server: requests join the running decode batch as they arrive.

Two threads own the engine's work (torch releases the GIL while it computes, so the event loop
stays responsive). The preparing thread takes queued requests in order and runs
`engine.prepare` (image processing, the vision encoder, OCR) and the input-token limit; it keeps
at most `max_batch_size` prepared requests ahead, so a burst of pictures cannot fill memory. The
decoding thread keeps one `Generation` (the engine's one decode loop) running: between steps it
adds prepared requests while fewer than `max_batch_size` rows are in it; each step prefills a
chunk of the newest prompts and decodes one token for every running row, and a row leaves the
moment it finishes. So a short request behind a long one starts within about its own prefill time,
and one request's image processing never stops the others' tokens.

Every `Chunk` and `Result` is routed back to its request's asyncio queue. The waiting queue is
bounded (a full queue is refused at once with a retry hint rather than growing without limit), a
client that goes away has its row cancelled at the next step, and closing drains: queued and
running requests finish, new ones are refused.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..engine import Chunk, Engine, Request, Result
from ..engine.options import PREFILL_CHUNK
from ..errors import LimitError, SmolsightError
from .errors import QueueFullError, ShuttingDownError, fault

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class Metrics:
    """Prometheus instruments on a private registry (so several servers in one process, as in
    tests, never collide)."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("smolsight_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"], registry=r)
        self.finished = Counter("smolsight_finished", "Generations by finish reason.", ["reason"], registry=r)
        self.queue_depth = Gauge("smolsight_queue_depth", "Requests waiting for a batch.", registry=r)
        buckets = sorted({2**i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self.batch_size = Histogram("smolsight_batch_size", "Rows decoded together, once per decode step.", buckets=buckets, registry=r)
        self.ttft = Histogram(
            "smolsight_time_to_first_token_seconds", "From request arrival to the first token.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.latency = Histogram("smolsight_request_latency_seconds", "From request arrival to the last token.", buckets=LATENCY_BUCKETS, registry=r)
        self.generated = Counter("smolsight_generated_tokens", "Tokens generated.", registry=r)
        self.prompt = Counter("smolsight_prompt_tokens", "Input tokens processed.", registry=r)


@dataclass
class Ticket:
    """One request's passage through the batcher: the worker pushes events, the handler awaits them."""

    request: Request
    arrival: float  # time.perf_counter() when the HTTP request arrived
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None

    def cancel(self) -> None:
        """Called when the client goes away; the worker stops this row at its next token."""
        self.cancelled = True

    def push(self, event: Chunk | Result | SmolsightError) -> None:
        """From the worker thread: record timings and hand the event to the event loop."""
        now = time.perf_counter()
        if self.first_token is None and not isinstance(event, SmolsightError):
            self.first_token = now
        if not isinstance(event, Chunk):
            self.finished = now
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            pass

    async def events(self) -> AsyncIterator[Chunk | Result]:
        """Chunks, then the Result; a failure is raised."""
        while True:
            event = await self.queue.get()
            if isinstance(event, SmolsightError):
                raise event
            yield event
            if isinstance(event, Result):
                return

    def timings(self, result: Result) -> dict:
        """Seconds from arrival; decoding speed as the engine measures it."""
        first = self.first_token or self.finished
        return {
            "queue_s": round((self.started or self.arrival) - self.arrival, 4),
            "ttft_s": round(first - self.arrival, 4),
            "total_s": round(self.finished - self.arrival, 4),
            "tokens_per_s": round(result.tokens_per_s, 2),
        }


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 8  # rows decoded together
    prefill_chunk: int = PREFILL_CHUNK  # prompt tokens prefilled between two decode steps
    max_queue: int = 64
    max_input_tokens: int = 6144


class Batcher:
    def __init__(self, engine: Engine, settings: BatchSettings, metrics: Metrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.waiting: deque[Ticket] = deque()  # submitted, not prepared yet
        self.preparing = 0  # taken by the preparing thread, not handed on yet
        self.prepared: deque[tuple[Ticket, dict]] = deque()  # ready to join the generation
        self.running: dict[int, Ticket] = {}  # the generation's rows, by key
        self.keys = itertools.count()
        self.condition = threading.Condition()
        self.closing = False
        self.recent_request_s = 1.0  # moving average of request latency, for Retry-After
        self.generation = self.new_generation()
        self.threads = [
            threading.Thread(target=self.prepare_loop, name="smolsight-prepare", daemon=True),
            threading.Thread(target=self.decode_loop, name="smolsight-decode", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def submit(self, request: Request, arrival: float) -> Ticket:
        """Queue a request (from the event loop); refused when closing or when the queue is full."""
        with self.condition:
            if self.closing:
                raise ShuttingDownError("the server is shutting down and takes no new requests")
            if self.depth >= self.settings.max_queue:
                retry = max(1, math.ceil(self.recent_request_s))
                raise QueueFullError(f"the server is busy ({self.depth} requests waiting); retry in {retry} s", retry)
            ticket = Ticket(request, arrival, asyncio.get_running_loop())
            self.waiting.append(ticket)
            self.metrics.queue_depth.set(self.depth)
            self.condition.notify_all()
        return ticket

    def ask_batch(self, requests: list[Request]) -> list[Result]:
        """Answer requests from another thread (the watcher of `serve --watch`): they queue with
        the HTTP requests, so these threads alone drive the engine. A refusal or failure is raised."""

        async def last(ticket: Ticket) -> Result:
            return [event async for event in ticket.events()][-1]

        async def answers() -> list[Result]:
            tickets = [self.submit(request, time.perf_counter()) for request in requests]
            return [await last(ticket) for ticket in tickets]

        return asyncio.run(answers())

    @property
    def depth(self) -> int:
        """Requests not decoding yet: waiting, being prepared, or prepared and waiting for a row."""
        return len(self.waiting) + self.preparing + len(self.prepared)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued and running ones, stop the threads."""
        with self.condition:
            self.closing = True
            self.condition.notify_all()
        for thread in self.threads:
            thread.join(timeout)

    # ---- the preparing thread ----------------------------------------------------------------

    def prepare_loop(self) -> None:
        while (ticket := self.next_to_prepare()) is not None:
            inputs = self.prepare(ticket)
            with self.condition:
                self.preparing -= 1
                if inputs is not None:
                    self.prepared.append((ticket, inputs))
                self.metrics.queue_depth.set(self.depth)
                self.condition.notify_all()

    def next_to_prepare(self) -> Ticket | None:
        """The oldest waiting request once fewer than `max_batch_size` prepared ones wait; None once closed and drained."""
        with self.condition:
            while not self.waiting or len(self.prepared) + self.preparing >= self.settings.max_batch_size:
                if self.closing and not self.waiting:
                    return None
                self.condition.wait()
            ticket = self.waiting.popleft()
            self.preparing += 1
            return ticket

    def prepare(self, ticket: Ticket) -> dict | None:
        """The request's inputs, or None when its client left or it was refused (the refusal goes to
        the client): a request that cannot be processed or is over the input-token limit fails alone."""
        if ticket.cancelled:
            self.metrics.finished.labels(reason="cancelled").inc()
            return None
        try:
            inputs = self.engine.prepare(ticket.request)
        except SmolsightError as exc:
            ticket.push(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - our fault (input problems are SmolsightErrors): log it, answer 5xx
            traceback.print_exc()
            ticket.push(fault(exc, "preparing the request"))
            return None
        limit, tokens = self.settings.max_input_tokens, len(inputs["input_ids"])
        if tokens > limit:
            ticket.push(LimitError(f"the prompt is {tokens} tokens, over this server's limit of {limit}"))
            return None
        return inputs

    # ---- the decoding thread -----------------------------------------------------------------

    def decode_loop(self) -> None:
        while self.admit():
            try:
                events = self.generation.step(cancelled=lambda key: self.running[key].cancelled)
            except Exception as exc:  # noqa: BLE001 - a failed step must not stop the server
                traceback.print_exc()
                self.fail_running(exc)
                continue
            if self.running:
                self.metrics.batch_size.observe(len(self.running))
            for event in events:
                ticket = self.running[event.row]
                ticket.push(event)
                if isinstance(event, Result):
                    del self.running[event.row]
                    self.record(ticket, event)

    def admit(self) -> bool:
        """Wait for work; move prepared requests into the generation while it has room. False once
        closed and drained."""
        with self.condition:
            while not self.prepared and self.generation.idle:
                if self.closing and not self.waiting and not self.preparing:
                    return False
                self.condition.wait()
            while self.prepared and self.generation.rows < self.settings.max_batch_size:
                ticket, inputs = self.prepared.popleft()
                key = next(self.keys)
                self.running[key] = ticket
                ticket.started = time.perf_counter()
                self.generation.add(key, ticket.request, inputs, ticket.arrival)
            self.metrics.queue_depth.set(self.depth)
            self.condition.notify_all()  # room for the preparing thread
        return True

    def fail_running(self, exc: Exception) -> None:
        """A step failed: every row in it gets a server error, and a fresh generation takes over."""
        for ticket in self.running.values():
            ticket.push(fault(exc, "generating"))
        self.running.clear()
        self.generation = self.new_generation()

    def new_generation(self):
        """The decode loop, leaving torch's thread count alone: changing it (decode_threads=auto) while
        the preparing thread runs the vision encoder resizes a thread pool that thread is using."""
        return self.engine.generation(self.settings.max_batch_size, self.settings.prefill_chunk, keep_threads=True)

    def record(self, ticket: Ticket, result: Result) -> None:
        m = self.metrics
        m.finished.labels(reason=result.finish_reason).inc()
        m.ttft.observe((ticket.first_token or ticket.finished) - ticket.arrival)
        m.latency.observe(ticket.finished - ticket.arrival)
        m.generated.inc(result.output_tokens)
        m.prompt.inc(result.input_tokens)
        self.recent_request_s = 0.8 * self.recent_request_s + 0.2 * (ticket.finished - ticket.arrival)
