"""Loading a model: aliases, hub ids and local directories; device, dtype and attention chosen
for the machine; adapters merged in. The one place where weights are read from disk or hub."""

from __future__ import annotations

import functools
import os
import socket
import warnings
from pathlib import Path

import torch

from . import cpu
from ..console import log
from ..errors import ModelNotFoundError, SmolsightError
from .options import ATTENTIONS, FLOAT32_SDPA

ALIASES = {
    "256m": "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
    "500m": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "2.2b": "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
}
DEFAULT_MODEL = "256m"


def resolve_model(name: str) -> str:
    """An alias, a local directory, or a hub id."""
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {name} has no config.json")
        return str(path)
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        raise ModelNotFoundError(
            f"unknown model {name!r}: use an alias ({', '.join(ALIASES)}), a hub id like "
            "HuggingFaceTB/SmolVLM2-256M-Video-Instruct, or a local directory"
        )
    return name


def choose_runtime(device: str | None, dtype: str | None, attn: str | None) -> tuple[str, str, str]:
    """Device, dtype and attention: automatic unless given."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SmolsightError("device cuda was asked for but no CUDA GPU is available")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else cpu.defaults().dtype  # the probed CPU's (engine.cpu)
    if dtype not in ("bfloat16", "float16", "float32"):
        raise SmolsightError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
    if attn is None:
        attn = "sdpa"
        if device == "cpu" and dtype == "bfloat16" and cpu.defaults().prefill_attention == "float32":
            attn = FLOAT32_SDPA  # this CPU's bf16 attention kernel measured slower than float32 (engine.cpu)
        if device.startswith("cuda"):
            try:
                import flash_attn  # noqa: F401

                attn = "flash_attention_2"
            except ImportError:
                pass
    if attn not in ATTENTIONS:
        raise SmolsightError(f"unknown attention {attn!r}; use {', '.join(ATTENTIONS)}")
    return device, dtype, attn


@functools.cache  # once a process
def register_float32_sdpa() -> None:
    """Make `FLOAT32_SDPA` an attention transformers knows: its SDPA with queries, keys and values
    upcast to float32 and the output cast back. Why: a bf16 model on a CPU where torch's bf16
    attention kernel is slower than float32 over copies (the CPU probe measures both: engine.cpu)
    keeps its bf16 weights and matrix products and attends in float32."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attend(module, query, key, value, attention_mask, **kwargs):
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.float()  # an additive mask must match the queries' dtype
        output, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
        return output.to(query.dtype), weights

    AttentionInterface.register(FLOAT32_SDPA, attend)
    AttentionMaskInterface.register(FLOAT32_SDPA, sdpa_mask)


def load_model(model: str, device: str, dtype: str, attn: str, *, adapter: str | None = None, quiet: bool = False,
               verbose: bool = False, quantization=None, note: str = ""):
    """(network, processor) of `model` on `device`, in eval mode, its tokenizer padding on the left.
    transformers' own progress bars ("Loading weights") show only when `verbose`: one line of
    ours says what is loading. `quantization`: a transformers quantization config (QLoRA's 4-bit
    weights); `note` is added to the loading message."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    source = resolve_model(model)
    if verbose and not quiet:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    log(f"Loading {source} on {device} ({dtype}, {attn}{note})…", quiet)
    if not Path(source).exists():
        ensure_hub_reachable(source)
    placement = {"quantization_config": quantization, "device_map": {"": device}} if quantization else {}
    if attn == FLOAT32_SDPA:
        register_float32_sdpa()
    try:
        processor = AutoProcessor.from_pretrained(source)
        network = AutoModelForImageTextToText.from_pretrained(source, dtype=getattr(torch, dtype), attn_implementation=attn, **placement)
    except (OSError, ValueError) as exc:
        hint = "" if Path(source).exists() else " (no network? pass a local model directory, e.g. one made by `smolsight make-checkpoint`)"
        raise ModelNotFoundError(f"could not load model {model!r}: {str(exc).splitlines()[0]}{hint}") from None
    if adapter:
        network = attach_adapter(network, adapter)
    if not quantization:
        network.to(device)
    processor.tokenizer.padding_side = "left"
    return network.eval(), processor


def ensure_hub_reachable(repo_id: str) -> None:
    """Fail in a second, not after minutes of retries, when a hub model is neither cached nor reachable."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str) or os.environ.get("HF_HUB_OFFLINE"):
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError:
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local cache and huggingface.co cannot be reached; "
            "pass a local model directory instead (e.g. one made by `smolsight make-checkpoint`)"
        ) from None


def attach_adapter(model, adapter: str):
    from peft import PeftModel

    if not Path(adapter, "adapter_config.json").is_file():
        raise ModelNotFoundError(f"adapter directory {adapter} has no adapter_config.json")
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`; nothing to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
