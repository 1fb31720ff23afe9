"""The engine: loading a model and the one generation path that every surface (CLI, server,
evaluation, benchmark, fine-tuning's evaluation) goes through.

Its modules, bottom up: `media` and `fetch` read images and videos; `prompts` builds SmolVLM2's
chat format; `options` holds the generation options and presets; `decoding` chooses tokens and
guards against loops, `logprobs` reports their probabilities and `structured` holds them to a JSON
schema; `redundancy` cleans and measures repeated text; `cpu` probes what the CPU does fast,
`fastpaths`, `int8` and `leandecode` hold the speed-ups, `vision` and `openvino_vision` compute
image features; `ocr` reads the text in images with an OCR model (the `smolsight[ocr]` extra,
imported on first use); `loading` reads a model; `slots` is the running batch's KV cache and
`generation` the one decode loop (continuous batching); `engine` runs requests. Nothing here
imports from the rest of smolsight but its shared leaves (errors, console, text).

The names below load on first use, so importing a leaf such as `smolsight.engine.options` does
not pull in torch.
"""

from __future__ import annotations

import importlib

EXPORTS = {
    "Engine": "engine", "Request": "engine", "Result": "engine", "Chunk": "engine",
    "GenerationOptions": "options", "PRESETS": "options", "resolve_options": "options",
    "resolve_model": "loading", "choose_runtime": "loading", "DEFAULT_MODEL": "loading",
}  # fmt: skip
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{EXPORTS[name]}", __name__), name)
