"""Merging a LoRA adapter into its base model: a plain model directory usable anywhere a model is."""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine import Engine, resolve_model
from ..errors import SmolsightError


def merge_adapter(model: str, adapter: str, out_dir: str | Path, dtype: str | None = None, quiet: bool = False) -> Path:
    """A plain model directory (weights with the adapter merged in, and the processor), loadable
    by `Engine.load` and `AutoModelForImageTextToText`. Merged in float32 on the CPU, saved in
    `dtype` (default: the base checkpoint's own dtype)."""
    from transformers import AutoConfig

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SmolsightError(f"{out} is not empty; merge into a new directory")
    stored = getattr(AutoConfig.from_pretrained(resolve_model(model)), "dtype", None) or "float32"
    target = dtype or str(stored).removeprefix("torch.")
    engine = Engine.load(model, device="cpu", dtype="float32", adapter=adapter, quiet=quiet, fast="none")
    engine.model.to(getattr(torch, target)).save_pretrained(out)
    engine.processor.save_pretrained(out)
    return out

