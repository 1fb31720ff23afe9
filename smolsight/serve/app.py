"""The OpenAI-compatible HTTP server: `create_app(engine, settings)` and `serve(...)`.

Routes are thin: the request is converted (convert.py), the batcher generates (batching.py),
errors get their status (errors.py), and this module turns the results into OpenAI's JSON or server-sent events.
Every error leaves as OpenAI's error JSON with its status; anything unexpected becomes a 500
rather than a dropped connection, so no input takes the server down.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Chunk, Engine, Result
from ..engine import Request as EngineRequest
from ..errors import ModelNotFoundError, SmolsightError
from .batching import Batcher, Metrics, Ticket
from .convert import to_request
from .errors import (
    ERROR_RESPONSES,
    AuthenticationError,
    ClientGoneError,
    error_body,
    error_response,
    http_error,
    smolsight_error,
    status_of,
    validation_error,
)
from .protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ResponseMessage,
    Timings,
    Usage,
    completion_id,
)
from .settings import MB, ServerSettings

CHAT_PATH = "/v1/chat/completions"
ENDPOINTS = {CHAT_PATH, "/v1/models", "/health", "/metrics", "/"}


class BodyLimit:
    """Refuses request bodies over the limit with OpenAI's 413 error: at once when the
    Content-Length says so, else as soon as the bytes read pass it (chunked uploads)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"the request body is over this server's limit of {self.max_bytes / MB:g} MB"
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await error_response(413, message, "limit_exceeded")(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(413, message)  # answered by the handler as JSON
            return event

        await self.app(scope, counted, send)


class Accounting:
    """Outermost layer: stamps each request's arrival (time to first token counts from
    here), counts responses by endpoint and status, and answers any unexpected exception
    with a 500 in OpenAI's shape. An added router's paths count under its prefix (the watch
    dashboard's under `/watch`); any other path is `other`."""

    def __init__(self, app, metrics: Metrics, prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes

    def endpoint(self, path: str) -> str:
        if path in ENDPOINTS:
            return path
        return next((prefix for prefix in self.prefixes if path == prefix or path.startswith(prefix + "/")), "other")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["arrival"] = time.perf_counter()
        endpoint = self.endpoint(scope["path"])
        started = False

        async def counted(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(endpoint=endpoint, status=str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if started:
                raise
            traceback.print_exc()
            await error_response(500, "internal server error; the details are in the server's log")(scope, receive, counted)


# ---- the service ---------------------------------------------------------------------------


class Service:
    """What the routes do: check, convert, queue, and answer in OpenAI's format."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name or engine.name
        self.created = int(time.time())
        self.metrics = Metrics(settings.max_batch_size)
        self.batcher = Batcher(engine, settings.batching(), self.metrics)
        self.media = settings.media(engine)
        self.vocab = engine.vocab  # bounds logit_bias ids, checked before the request is queued

    async def complete(self, body: ChatCompletionRequest, request: Request) -> Response:
        if body.model is not None and body.model != self.model_name:
            raise ModelNotFoundError(f"model {body.model!r} is not served here; this server serves {self.model_name!r} (see /v1/models)")
        n = body.choice_count(self.settings.max_batch_size)
        engine_request = await run_in_threadpool(to_request, body, self.media, self.settings.max_tokens, self.vocab)
        tickets = self.submit(engine_request, n, request.state.arrival)
        events = merged(tickets)
        async with cancelled_on_disconnect(request, tickets):
            first = await anext(events)
            if not body.stream:
                results = {index: event async for index, event in prepend(first, events) if isinstance(event, Result)}
                return JSONResponse(self.response([results[i] for i in range(n)], tickets).model_dump(mode="json"))
        stream = self.sse(tickets, first, events, body.include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def submit(self, request: EngineRequest, n: int, arrival: float) -> list[Ticket]:
        """Queue the request's `n` choices together (choice i with `options.for_choice(i)`), so
        that they are generated as rows of one batch; if the queue refuses one, none is kept."""
        tickets: list[Ticket] = []
        try:
            for index in range(n):
                tickets.append(self.batcher.submit(replace(request, options=request.options.for_choice(index)), arrival))
        except SmolsightError:
            for ticket in tickets:
                ticket.cancel()
            raise
        return tickets

    def response(self, results: list[Result], tickets: list[Ticket]) -> ChatCompletionResponse:
        choices = [Choice(finish_reason=result.finish_reason, index=index, logprobs=ChoiceLogprobs.of(result.logprobs),
                          message=ResponseMessage(content=result.text)) for index, result in enumerate(results)]  # fmt: skip
        return ChatCompletionResponse(
            choices=choices,
            model=self.model_name,
            usage=Usage.of(results),
            timings=request_timings(tickets, results),
            ocr=results[0].ocr,
        )

    async def sse(self, tickets: list[Ticket], first: tuple[int, Chunk | Result], events: AsyncIterator, include_usage: bool) -> AsyncIterator[str]:
        """OpenAI's chunk stream: each choice's role, the text pieces (with their tokens' logprobs
        when asked for) and each choice's finish reason (with its timings) as they come, each
        chunk naming its choice's `index`; the usage if asked for, then [DONE]. A client that
        leaves cancels its generation."""
        header = {"id": completion_id(), "created": int(time.time()), "model": self.model_name}

        def chunk(**fields) -> str:
            return frame(ChatCompletionChunk(**header, **fields))

        results: dict[int, Result] = {}
        try:
            for index in range(len(tickets)):
                yield chunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""), index=index)])
            async for index, event in prepend(first, events):
                if isinstance(event, Chunk):
                    yield chunk(choices=[ChunkChoice(delta=Delta(content=event.text), index=index, logprobs=ChoiceLogprobs.of(event.logprobs))])
                    continue
                results[index] = event
                yield chunk(choices=[ChunkChoice(delta=Delta(), finish_reason=event.finish_reason, index=index)],
                            timings=Timings(**tickets[index].timings(event)), ocr=event.ocr)  # fmt: skip
            if include_usage:
                yield chunk(choices=[], usage=Usage.of([results[i] for i in range(len(tickets))]))
        except SmolsightError as exc:
            yield frame(error_body(str(exc), *status_of(exc)))
        finally:
            for ticket in tickets:
                ticket.cancel()
        yield "data: [DONE]\n\n"

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name, created=self.created)])

    def health(self) -> JSONResponse:
        """503 while draining, so a load balancer stops sending requests."""
        draining = self.batcher.closing
        body = {"status": "draining" if draining else "ok", "model": self.model_name, "queue_depth": self.batcher.depth}
        return JSONResponse(body, status_code=503 if draining else 200)


def frame(payload: BaseModel) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


def request_timings(tickets: list[Ticket], results: list[Result]) -> Timings:
    """One request's timings over its choices: the first to start and to give a token, the last
    to end, and their speeds added up (the request's tokens per second)."""
    each = [ticket.timings(result) for ticket, result in zip(tickets, results, strict=True)]
    return Timings(queue_s=min(t["queue_s"] for t in each), ttft_s=min(t["ttft_s"] for t in each),
                   total_s=max(t["total_s"] for t in each), tokens_per_s=round(sum(t["tokens_per_s"] for t in each), 2))  # fmt: skip


async def merged(tickets: list[Ticket]) -> AsyncIterator[tuple[int, Chunk | Result]]:
    """The events of a request's choices as they come, as (choice index, event), until every
    choice has its `Result`; a choice's failure is raised."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, ticket: Ticket) -> None:
        try:
            async for event in ticket.events():
                queue.put_nowait((index, event))
        except SmolsightError as exc:
            queue.put_nowait((index, exc))

    pumps = [asyncio.create_task(pump(index, ticket)) for index, ticket in enumerate(tickets)]
    try:
        finished = 0
        while finished < len(tickets):
            index, event = await queue.get()
            if isinstance(event, SmolsightError):
                raise event
            finished += isinstance(event, Result)
            yield index, event
    finally:
        for task in pumps:
            task.cancel()


async def prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for item in rest:
        yield item


@asynccontextmanager
async def cancelled_on_disconnect(request: Request, tickets: list[Ticket]):
    """Cancel the tickets if the client disconnects while we wait (the body is already read,
    so the next ASGI message can only be the disconnect)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        for ticket in tickets:
            ticket.cancel()
            ticket.push(ClientGoneError("the client disconnected"))

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


class ApiKeyGate:
    """With keys configured, `/v1/…` needs `Authorization: Bearer <key>`; checked from the
    headers before the body is read, so a stranger's request costs nothing (and a wrong key
    with a bad body answers 401, not 400). Constant-time comparison."""

    def __init__(self, app, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.keys or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return await self.refuse("missing API key: send the header 'Authorization: Bearer <key>'", scope, receive, send)
        if not any(hmac.compare_digest(given.strip().encode(), key) for key in self.keys):
            return await self.refuse("invalid API key", scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def refuse(message: str, scope, receive, send) -> None:
        status, code = status_of(AuthenticationError(message))
        await error_response(status, message, code, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


def create_app(engine: Engine, settings: ServerSettings | None = None, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The server; `routers` are added as they are, lifespans included (the watch dashboard of
    `serve --watch`, which the server itself knows nothing of)."""
    settings = settings or ServerSettings()
    service = Service(engine, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        yield
        await asyncio.to_thread(service.batcher.close)

    app = FastAPI(title="smolsight", summary="OpenAI-compatible SmolVLM2 server", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * MB))
    app.add_middleware(ApiKeyGate, keys=settings.api_keys)
    if settings.cors_origins:  # answers preflights (OPTIONS) itself, before the key gate
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)  # fmt: skip
    app.add_middleware(Accounting, metrics=service.metrics, prefixes=tuple(router.prefix for router in routers if router.prefix))
    app.add_exception_handler(SmolsightError, smolsight_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # declares the bearer scheme in /openapi.json; ApiKeyGate checks the key
    authorised = [Depends(HTTPBearer(auto_error=False, description="The server's API key, when it has one."))] if settings.api_keys else []
    page = resources.files("smolsight.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.post(CHAT_PATH, response_model=ChatCompletionResponse, responses=ERROR_RESPONSES, dependencies=authorised)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Chat completions; with `stream: true`, server-sent events of chat.completion.chunk objects."""
        return await service.complete(body, request)

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, dependencies=authorised)
    async def models() -> ModelList:
        return service.models()

    @app.get("/health")
    async def health() -> JSONResponse:
        return service.health()

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    for router in routers:
        app.include_router(router)
    return app


def serve(engine: Engine, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          routers: Sequence[APIRouter] = ()) -> None:
    """Run until SIGINT/SIGTERM; then finish the requests in flight, refusing new ones."""
    uvicorn.run(create_app(engine, settings, routers), host=host, port=port, log_level=log_level, access_log=log_level == "info")
