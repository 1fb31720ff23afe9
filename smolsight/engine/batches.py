"""Answering many requests in batches, where one bad request must not sink the others: what
evaluation and batch jobs (in one process or on Ray actors) share."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..errors import SmolsightError

if TYPE_CHECKING:  # torch loads with the engine, when the first request is built
    from .engine import Request, Result


class Backend(Protocol):
    """What answers: the `Engine`, or anything else that turns requests into results in order."""

    def ask_batch(self, requests: list[Request]) -> list[Result]: ...


def request_or_error(media: Sequence[str], prompt: str, options, settings: dict) -> Request | SmolsightError:
    """The request, or the error that says why its media cannot be used."""
    from .engine import Request

    try:
        return Request.simple(list(media), prompt, options=options, **settings)
    except SmolsightError as exc:
        return exc


def answer_isolated(backend: Backend, requests: list[Request | SmolsightError]) -> list[Result | Exception]:
    """Results for the good requests, errors in place of bad ones; a batch that fails is retried
    one request at a time so one bad request does not sink the others. A failure of our own
    (RuntimeError, out of memory) is kept like a bad input, with its traceback on stderr: one
    request that crashes must not end a long run."""
    good = [r for r in requests if not isinstance(r, SmolsightError)]
    try:
        answers = iter(backend.ask_batch(good) if good else [])
    except Exception as exc:  # noqa: BLE001 - kept per request, the run goes on
        if len(good) == 1:
            if not isinstance(exc, SmolsightError):
                traceback.print_exc()
            answers = iter([exc])
        else:
            answers = iter(outcome for request in good for outcome in answer_isolated(backend, [request]))
    return [r if isinstance(r, SmolsightError) else next(answers) for r in requests]


def error_detail(error: Exception) -> str:
    """The error as one line: our own words for input problems, the exception's kind for faults."""
    return str(error) if isinstance(error, SmolsightError) else f"{type(error).__name__}: {error}"
