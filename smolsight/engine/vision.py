"""Where image features come from: the vision encoder (SigLIP) and the pixel-shuffle connector,
run by torch (the model's own modules, `torch_vision`) or by OpenVINO (`openvino_vision`, the
`smolsight[openvino]` extra). `Engine.image_features` calls the one backend chosen at load.

The choice is the `vision` fast path (`SMOLSIGHT_FAST=default,vision=torch`, `bench --fast …`):
- torch: the model's own code.
- openvino: the same computation converted once per weights and cached on disk, run by OpenVINO's
  CPU plugin in bf16 where the CPU reports BF16 support (f32 for a float32 engine or elsewhere).
- openvino-int8: the converted model quantised by nncf: faster, with a larger feature error
  (docs/performance.md gives both).
- auto, the CPU default: openvino when it is installed (the first load of new weights converts
  them, once, with progress; a conversion that fails falls back to torch with one line saying
  why), else torch with a one-line notice saying how to install it.
"""

from __future__ import annotations

import importlib.util

from ..console import log
from ..errors import SmolsightError
from .torch_vision import TorchVision

CHOICES = ("torch", "openvino", "openvino-int8", "auto")
INSTALL = "pip install 'smolsight[openvino]'"


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def check(choice: str | None, device: str) -> None:
    """Refuse a choice that cannot work here, before any model loads."""
    if choice is None or choice in ("torch", "auto"):
        return
    if choice not in CHOICES:
        raise SmolsightError(f"unknown vision backend {choice!r}; use {', '.join(CHOICES)}")
    if not device.startswith("cpu"):
        raise SmolsightError(f"vision={choice} runs on the CPU; on {device} use vision=torch")
    if not installed():
        raise SmolsightError(f"vision={choice} needs OpenVINO: {INSTALL}")
    if choice == "openvino-int8" and importlib.util.find_spec("nncf") is None:
        raise SmolsightError(f"vision=openvino-int8 needs nncf: {INSTALL}")


def make(choice: str | None, model, processor, device: str, dtype: str, quiet: bool = False):
    """The backend for `choice` (None: torch): a callable (pixels, pixel mask) -> features."""
    check(choice, device)
    if choice in (None, "torch") or (choice == "auto" and not device.startswith("cpu")):
        return TorchVision(model, device)
    if choice == "auto" and not installed():
        log(f"Vision on torch: OpenVINO is not installed ({INSTALL} runs it 1.4-2.2x as fast on CPUs)", quiet)
        return TorchVision(model, device)
    from . import openvino_vision

    precision = "int8" if choice == "openvino-int8" else openvino_vision.float_precision(dtype)
    if choice != "auto":
        return openvino_vision.load(model, processor, precision, quiet)
    try:
        return openvino_vision.load(model, processor, precision, quiet)
    except Exception as exc:  # auto must never cost the user an answer: say why and use torch
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log(f"Vision on torch: OpenVINO could not convert or compile it ({reason})", quiet)
        return TorchVision(model, device)
