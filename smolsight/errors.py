"""The one exception family smolsight raises.

Every message is written for the person at the keyboard: it names what was wrong and, where
possible, what to do. The CLI prints it as one line; the server maps each kind to an HTTP
status in smolsight.serve.errors (the library itself knows nothing of HTTP).
"""


class SmolsightError(Exception):
    """Something the user can fix: bad media, a bad option, a model that cannot be found."""


class MediaError(SmolsightError):
    """An image or video that cannot be read or is not allowed."""


class LimitError(SmolsightError):
    """An input over a configured limit (pixels, frames, tokens, bytes)."""


class ModelNotFoundError(SmolsightError):
    """A model alias, hub id or directory that cannot be resolved or loaded."""
