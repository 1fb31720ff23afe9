"""The watch loop: one reader thread per source, one thread that asks the model, outputs on
their own threads.

Readers keep only a live source's newest sampled frame (a slow model makes them drop frames,
never fall behind or hold up another source); files and folders wait for each sampled frame to
be taken, so a clip is judged frame by frame. A reader whose source drops reconnects with
doubling waits. The asking thread takes the frames that are ready, passes each through its
source's change gate, asks the rules that are due (every rule due on any source, in one batch)
and turns answers into event decisions, which are written to the log before anything else.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..console import log
from ..engine.batches import answer_isolated
from ..errors import SmolsightError
from .answers import read_answer
from .events import CLOSE, OPEN, QUIET, UPDATE, EventTracker
from .gate import ChangeGate
from .outputs import Outputs, WatchMetrics, require_paho
from .rules import Rule, SourceSpec, WatchConfig, load_rules
from .sources import Frame, Source, open_source, redact

if TYPE_CHECKING:
    from ..engine import Request, Result
    from ..engine.batches import Backend

BACKOFF_S = (1.0, 30.0)  # first and longest wait before reconnecting a live source
RECENT_ALERTS = 20
STOP_DEADLINE_S = 30.0


@dataclass
class Question:
    """One rule due on one frame."""

    watch: SourceWatch
    rule: Rule
    frame: Frame
    image: object  # the gate's reference image: the frame itself, or the unchanged frame it matches


@dataclass
class SourceWatch:
    """One source's reader state, gate, schedule and last answers."""

    spec: SourceSpec
    source: Source
    gate: ChangeGate
    trackers: dict[str, EventTracker]
    status: str = "starting"
    error: str = ""
    pending: Frame | None = None
    last_frame: Frame | None = None
    last_asked: dict[str, float] = field(default_factory=dict)
    answers: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"seen": 0, "skipped": 0, "asked": 0, "dropped": 0})

    def due(self, rule: Rule, t: float, changed: bool) -> bool:
        """On change, and/or every `every_s` seconds to the nearest sampled frame."""
        if rule.on_change and changed:
            return True
        last = self.last_asked.get(rule.name)
        return rule.every_s is not None and (last is None or t - last >= rule.every_s - 0.5 / self.spec.sample_fps)


def checked_config(path: str) -> WatchConfig:
    """The rules file, its sources and its outputs' requirements checked, before any model
    loads: a bad rule or a bad source fails here with one line."""
    config = load_rules(path)
    for spec in config.sources:
        open_source(spec, config.urls, time.monotonic)
    if config.mqtt:
        require_paho()
    return config


def safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)


