"""Batch work on Ray Data: items spread over a pool of actors, each holding one engine.

`map_batches` with a callable class gives each actor its own `Engine` (loaded once, with torch
limited to the actor's CPUs) and hands it `batch_size` items at a time; results stream back to
the driver as they finish, where they are written and counted. The same `answer` function as in
one process turns items into rows, so greedy answers are the same on Ray as without it.

On a multi-node cluster each node needs the model files (a hub id cached on every node, or a
shared directory) and the media at the same paths; see docs/scale.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .cluster import ActorResources, EngineSpec, connect


@dataclass(frozen=True)
class Pool:
    """The actor pool: how many actors, what each holds, how many items each call gets."""

    actors: int = 1
    batch_size: int = 1
    resources: ActorResources = ActorResources()
    address: str | None = None  # an existing cluster; None starts Ray on this machine


class Worker:
    """One Ray actor: an engine, and `answer(engine, payloads)` applied to each batch of JSON
    payloads, giving JSON rows."""

    def __init__(self, spec: EngineSpec, threads: int, answer: Callable) -> None:
        self.engine = spec.load(threads)
        self.answer = answer

    def __call__(self, batch: dict) -> dict:
        payloads = [json.loads(text) for text in batch["payload"]]
        return {"row": [json.dumps(row, ensure_ascii=False) for row in self.answer(self.engine, payloads)]}


def run_on_ray(payloads: list[dict], answer: Callable, spec: EngineSpec, pool: Pool) -> Iterator[dict]:
    """Rows for `payloads` (JSON-able dicts), as the actors finish them. `answer(engine,
    payloads) -> rows` runs inside the actors and must be importable there (a module-level
    function of smolsight)."""
    ray = connect(pool.address)
    dataset = ray.data.from_items([{"payload": json.dumps(p, ensure_ascii=False)} for p in payloads])
    answered = dataset.map_batches(
        Worker,
        fn_constructor_kwargs={"spec": spec, "threads": pool.resources.threads, "answer": answer},
        batch_size=pool.batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        batch_format="numpy",
        **pool.resources.ray_options(),
    )
    for record in answered.iter_rows():
        yield json.loads(record["row"])
