"""Where events go: the append-only JSONL log and JPEG snapshots (written at once, so no event
is lost whatever happens after), a webhook and an MQTT broker (each on its own thread, so a
slow or failing receiver never holds up watching), and Prometheus metrics.

A webhook delivery is retried with growing waits; one that still fails is appended to
`undelivered.jsonl` beside the log, so the event is never lost. MQTT messages wait in paho's
queue while the broker is away. `close()` flushes both within a deadline (SIGTERM calls it).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..errors import SmolsightError
from .rules import MqttSpec, WebhookSpec

FLUSH_DEADLINE_S = 10.0
NOTIFIED = ("open", "close")


class WatchMetrics:
    """The Prometheus series of one watcher, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_seen = Counter("smolsight_watch_frames_seen", "Sampled frames read from a source.", ["source"], registry=r)
        self.frames_skipped = Counter("smolsight_watch_frames_skipped", "Frames not sent to the model: unchanged, or no rule due.",
                                      ["source", "reason"], registry=r)  # fmt: skip
        self.frames_dropped = Counter("smolsight_watch_frames_dropped", "Live frames replaced by a newer one while the model was busy.",
                                      ["source"], registry=r)  # fmt: skip
        self.frames_asked = Counter("smolsight_watch_frames_asked", "Frames the model was asked about.", ["source"], registry=r)
        self.questions = Counter("smolsight_watch_questions", "Questions answered.", ["source", "rule"], registry=r)
        self.vision_reused = Counter("smolsight_watch_vision_reused", "Questions about an unchanged frame (vision features cached).",
                                     ["source"], registry=r)  # fmt: skip
        self.alerts = Counter("smolsight_watch_alerts", "Alert events opened.", ["source", "rule"], registry=r)
        self.errors = Counter("smolsight_watch_errors", "Source drops and failed answers.", ["source", "kind"], registry=r)
        self.delivery_failures = Counter("smolsight_watch_delivery_failures", "Webhook or MQTT deliveries given up.", ["output"], registry=r)
        self.source_up = Gauge("smolsight_watch_source_up", "1 while a source delivers frames.", ["source"], registry=r)
        self.latency = Histogram("smolsight_watch_answer_seconds", "Time to answer one batch of questions.", registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))  # fmt: skip


class EventLog:
    """The append-only JSONL log: one line per event record, flushed and synced as written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.file = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        with self.lock:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        with self.lock:
            self.file.close()


def save_snapshot(image: Image.Image, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jpg"
    image.save(path, "JPEG", quality=85)
    return path


class Delivery:
    """A worker thread that sends records in order; what cannot be sent goes to the
    undelivered file, so no event is lost to a receiver that is down."""

    name = "delivery"

    def __init__(self, undelivered: EventLog, metrics: WatchMetrics) -> None:
        self.undelivered = undelivered
        self.metrics = metrics
        self.queue: queue.Queue[dict | None] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        self.thread.start()

    def put(self, record: dict) -> None:
        self.queue.put(record)

    def run(self) -> None:
        while (record := self.queue.get()) is not None:
            try:
                self.send(record)
            except SmolsightError as exc:
                self.give_up(record, str(exc))

    def give_up(self, record: dict, why: str) -> None:
        self.metrics.delivery_failures.labels(output=self.name).inc()
        self.undelivered.write({"output": self.name, "error": why, "record": record})

    def send(self, record: dict) -> None:
        raise NotImplementedError

    def close(self, deadline: float) -> None:
        """Send what is queued until `deadline`; anything still waiting is kept as undelivered."""
        self.stopping.set()
        self.queue.put(None)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        while not self.queue.empty():
            record = self.queue.get_nowait()
            if record is not None:
                self.give_up(record, "not sent before watching stopped")


class Webhook(Delivery):
    """POSTs each record as JSON, with a timeout, retrying with doubling waits."""

    name = "webhook"

    def __init__(self, spec: WebhookSpec, undelivered: EventLog, metrics: WatchMetrics) -> None:
        self.spec = spec
        super().__init__(undelivered, metrics)

    def send(self, record: dict) -> None:
        body = json.dumps(record, ensure_ascii=False).encode()
        problem = ""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                if self.stopping.wait(self.spec.backoff_s * 2 ** (attempt - 1)):
                    break  # stopping: no more waits; the record is kept as undelivered
            request = urllib.request.Request(self.spec.url, body, {"Content-Type": "application/json", "User-Agent": "smolsight"})
            try:
                with urllib.request.urlopen(request, timeout=self.spec.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                problem = str(getattr(exc, "reason", exc))
        raise SmolsightError(f"webhook {self.spec.url}: {problem} after {attempt + 1} tries")


class Mqtt:
    """Publishes each record to TOPIC/SOURCE/RULE; paho keeps messages while the broker is away."""

    name = "mqtt"

    def __init__(self, spec: MqttSpec, undelivered: EventLog, metrics: WatchMetrics) -> None:
        paho = require_paho()
        self.spec = spec
        self.undelivered = undelivered
        self.metrics = metrics
        self.pending: list[tuple[dict, object]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"smolsight-watch-{os.getpid()}")
        if spec.username:
            self.client.username_pw_set(spec.username, spec.password)
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(spec.host, spec.port)
        self.client.loop_start()

    def put(self, record: dict) -> None:
        topic = f"{self.spec.topic}/{record['source']}/{record['rule']}"
        info = self.client.publish(topic, json.dumps(record, ensure_ascii=False), qos=self.spec.qos)
        self.pending = [(r, i) for r, i in self.pending if not i.is_published()] + [(record, info)]

    def close(self, deadline: float) -> None:
        for record, info in self.pending:
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not info.is_published():
                self.metrics.delivery_failures.labels(output=self.name).inc()
                self.undelivered.write({"output": self.name, "error": "not published before watching stopped", "record": record})
        self.client.disconnect()
        self.client.loop_stop()


def require_paho():
    """paho-mqtt's client module, or one line saying how to install it."""
    try:
        import paho.mqtt.client as paho
    except ImportError:
        raise SmolsightError("the rules file's MQTT output needs paho-mqtt: pip install 'smolsight[watch]'") from None
    return paho


class Outputs:
    """Every output of one watcher: the log and snapshots, then the receivers and listeners."""

    def __init__(self, out_dir: Path, webhook: WebhookSpec | None, mqtt: MqttSpec | None, metrics: WatchMetrics) -> None:
        self.out_dir = out_dir
        self.log = EventLog(out_dir / "events.jsonl")
        self.undelivered = EventLog(out_dir / "undelivered.jsonl")
        self.receivers = ([Webhook(webhook, self.undelivered, metrics)] if webhook else []) + (
            [Mqtt(mqtt, self.undelivered, metrics)] if mqtt else []
        )

    def snapshot(self, image: Image.Image, name: str) -> str:
        """The frame as a JPEG under snapshots/, its path relative to the log's folder."""
        return str(save_snapshot(image, self.out_dir / "snapshots", name).relative_to(self.out_dir))

    def emit(self, record: dict) -> None:
        """Log the record, then hand an event's opening and closing to the receivers (which only
        queue it); updates and plain answers stay in the log."""
        self.log.write(record)
        if record["decision"] in NOTIFIED:
            for receiver in self.receivers:
                receiver.put(record)

    def close(self) -> None:
        deadline = time.monotonic() + FLUSH_DEADLINE_S
        for receiver in self.receivers:
            receiver.close(deadline)
        self.log.close()
        self.undelivered.close()