class Watcher:
    """Watches every source of a rules file with one answering backend (the `Engine`, the
    server's batcher, or a scripted stand-in) until stopped or, with only files and folders,
    until they end."""

    def __init__(self, config: WatchConfig, backend: Backend, on_record: Callable[[dict], None] | None = None) -> None:
        self.config = config
        self.backend = backend
        self.on_record = on_record or (lambda record: None)
        self.started = time.monotonic()
        self.run_stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        clock = lambda: time.monotonic() - self.started  # noqa: E731 - the live sources' clock
        self.watches = [self.make_watch(spec, open_source(spec, config.urls, clock)) for spec in config.sources]
        self.metrics = WatchMetrics()
        self.outputs = Outputs(config.out_dir, config.webhook, config.mqtt, self.metrics)
        self.recent: deque[dict] = deque(maxlen=RECENT_ALERTS)
        self.stop_event = threading.Event()
        self.ready = threading.Condition()
        self.version = 0  # bumped on every change a view shows
        self.threads: list[threading.Thread] = []
        self.asker: threading.Thread | None = None

    def make_watch(self, spec: SourceSpec, source: Source) -> SourceWatch:
        trackers = {r.name: EventTracker(f"{spec.name}/{r.name}/{self.run_stamp}", r.clear_after, r.cooldown_s) for r in spec.rules}
        return SourceWatch(spec, source, ChangeGate(spec.change_threshold), trackers)

    # ---- running ---------------------------------------------------------------------------

    def start(self) -> "Watcher":
        for watch in self.watches:
            thread = threading.Thread(target=self.read, args=(watch,), name=f"watch-{watch.spec.name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.asker = threading.Thread(target=self.ask_loop, name="watch-asker", daemon=True)
        self.asker.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Until every source has ended (files and folders) or the watcher stops; True if so."""
        self.asker.join(timeout)
        return not self.asker.is_alive()

    def stop(self) -> None:
        """Stop reading, let the batch being answered finish, close open events, flush outputs."""
        self.stop_event.set()
        with self.ready:
            self.ready.notify_all()
        deadline = time.monotonic() + STOP_DEADLINE_S
        for thread in [*self.threads, self.asker]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        for watch in self.watches:
            for rule in watch.spec.rules:
                self.close_on_stop(watch, rule)
        self.outputs.close()
        self.changed()

    def changed(self) -> None:
        with self.ready:
            self.version += 1
            self.ready.notify_all()

    # ---- reading ---------------------------------------------------------------------------

    def read(self, watch: SourceWatch) -> None:
        """Hand frames over until the source ends (files, folders) or watching stops; a live
        source that drops or cannot be reached is retried with doubling waits."""
        name, wait = watch.spec.name, BACKOFF_S[0]
        while not self.stop_event.is_set():
            try:
                for frame in watch.source.frames(self.stop_event):
                    if watch.status != "live":
                        self.set_status(watch, "live", "")
                        self.metrics.source_up.labels(source=name).set(1)
                    wait = BACKOFF_S[0]
                    self.hand_over(watch, frame)
                self.taken(watch)
                problem = "the stream ended"
            except SmolsightError as exc:
                problem = str(exc)
            except Exception as exc:  # noqa: BLE001 - a reader must never die silently
                traceback.print_exc()
                problem = f"{type(exc).__name__}: {exc}"
            self.metrics.source_up.labels(source=name).set(0)
            if not watch.source.live:
                self.set_status(watch, "ended" if problem == "the stream ended" else "failed", "" if problem == "the stream ended" else problem)
                break
            if self.stop_event.is_set():
                break
            self.metrics.errors.labels(source=name, kind="source").inc()
            self.set_status(watch, "reconnecting", f"{problem}; retrying in {wait:g} s")
            log(f"watch: source {name!r} ({redact(watch.spec.url)}): {problem}; retrying in {wait:g} s")
            self.stop_event.wait(wait)
            wait = min(wait * 2, BACKOFF_S[1])
        with self.ready:
            self.ready.notify_all()

    def taken(self, watch: SourceWatch) -> None:
        """Wait until the last frame handed over has been taken (and counted), so a source that
        ended has had every frame seen."""
        with self.ready:
            while watch.pending is not None and not self.stop_event.is_set():
                self.ready.wait(0.5)

    def set_status(self, watch: SourceWatch, status: str, error: str) -> None:
        watch.status, watch.error = status, error
        self.changed()

    def hand_over(self, watch: SourceWatch, frame: Frame) -> None:
        """Live: replace any frame not yet taken. Files and folders: wait until it is taken."""
        with self.ready:
            if watch.source.live:
                if watch.pending is not None:
                    watch.counts["dropped"] += 1
                    self.metrics.frames_dropped.labels(source=watch.spec.name).inc()
            else:
                while watch.pending is not None and not self.stop_event.is_set():
                    self.ready.wait(0.5)
            watch.pending = frame
            self.ready.notify_all()

    # ---- asking ----------------------------------------------------------------------------

    def ask_loop(self) -> None:
        while not self.stop_event.is_set():
            frames = self.take_frames()
            if frames is None:
                return
            questions = [q for watch, frame in frames for q in self.questions(watch, frame)]
            if questions:
                self.answer(questions)
            self.changed()

    def take_frames(self) -> list[tuple[SourceWatch, Frame]] | None:
        """The frames ready now (waiting for one); None when no source can give more."""
        with self.ready:
            while not self.stop_event.is_set():
                ready = [(w, w.pending) for w in self.watches if w.pending is not None]
                if ready:
                    for watch, _ in ready:
                        watch.pending = None
                        watch.counts["seen"] += 1  # under the lock: counted before its reader can say it ended
                    self.ready.notify_all()
                    return ready
                if all(not t.is_alive() for t in self.threads):
                    return None
                self.ready.wait(0.5)
        return None

    def questions(self, watch: SourceWatch, frame: Frame) -> list[Question]:
        name = watch.spec.name
        watch.last_frame = frame
        self.metrics.frames_seen.labels(source=name).inc()
        changed = watch.gate.check(frame.image)
        due = [rule for rule in watch.spec.rules if watch.due(rule, frame.t, changed)]
        if not due:
            watch.counts["skipped"] += 1
            self.metrics.frames_skipped.labels(source=name, reason="schedule" if changed else "unchanged").inc()
            return []
        watch.counts["asked"] += 1
        self.metrics.frames_asked.labels(source=name).inc()
        if not changed:
            self.metrics.vision_reused.labels(source=name).inc(len(due))
        for rule in due:
            watch.last_asked[rule.name] = frame.t
        return [Question(watch, rule, frame, watch.gate.reference) for rule in due]

    def answer(self, questions: list[Question]) -> None:
        started = time.perf_counter()
        outcomes = self.outcomes([self.request(q) for q in questions])
        self.metrics.latency.observe(time.perf_counter() - started)
        for question, outcome in zip(questions, outcomes, strict=True):
            self.decide(question, outcome)

    def request(self, question: Question) -> Request:
        from ..engine import Request
        from ..engine.options import resolve_options

        spec, rule = question.watch.spec, question.rule
        options = resolve_options(self.config.preset, max_new_tokens=rule.max_new_tokens)
        return Request.simple(question.image, rule.prompt, options=options, image_size=spec.image_size, split=spec.split, ocr=rule.ocr)

    def outcomes(self, requests: list[Request]) -> list[Result | Exception]:
        """Results in order; one bad question costs only its own answer (an error record)."""
        return answer_isolated(self.backend, requests)

    # ---- deciding --------------------------------------------------------------------------

    def decide(self, question: Question, outcome: Result | Exception) -> None:
        watch, rule, frame = question.watch, question.rule, question.frame
        self.metrics.questions.labels(source=watch.spec.name, rule=rule.name).inc()
        if isinstance(outcome, Exception):
            self.metrics.errors.labels(source=watch.spec.name, kind="answer").inc()
            record = self.record(question, "error", None, answer="", value=None, alert=False, error=str(outcome) or type(outcome).__name__)
            return self.emit(watch, rule, record)
        reading = read_answer(rule, outcome.text)
        if rule.alert_when is None:
            decision, event = "answer", None
        else:
            decision, event = watch.trackers[rule.name].update(reading.alert, frame.t)
        record = self.record(question, decision, event, answer=outcome.text, value=reading.value, alert=reading.alert)
        if decision == OPEN:
            self.metrics.alerts.labels(source=watch.spec.name, rule=rule.name).inc()
        watch.answers[rule.name] = record
        if decision not in (QUIET, "cooldown"):
            self.emit(watch, rule, record)

    def record(self, question: Question, decision: str, event, **fields) -> dict:
        watch, rule, frame = question.watch, question.rule, question.frame
        snapshot = None
        if decision in (OPEN, UPDATE, CLOSE):
            name = safe_name(f"{watch.spec.name}-{rule.name}-{frame.at:.3f}")
            snapshot = self.outputs.snapshot(question.image, name)
        return {
            "time": datetime.fromtimestamp(frame.at, timezone.utc).isoformat(timespec="milliseconds"),
            "source": watch.spec.name, "rule": rule.name, "decision": decision, **fields,
            "event": event.id if event else None, "event_answers": event.answers if event else None,
            "frame_time": round(frame.t, 3), "frame": snapshot, "question": rule.ask,
        }  # fmt: skip

    def emit(self, watch: SourceWatch, rule: Rule, record: dict) -> None:
        self.outputs.emit(record)
        watch.answers[rule.name] = record
        if record["decision"] in (OPEN, CLOSE):
            self.recent.appendleft(record)
        self.on_record(record)

    def close_on_stop(self, watch: SourceWatch, rule: Rule) -> None:
        tracker = watch.trackers[rule.name]
        if tracker.current is None or watch.last_frame is None:
            return
        frame = watch.last_frame
        decision, event = tracker.close(frame.t)
        question = Question(watch, rule, frame, frame.image)
        self.emit(watch, rule, self.record(question, decision, event, answer="", value=None, alert=False, reason="watching stopped"))

    # ---- what views show -------------------------------------------------------------------

    def state(self) -> dict:
        """Sources, their last answers and open events, recent alerts and counts: JSON-ready."""
        with self.ready:
            return {
                "version": self.version,
                "sources": [self.source_state(w) for w in self.watches],
                "recent": list(self.recent),
            }

    @staticmethod
    def source_state(watch: SourceWatch) -> dict:
        frame = watch.last_frame
        return {
            "name": watch.spec.name, "url": redact(watch.spec.url), "status": watch.status, "error": watch.error,
            "counts": dict(watch.counts), "frame_time": round(frame.t, 3) if frame else None,
            "difference": round(watch.gate.last_difference, 4),
            "answers": [watch.answers[r.name] for r in watch.spec.rules if r.name in watch.answers],
            "open": [t.current.id for t in watch.trackers.values() if t.current is not None],
        }  # fmt: skip

    def frame_of(self, name: str):
        """The last frame a source gave (an image), or None."""
        watch = next((w for w in self.watches if w.spec.name == name), None)
        return watch.last_frame.image if watch and watch.last_frame else None
