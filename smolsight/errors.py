"""The one exception family smolsight raises.

Every message is written for the person at the keyboard: it names what was wrong and, where
possible, what to do. The CLI prints it as one line; the server maps `http_status` to an
OpenAI-shaped error.
"""


class SmolsightError(Exception):
    """Something the user can fix: bad media, a bad option, a model that cannot be found."""

    http_status = 400
    code = "invalid_request"


class MediaError(SmolsightError):
    """An image or video that cannot be read or is not allowed."""

    code = "invalid_media"


class LimitError(SmolsightError):
    """An input over a configured limit (pixels, frames, tokens, bytes)."""

    http_status = 413
    code = "limit_exceeded"


class ModelNotFoundError(SmolsightError):
    """A model alias, hub id or directory that cannot be resolved or loaded."""

    http_status = 404
    code = "model_not_found"
