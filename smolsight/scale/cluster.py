"""Connecting to Ray: a local instance on this machine, or an existing cluster by address.

Ray is an optional extra; without it every entry point here fails with one line that says what
to install. Ray's own log lines and progress bars are kept off the terminal, where smolsight
prints its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import SmolsightError


@dataclass(frozen=True)
class ActorResources:
    """What each Ray actor (a batch worker or a server replica) holds: one engine on these."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0:
            raise SmolsightError(f"each Ray actor or replica needs CPUs > 0 and GPUs >= 0, not {self.cpus:g} and {self.gpus:g}")

    def ray_options(self) -> dict:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    @property
    def threads(self) -> int:
        """torch threads per actor: its CPU share, so actors on one machine do not fight."""
        return max(1, int(self.cpus))


@dataclass(frozen=True)
class EngineSpec:
    """How each actor loads its engine (the arguments of `Engine.load`)."""

    model: str
    device: str | None = None
    dtype: str | None = None
    attn: str | None = None
    adapter: str | None = None
    fast: str | None = None  # a fast-path spec; None: $SMOLSIGHT_FAST on the worker, else its device's defaults

    def load(self, threads: int):
        import torch

        from ..engine import Engine

        torch.set_num_threads(threads)
        return Engine.load(self.model, self.device, self.dtype, self.attn, adapter=self.adapter, quiet=True, fast=self.fast)


def require_ray():
    try:
        import ray
    except ImportError:
        raise SmolsightError("this needs Ray: pip install 'smolsight[ray]'") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None):
    """`ray.init`: the cluster at `address` ("auto" finds a running one, or ray://HOST:10001),
    else a new local instance with `num_cpus` (default: all cores). Idempotent."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options = {"address": address} if address else {"num_cpus": num_cpus}
    try:
        ray.init(**options, include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except ConnectionError as exc:
        raise SmolsightError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data", "ray.serve"):  # after their imports, which set up their loggers
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray
