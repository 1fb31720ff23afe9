"""Errors over HTTP: the server's own error kinds, and each kind's status and code, answered as
OpenAI's error JSON.

The library raises `SmolsightError`s that know nothing of HTTP; this is where they get their
status. Input problems are 4xx with the message naming the input; the server's own faults
(a crash while preparing or generating, running out of memory) are 5xx whose message points to
the log, where the traceback is, rather than blaming the request.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import LimitError, MediaError, ModelNotFoundError, SmolsightError
from .protocol import ErrorInfo, ErrorResponse


class AuthenticationError(SmolsightError):
    """No API key, or a wrong one."""


class ClientGoneError(SmolsightError):
    """The client disconnected before its request was generated (nginx's 499)."""


class QueueFullError(SmolsightError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(SmolsightError):
    """The server is draining after SIGTERM."""


class ServerFault(SmolsightError):
    """Our own failure while preparing or generating a request: not the request's fault."""


class OutOfMemory(ServerFault):
    """The machine ran out of memory for this request; it may succeed later or elsewhere."""


# (kind, status, code): the first kind the error is an instance of decides.
STATUSES: tuple[tuple[type[SmolsightError], int, str], ...] = (
    (AuthenticationError, 401, "invalid_api_key"),
    (QueueFullError, 429, "queue_full"),
    (ShuttingDownError, 503, "shutting_down"),
    (OutOfMemory, 503, "out_of_memory"),
    (ServerFault, 500, "server_error"),
    (ClientGoneError, 499, "cancelled"),
    (LimitError, 413, "limit_exceeded"),
    (ModelNotFoundError, 404, "model_not_found"),
    (MediaError, 400, "invalid_media"),
    (SmolsightError, 400, "invalid_request"),
)


def status_of(error: SmolsightError) -> tuple[int, str]:
    return next((status, code) for kind, status, code in STATUSES if isinstance(error, kind))


def fault(exc: BaseException, doing: str) -> ServerFault:
    """The error a client sees for an unexpected exception of ours (its traceback goes to the log)."""
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return OutOfMemory(f"the server ran out of memory while {doing}; retry later or with smaller input")
    return ServerFault(f"the server failed while {doing} ({type(exc).__name__}); the details are in the server's log")


def error_body(message: str, status: int, code: str | None = None, param: str | None = None) -> ErrorResponse:
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code))


def error_response(status: int, message: str, code: str | None = None, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, code, param).model_dump(), status_code=status, headers=headers)


async def smolsight_error(request: Request, exc: SmolsightError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFullError) else None
    status, code = status_of(exc)
    return error_response(status, str(exc), code, headers=headers)


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
