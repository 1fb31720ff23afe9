"""Alert events: one ongoing event per rule and source that opens, updates and closes, instead
of an alert for every frame that shows the same fire.

An answer that meets the rule's condition opens an event (unless the rule is cooling down from
the last one) or updates the open one; `clear_after` answers in a row that do not meet it close
it; then no event opens for `cooldown_s` seconds of the source's time.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, UPDATE, CLOSE, QUIET, COOLDOWN = "open", "update", "close", "quiet", "cooldown"


@dataclass
class Event:
    """An alert in progress or ended: its id, when it started and how many answers it spans."""

    id: str
    opened_t: float
    answers: int = 1
    misses: int = 0


class EventTracker:
    """The event state of one rule on one source."""

    def __init__(self, key: str, clear_after: int, cooldown_s: float) -> None:
        self.key = key
        self.clear_after = clear_after
        self.cooldown_s = cooldown_s
        self.current: Event | None = None
        self.closed_t: float | None = None
        self.count = 0

    def update(self, alert: bool, t: float) -> tuple[str, Event | None]:
        """(decision, the event it concerns) for an answer at source time `t`."""
        event = self.current
        if event is not None:
            event.answers += 1
            event.misses = 0 if alert else event.misses + 1
            if event.misses < self.clear_after:
                return UPDATE, event
            return self.close(t)
        if not alert:
            return QUIET, None
        if self.closed_t is not None and t - self.closed_t < self.cooldown_s:
            return COOLDOWN, None
        self.count += 1
        self.current = Event(f"{self.key}/{self.count}", t)
        return OPEN, self.current

    def close(self, t: float) -> tuple[str, Event | None]:
        """Close the open event (also when watching stops); (QUIET, None) if none is open."""
        event, self.current = self.current, None
        if event is None:
            return QUIET, None
        self.closed_t = t
        return CLOSE, event
