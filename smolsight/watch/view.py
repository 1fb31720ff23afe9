"""The terminal face of `smolsight watch`: a live table of sources and alerts on a terminal
(one line per event otherwise), running until Ctrl-C, SIGTERM, `--for` seconds or the end of
every file, and the cost summary printed at the end (how docs/watch.md's figures were taken)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from ..console import clip, format_table

if TYPE_CHECKING:
    from .watcher import Watcher

REDRAW_S = 1.0
CLEAR = "\x1b[H\x1b[2J"


def event_line(record: dict) -> str:
    """One event as a line: time, decision, source/rule, answer, snapshot."""
    answer = record.get("error") or record.get("reason") or record["answer"]
    frame = f"  {record['frame']}" if record.get("frame") else ""
    return f"{record['time'][11:19]} {record['decision'].upper():6} {record['source']}/{record['rule']}: {clip(answer, 60)}{frame}"


def state_table(state: dict) -> str:
    """The sources as a table (status, frame counts, last answers, open events) and the recent alerts."""
    rows = []
    for source in state["sources"]:
        counts = source["counts"]
        answers = "; ".join(f"{a['rule']}={clip(str(a['value'] if a['value'] is not None else a['answer']), 16)}" for a in source["answers"])
        status = source["status"] + (f" ({clip(source['error'], 40)})" if source["error"] else "")
        rows.append([source["name"], status, str(counts["seen"]), str(counts["skipped"]), str(counts["asked"]),
                     clip(answers or "-", 50), str(len(source["open"]))])  # fmt: skip
    table = format_table(["source", "status", "seen", "skipped", "asked", "last answers", "open"], rows, right=(2, 3, 4, 6))
    recent = [event_line(record) for record in state["recent"][:10]]
    return table + "\n\nrecent alerts:\n" + ("\n".join(recent) if recent else "(none yet)")


@dataclass(frozen=True)
class Cost:
    """What a watch run used: CPU seconds of this process (every thread) over wall seconds."""

    sources: int
    wall_s: float
    cpu_s: float
    seen: int
    skipped: int
    asked: int
    alerts: int

    @property
    def cpu_per_camera_minute(self) -> float:
        return self.cpu_s / (self.sources * self.wall_s / 60) if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        return (f"watched {self.sources} source(s) for {self.wall_s:.1f} s: {self.seen} frames seen, {self.skipped} skipped, "
                f"{self.asked} asked, {self.alerts} alert(s); CPU {self.cpu_s:.1f} s = "
                f"{self.cpu_per_camera_minute:.1f} CPU-s per camera per minute")  # fmt: skip


def run_watch(watcher: Watcher, duration: float | None = None, out: TextIO = sys.stdout, live: bool | None = None) -> Cost:
    """Watch until the sources end, `duration` passes, Ctrl-C or SIGTERM; then stop (flushing
    every output) and return what it cost."""
    live = out.isatty() if live is None else live
    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if threading.current_thread() is threading.main_thread() else None
    if not live:
        watcher.on_record = lambda record: print(event_line(record), file=out, flush=True)
    started, cpu = time.monotonic(), time.process_time()
    watcher.start()
    try:
        while not stopping.is_set() and not watcher.wait(REDRAW_S):
            if duration is not None and time.monotonic() - started >= duration:
                break
            if live:
                out.write(CLEAR + state_table(watcher.state()) + "\n")
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if live:
        out.write(CLEAR + state_table(watcher.state()) + "\n")
    sources = watcher.state()["sources"]
    return Cost(len(sources), time.monotonic() - started, time.process_time() - cpu,
                *(sum(s["counts"][k] for s in sources) for k in ("seen", "skipped", "asked")),
                sum(tracker.count for watch in watcher.watches for tracker in watch.trackers.values()))  # fmt: skip
