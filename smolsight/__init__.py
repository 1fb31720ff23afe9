"""smolsight: dependable SmolVLM2 for cameras.

`from smolsight import Engine` is the library's front door (see smolsight.engine). The
subpackages show the architecture: `engine` (models and generation), `serve` (the
OpenAI-compatible server), `evals` (suites, scorers, runs, reports), `train` (LoRA fine-tuning);
`cli` ties them together.
"""

from __future__ import annotations

__all__ = ["Chunk", "Engine", "GenerationOptions", "Request", "Result"]


def __getattr__(name: str):
    """Engine and friends load on first use, so `smolsight --help` does not import torch."""
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
