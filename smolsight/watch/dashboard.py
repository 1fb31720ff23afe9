"""The dashboard of `smolsight serve --watch`: a FastAPI router with a page at /watch (sources,
their last frame, last answers, recent alerts) kept live by server-sent events.

The router's lifespan starts the watcher with the server and stops it (flushing its outputs)
before the server's own shutdown, so the watcher's questions, which queue with the HTTP
requests, are answered to the end. Each event stream ends after `STREAM_S` seconds and the
browser reconnects at once (EventSource does): an endless stream would hold the server's
graceful shutdown open, and each reconnection starts with the whole state, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .rules import WatchConfig
from .watcher import Watcher

STREAM_S = 10.0
POLL_S = 0.25
FRAME_WIDTH = 480


def dashboard_router(config: WatchConfig, backend_of: Callable[[FastAPI], object]) -> APIRouter:
    """Routes under /watch; the watcher is made at startup with `backend_of(app)` answering."""
    holder: dict[str, Watcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["watcher"] = Watcher(config, backend_of(app)).start()
        yield
        await asyncio.to_thread(holder["watcher"].stop)

    router = APIRouter(prefix="/watch", lifespan=lifespan, include_in_schema=False)
    page = resources.files("smolsight.watch").joinpath("static/watch.html").read_text(encoding="utf-8")

    @router.get("", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/state")
    async def state() -> JSONResponse:
        return JSONResponse(holder["watcher"].state())

    @router.get("/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(state_stream(holder["watcher"], request), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get("/frame/{name}.jpg")
    async def frame(name: str) -> Response:
        image = holder["watcher"].frame_of(name)
        if image is None:
            raise HTTPException(404, f"no frame from source {name!r} yet")
        return Response(await asyncio.to_thread(jpeg, image), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(holder["watcher"].metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def state_stream(watcher: Watcher, request: Request):
    """The state now, then again whenever it changes, for `STREAM_S` seconds."""
    yield "retry: 500\n\n"
    ends, version = time.monotonic() + STREAM_S, None
    while time.monotonic() < ends and not await request.is_disconnected():
        if watcher.version != version:
            state = watcher.state()
            version = state["version"]
            yield f"data: {json.dumps(state, ensure_ascii=False)}\n\n"
        await asyncio.sleep(POLL_S)


def jpeg(image) -> bytes:
    small = image.copy()
    small.thumbnail((FRAME_WIDTH, FRAME_WIDTH))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
