"""Dynamic batching: requests that arrive close together are generated as one batch.

One worker thread owns the engine (torch releases the GIL while it computes, so the event loop
stays responsive). It waits for a request, keeps collecting for a short window or until the
batch is full, and runs the batch through `engine.stream_batch`, whose rows may each have their
own options. Every `Chunk` and `Result` is routed back to its request's asyncio queue. The
waiting queue is bounded (a full queue is refused at once with a retry hint rather than
growing without limit), a client that goes away has its row cancelled at the next token, and
closing drains: queued and running requests finish, new ones are refused.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..engine import Chunk, Engine, Request, Result
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
        self.batch_size = Histogram("smolsight_batch_size", "Requests generated together.", buckets=buckets, registry=r)
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
    max_batch_size: int = 8
    window_s: float = 0.02
    max_queue: int = 64
    max_input_tokens: int = 6144


class Batcher:
    def __init__(self, engine: Engine, settings: BatchSettings, metrics: Metrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.waiting: deque[tuple[float, Ticket]] = deque()  # (time queued, ticket)
        self.condition = threading.Condition()
        self.closing = False
        self.recent_batch_s = 1.0  # moving average, for Retry-After
        self.thread = threading.Thread(target=self.run, name="smolsight-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, request: Request, arrival: float) -> Ticket:
        """Queue a request (from the event loop); refused when closing or when the queue is full."""
        with self.condition:
            if self.closing:
                raise ShuttingDownError("the server is shutting down and takes no new requests")
            if len(self.waiting) >= self.settings.max_queue:
                retry = max(1, math.ceil(self.recent_batch_s))
                raise QueueFullError(f"the server is busy ({len(self.waiting)} requests waiting); retry in {retry} s", retry)
            ticket = Ticket(request, arrival, asyncio.get_running_loop())
            self.waiting.append((time.perf_counter(), ticket))
            self.metrics.queue_depth.set(len(self.waiting))
            self.condition.notify()
        return ticket

    def ask_batch(self, requests: list[Request]) -> list[Result]:
        """Answer requests from another thread (the watcher of `serve --watch`): they queue with
        the HTTP requests, so this worker alone drives the engine. A refusal or failure is raised."""

        async def last(ticket: Ticket) -> Result:
            return [event async for event in ticket.events()][-1]

        async def answers() -> list[Result]:
            tickets = [self.submit(request, time.perf_counter()) for request in requests]
            return [await last(ticket) for ticket in tickets]

        return asyncio.run(answers())

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued and running ones, stop the worker."""
        with self.condition:
            self.closing = True
            self.condition.notify()
        self.thread.join(timeout)

    def run(self) -> None:
        while (batch := self.collect()) is not None:
            self.run_batch(batch)

    def collect(self) -> list[Ticket] | None:
        """The next batch: wait for a first request, then up to `window_s` after it was queued
        for more, unless the batch fills first. None once closed and drained."""
        s = self.settings
        with self.condition:
            while not self.waiting:
                if self.closing:
                    return None
                self.condition.wait()
            deadline = self.waiting[0][0] + s.window_s
            while len(self.waiting) < s.max_batch_size and not self.closing and (left := deadline - time.perf_counter()) > 0:
                self.condition.wait(left)
            batch = [self.waiting.popleft()[1] for _ in range(min(s.max_batch_size, len(self.waiting)))]
            self.metrics.queue_depth.set(len(self.waiting))
        return batch

    def run_batch(self, tickets: list[Ticket]) -> None:
        admitted, prepared = self.admit(tickets)
        if not admitted:
            return
        started = time.perf_counter()
        for ticket in admitted:
            ticket.started = started
        self.metrics.batch_size.observe(len(admitted))
        try:
            requests = [t.request for t in admitted]
            stream = self.engine.stream_batch(requests, cancelled=lambda row: admitted[row].cancelled, prepared=prepared)
            for event in stream:
                admitted[event.row].push(event)
                if isinstance(event, Result):
                    self.record(admitted[event.row], event)
        except Exception as exc:  # noqa: BLE001 - a failed batch must not stop the worker
            traceback.print_exc()
            for ticket in admitted:
                if ticket.finished is None:
                    ticket.push(fault(exc, "generating"))
        self.recent_batch_s = 0.8 * self.recent_batch_s + 0.2 * (time.perf_counter() - started)

    def admit(self, tickets: list[Ticket]) -> tuple[list[Ticket], list[dict]]:
        """Drop requests whose clients left while queued, and refuse, one by one, requests that
        cannot be processed or whose prompt is over the input-token limit, so that one bad
        request never fails the batch it would have joined."""
        admitted, prepared = [], []
        for ticket in tickets:
            if ticket.cancelled:
                self.metrics.finished.labels(reason="cancelled").inc()
                continue
            try:
                inputs = self.engine.prepare(ticket.request)
            except SmolsightError as exc:
                ticket.push(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - our fault (input problems are SmolsightErrors): log it, answer 5xx
                traceback.print_exc()
                ticket.push(fault(exc, "preparing the request"))
                continue
            limit = self.settings.max_input_tokens
            tokens = len(inputs["input_ids"])
            if tokens > limit:
                ticket.push(LimitError(f"the prompt is {tokens} tokens, over this server's limit of {limit}"))
                continue
            admitted.append(ticket)
            prepared.append(inputs)
        return admitted, prepared

    def record(self, ticket: Ticket, result: Result) -> None:
        m = self.metrics
        m.finished.labels(reason=result.finish_reason).inc()
        m.ttft.observe((ticket.first_token or ticket.finished) - ticket.arrival)
        m.latency.observe(ticket.finished - ticket.arrival)
        m.generated.inc(result.output_tokens)
        m.prompt.inc(result.input_tokens)
