"""The OpenAI-compatible server as Ray Serve replicas: the same app `smolsight serve` runs, one
engine per replica, behind Ray's HTTP proxy.

Each replica builds `create_app(engine, settings)` itself when it starts (Ray evaluates the
builder on the replica), so the model loads where the replica runs; Ray's proxy spreads
requests over the replicas, and autoscaling adds or removes replicas by ongoing requests.
Inside a replica the server batches as it does alone.

Two ways in: `smolsight serve --ray --replicas N` (or `--autoscale MIN:MAX`), or Ray's own
command with the application builder below:

    serve run smolsight.scale.serving:build_app model=256m replicas=2 cpus_per_replica=2
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

from ..errors import SmolsightError
from ..serve.settings import ServerSettings
from .cluster import ActorResources, EngineSpec, connect

DEPLOYMENT = "smolsight"


@dataclass(frozen=True)
class Replicas:
    """How many replicas, or the autoscaling range, and what each holds."""

    count: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas
    target_ongoing_requests: float = 4.0  # per replica, before autoscaling adds one
    resources: ActorResources = field(default_factory=ActorResources)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise SmolsightError("--replicas must be at least 1")
        if self.autoscale and not 0 <= self.autoscale[0] <= self.autoscale[1] >= 1:
            raise SmolsightError("--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1")

    def deployment_options(self) -> dict:
        if self.autoscale:
            low, high = self.autoscale
            scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                              "target_ongoing_requests": self.target_ongoing_requests}}  # fmt: skip
        else:
            scaling = {"num_replicas": self.count}
        return {**scaling, "ray_actor_options": self.resources.ray_options()}


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit():
        raise SmolsightError(f"--autoscale {text!r}: give MIN:MAX replicas, e.g. 1:4")
    return int(low), int(high)


def application(spec: EngineSpec, settings: ServerSettings, replicas: Replicas):
    """The bound Ray Serve application (deploy it with `serve.run`)."""
    from ray import serve

    threads = replicas.resources.threads

    def build():  # runs on each replica as it starts
        from ..serve.app import create_app

        return create_app(spec.load(threads), settings)

    queue = settings.max_queue + settings.max_batch_size  # what one replica holds before it answers 429
    deployment = serve.deployment(serve.ingress(build)(), name=DEPLOYMENT, max_ongoing_requests=queue, **replicas.deployment_options())
    return deployment.bind()


def build_app(args: dict):
    """Application builder for `serve run smolsight.scale.serving:build_app key=value …`:
    model (required), device, dtype, attn, adapter, fast, served_model_name, replicas, autoscale
    (MIN:MAX), cpus_per_replica, gpus_per_replica."""
    known = {"model", "device", "dtype", "attn", "adapter", "fast", "served_model_name", "replicas", "autoscale", "cpus_per_replica", "gpus_per_replica"}
    unknown = set(args) - known
    if unknown or "model" not in args:
        raise SmolsightError(f"build_app takes model=… and optionally {', '.join(sorted(known - {'model'}))}")
    spec = EngineSpec(*(args.get(k) for k in ("model", "device", "dtype", "attn", "adapter", "fast")))
    resources = ActorResources(float(args.get("cpus_per_replica", 1)), float(args.get("gpus_per_replica", 0)))
    replicas = Replicas(int(args.get("replicas", 1)), parse_autoscale(args.get("autoscale")), resources=resources)
    return application(spec, ServerSettings(model_name=args.get("served_model_name") or args["model"]), replicas)


def serve_on_ray(app, host: str, port: int, address: str | None = None) -> None:
    """Deploy on Ray and serve on HOST:PORT until SIGINT/SIGTERM, then shut the replicas down
    (Ray lets requests in flight finish first)."""
    connect(address)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=DEPLOYMENT, route_prefix="/")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
