"""A row's answer text as its tokens arrive, streamed so that what was sent is the final answer.

Three things may still remove text after it was generated: a stop string (its first characters
may be the end of the text so far), the sentence filter (the last piece may turn out to repeat an
earlier one) and the loop guard (a loop's copies are dropped once it is certain). So text is held
back until none of them can touch it: the guard says how many tokens are final (`LoopGuard.safe`),
then stop strings and the sentence filter hold back their own tails. The concatenation of what
`advance` and `close` return is the answer, by construction; `held_max` says how many characters
were held back at most, at any one time.

The filter also sees loops the token-level guard cannot: sentences that repeat with their
separators varying ("S. S.\n\nS. S.\n\n…"), so no stretch of tokens is periodic. When it has
dropped `STOP_AFTER_DROPPED` pieces in a row, the answer is `repeating` and the engine stops the
row (finish reason `repetition`), the text ending after the last piece it kept.
"""

from __future__ import annotations

from .options import GenerationOptions
from .redundancy import SentenceFilter

STOP_AFTER_DROPPED = 3


class AnswerText:
    """Cleans and strips one answer's text incrementally; `text` is what has been returned."""

    def __init__(self, options: GenerationOptions) -> None:
        self.stop_hold = max((len(s) for s in options.stop), default=1) - 1
        self.filter = SentenceFilter() if options.dedupe_sentences else None
        self.passed = 0  # characters of the raw text handed to the filter
        self.space = ""  # whitespace held back: it may be the answer's end, which is stripped
        self.text = ""
        self.held_max = 0

    @property
    def repeating(self) -> bool:
        """Whether the last STOP_AFTER_DROPPED pieces all repeated earlier text."""
        return self.filter is not None and self.filter.dropped_run >= STOP_AFTER_DROPPED

    def end_repeating(self) -> str:
        """The rest of the answer when generation stops because it is `repeating`."""
        return self.emit(self.filter.end_here(), last=True)

    @property
    def removed(self) -> int:
        return self.filter.removed if self.filter else 0

    @property
    def settled(self) -> int:
        """Characters of the raw text whose fate is decided: returned, or dropped (by the sentence
        filter or as whitespace at the answer's start); what is still held back is not."""
        return self.passed - self.filter_held() - len(self.space)

    def advance(self, raw: str, final: int) -> str:
        """New answer text, given all text decoded so far and how many of its characters no loop
        can remove (`final`)."""
        upto = max(self.passed, min(final, len(raw) - self.stop_hold))
        out = self.emit(self.clean(raw[self.passed : upto]), last=False)
        self.held_max = max(self.held_max, len(raw) - self.passed + len(self.space) + self.filter_held())
        return out

    def close(self, raw: str, end: int) -> str:
        """The rest of the answer: the raw text ends at `end` (a stop string or a loop cut)."""
        piece = self.clean(raw[self.passed : max(end, self.passed)])
        return self.emit(piece + (self.filter.close() if self.filter else ""), last=True)

    def clean(self, piece: str) -> str:
        self.passed += len(piece)
        return self.filter.feed(piece) if self.filter else piece

    def filter_held(self) -> int:
        return self.filter.held if self.filter else 0

    def emit(self, piece: str, last: bool) -> str:
        piece = self.space + piece
        if not self.text:
            piece = piece.lstrip()
        body = piece.rstrip()
        self.space = "" if last else piece[len(body):]
        self.text += body
        return body
