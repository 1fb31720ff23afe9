"""The OpenAI-compatible HTTP server: `create_app(engine, settings)` and `serve(...)`.

Routes are thin: the request model converts itself (protocol.py), the batcher generates
(batching.py), and this module turns the results into OpenAI's JSON or server-sent events.
Every error leaves as OpenAI's error JSON with its status; anything unexpected becomes a 500
rather than a dropped connection, so no input takes the server down.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import Batcher, BatchSettings, Metrics, QueueFullError, Ticket
from .engine import Chunk, Engine, Result
from .errors import ModelNotFoundError, SmolsightError
from .protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Delta,
    ErrorInfo,
    ErrorResponse,
    MediaPolicy,
    ModelCard,
    ModelList,
    ResponseMessage,
    Timings,
    UrlPolicy,
    Usage,
    completion_id,
)

MB = 1024 * 1024
CHAT_PATH = "/v1/chat/completions"
ENDPOINTS = {CHAT_PATH, "/v1/models", "/health", "/metrics", "/"}


class AuthenticationError(SmolsightError):
    http_status = 401
    code = "invalid_api_key"


class ClientGoneError(SmolsightError):
    """The client disconnected before its request was generated (nginx's 499)."""

    http_status = 499
    code = "cancelled"


@dataclass(frozen=True)
class ServerSettings:
    """Limits and switches of one server; every one is a `smolsight serve` option."""

    model_name: str | None = None  # id in /v1/models; default: the engine's model name
    max_batch_size: int = 8
    batch_window_ms: float = 20
    max_queue: int = 64
    max_body_mb: float = 20
    max_image_pixels: int = 4096 * 4096
    max_frames: int = 64
    max_tokens: int = 2048
    max_input_tokens: int = 6144
    allow_url_fetch: bool = False
    url_allow_list: tuple[str, ...] = ()
    allow_private_urls: bool = False
    api_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_mb", "max_image_pixels", "max_frames", "max_tokens", "max_input_tokens"):
            if getattr(self, name) <= 0:
                raise SmolsightError(f"--{name.replace('_', '-')} must be positive")
        if self.batch_window_ms < 0:
            raise SmolsightError("--batch-window-ms must be >= 0")

    def batching(self) -> BatchSettings:
        return BatchSettings(self.max_batch_size, self.batch_window_ms / 1000, self.max_queue, self.max_input_tokens)

    def media(self, engine: Engine) -> MediaPolicy:
        """Frames are sampled at the model's own rate, at most `max_frames` of them."""
        sampling = engine.processor.video_processor
        urls = UrlPolicy(self.allow_url_fetch, tuple(h.lower() for h in self.url_allow_list), self.allow_private_urls, int(self.max_body_mb * MB))
        return MediaPolicy(self.max_image_pixels, min(self.max_frames, sampling.num_frames), sampling.fps, urls)


def read_api_keys(key: str | None, key_file: str | None) -> tuple[str, ...]:
    """The key given directly, plus one key per non-empty line of the key file."""
    keys = [key] if key else []
    if key_file:
        try:
            lines = Path(key_file).read_text().splitlines()
        except OSError as exc:
            raise SmolsightError(f"cannot read API key file {key_file}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if len(keys) == (1 if key else 0):
            raise SmolsightError(f"API key file {key_file} holds no key")
    return tuple(keys)


# ---- errors --------------------------------------------------------------------------------


def error_response(status: int, message: str, code: str | None = None, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def smolsight_error(request: Request, exc: SmolsightError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFullError) else None
    return error_response(exc.http_status, str(exc), exc.code, headers=headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Unparseable JSON is a 400; JSON that does not fit the schema a 422 naming the field
    (the deepest error, which for a union is the one about the branch that was meant)."""
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(400, f"the request body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}", "invalid_json")
    error = max(errors, key=lambda e: len(e["loc"]))
    param = ".".join(str(p) for p in error["loc"][1:]) or "body"
    return error_response(422, f"{param}: {error['msg']}", "invalid_value", param)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded"}


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), HTTP_CODES.get(exc.status_code), headers=exc.headers)


ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 500, 503)}


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
    with a 500 in OpenAI's shape."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["arrival"] = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
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

    async def complete(self, body: ChatCompletionRequest, request: Request) -> Response:
        if body.model is not None and body.model != self.model_name:
            raise ModelNotFoundError(f"model {body.model!r} is not served here; this server serves {self.model_name!r}")
        engine_request = await run_in_threadpool(body.to_request, self.media, self.settings.max_tokens)
        ticket = self.batcher.submit(engine_request, request.state.arrival)
        events = ticket.events()
        async with cancelled_on_disconnect(request, ticket):
            first = await anext(events)
            if not body.stream:
                result = first if isinstance(first, Result) else [event async for event in events][-1]
                return JSONResponse(self.response(result, ticket).model_dump(mode="json"))
        stream = self.sse(ticket, first, events, body.include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def response(self, result: Result, ticket: Ticket) -> ChatCompletionResponse:
        return ChatCompletionResponse(
            choices=[Choice(finish_reason=result.finish_reason, message=ResponseMessage(content=result.text))],
            model=self.model_name,
            usage=Usage.of(result),
            timings=Timings(**ticket.timings(result)),
        )

    async def sse(self, ticket: Ticket, event: Chunk | Result, events: AsyncIterator, include_usage: bool) -> AsyncIterator[str]:
        """OpenAI's chunk stream: the role, the text pieces, the finish reason (with timings),
        the usage if asked for, then [DONE]. A client that leaves cancels its generation."""
        header = {"id": completion_id(), "created": int(time.time()), "model": self.model_name}

        def chunk(**fields) -> str:
            return frame(ChatCompletionChunk(**header, **fields))

        try:
            yield chunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])
            while isinstance(event, Chunk):
                yield chunk(choices=[ChunkChoice(delta=Delta(content=event.text))])
                event = await anext(events)
            yield chunk(choices=[ChunkChoice(delta=Delta(), finish_reason=event.finish_reason)], timings=Timings(**ticket.timings(event)))
            if include_usage:
                yield chunk(choices=[], usage=Usage.of(event))
        except SmolsightError as exc:
            yield frame(ErrorResponse(error=ErrorInfo(message=str(exc), type="server_error", code=exc.code)))
        finally:
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


@asynccontextmanager
async def cancelled_on_disconnect(request: Request, ticket: Ticket):
    """Cancel the ticket if the client disconnects while we wait (the body is already read,
    so the next ASGI message can only be the disconnect)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        ticket.cancel()
        ticket.push(ClientGoneError("the client disconnected"))

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def api_key_check(keys: tuple[str, ...]):
    """A dependency that requires `Authorization: Bearer <key>` when keys are configured."""
    bearer = HTTPBearer(auto_error=False, description="The server's API key, when it has one.")

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not keys:
            return
        if credentials is None:
            raise AuthenticationError("missing API key: send the header 'Authorization: Bearer <key>'")
        given = credentials.credentials.encode()
        if not any(hmac.compare_digest(given, key.encode()) for key in keys):
            raise AuthenticationError("invalid API key")

    return check


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
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
    app.add_middleware(Accounting, metrics=service.metrics)
    app.add_exception_handler(SmolsightError, smolsight_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    authorised = [Depends(api_key_check(settings.api_keys))]
    page = resources.files("smolsight").joinpath("static/index.html").read_text(encoding="utf-8")

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

    return app


def serve(engine: Engine, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run until SIGINT/SIGTERM; then finish the requests in flight, refusing new ones."""
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level=log_level)


class BackgroundServer:
    """The app on a loopback port in a daemon thread (port 0 picks a free one): for tests,
    notebooks and benchmarks that need a live server in their own process."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="smolsight-server", daemon=True)
        self.host = host

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SmolsightError("the background server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join()

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"
