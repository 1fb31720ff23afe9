"""Text-level redundancy: find and drop repeated sentences, and measure how loopy an answer is.

SmolVLM2 answers often get the gist right and then pad it with text they already said: a clause
such as "这使得花朵显得更加美丽" recurring in sentence after sentence, or a sentence looping
verbatim until the token limit. The token-level loop guard stops generation early; this module
cleans what came back and scores it, so evaluations can count redundancy instead of eyeballing it.

Everything here is pure Python on strings: no model, no tokenizer.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from difflib import SequenceMatcher

from ..text import CJK

# A piece needs this many word units (CJK characters or words) to count as a repeat: shorter
# ones ("是的，", "However,", list markers) recur in ordinary writing.
MIN_UNITS = 5
# Templated repetition: this many pieces in a row, equal once numbers and names are masked,
# each naming someone or something else ("Q: What is the capital of Spain? A: Madrid." …): the
# third and later are dropped. Pieces that differ only in numbers are data (a list of readings)
# and are never dropped this way.
TEMPLATE_RUN = 3
# A paraphrase must carry this many content words, all said before in one earlier piece.
MIN_CONTENT = 3
_STOP_WORDS = frozenset(
    "a an the is are was were be been being this that these those it its of to in on at by for with and or as "
    "from into there here which who whom what when where how also very more most some any can will would should "
    "could may might has have had do does did just so such than then their they them one because".split()
)
_CJK_FUNCTION = frozenset("的了是在也都很更加着和与及这那其之得地使让被把个")
_WORD = re.compile(r"[^\W_]+")

# Looping: a repeat must be this many characters long and cover this share of the text...
MIN_LOOP_CHARS = 32
LOOP_SHARE = 0.3
# ...and a contiguous loop, or a recurring clause, must show up at least this many times.
MIN_LOOP_REPEATS = 3

# Units: a CJK character, a run of other letters/digits (a word), or any other visible character.
_UNIT = re.compile(rf"[{CJK}]|[^\W_{CJK}]+|\S")
_LINE = re.compile(r"[^\n]*\n|[^\n]+")
# Where a clause ends. CJK marks end one anywhere; ASCII marks only before whitespace, so
# "3.5", "1,000" and "e.g.x" stay whole.
_BREAK = re.compile(
    r"[。！？；，…]+[”’」』）》\"')\]]*\s*"
    r"|[.!?;,]+[\"')\]]*(?:\s+|$)"
)
# Markdown rules and table separators: "---", "***", "| --- | :-: |".
_RULE = re.compile(r"[|:+\s]*(?:[-=*_][|:+\s]*){3,}")
# A piece that is only a list marker ("1. ", "b) ", "Step 2. "): it belongs to the item after it.
_MARKER = re.compile(r"\s*(?:[^\W\d_]+\s+)?(?:\d{1,3}|[A-Za-z])[.)]\s*")
_LEADING_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)]|#+)\s+")
# The same, or its start, in a piece still being written ("2", "2.", "b)", "Step 2."): no content.
_OPENING_MARKER = re.compile(r"^\s*(?:[^\W\d_]+\s+)?(?:[-*+•#]+|\d{1,3}[.)]?|[A-Za-z][.)])(?=\s|$)\s*")
_TERMINAL_END = re.compile(r"([。！？.!?…]+)[”’」』）》\"')\]]*$")
_CLAUSE_END = re.compile(r"[，,；;]+$")
_MENDABLE = re.compile(r"[，,；;]*\s*$")  # what `_mend` may change at the end of a kept piece


@dataclass(frozen=True)
class _Piece:
    text: str
    kind: str  # "text" (a clause or sentence), "row" (markdown table row), "rule" (never removed)


def split_sentences(text: str) -> list[str]:
    """Split `text` into clauses and sentences such that `"".join(result) == text`.

    Pieces end after 。！？；，… (with closing quotes and whitespace), after .!?;, when followed
    by whitespace or the end, and at line breaks. Splitting at commas too is deliberate: a
    padded answer repeats the same clause inside different sentences ("…醒目，这使得花朵显得更加
    美丽。"), which sentence-level splitting would miss. Markdown table rows and rules stay whole
    lines, blank lines stick to the piece before them, and a list marker ("2. ", "Step 2. ")
    sticks to its item, so that dropping a piece drops a whole item or row, never half of one.
    """
    return [piece.text for piece in _segments(text)]


def remove_repeated_sentences(text: str, similarity: float = 0.9) -> tuple[str, int]:
    """Drop every clause or sentence that repeats an earlier one; return (text, characters removed).

    Pieces (see `split_sentences`) are compared on their words: case, width, whitespace,
    punctuation and list markers are ignored. A piece is a repeat when it equals an earlier
    piece, or when `difflib.SequenceMatcher` over the words (CJK characters count one each)
    gives a ratio >= `similarity`, both carry the same numbers (so "row 3: 35 °C" never
    swallows "row 4: 36 °C") and the later adds no content word (so "a blue truck" never goes
    for being like "a red truck", nor "is not open" for being like "is open"). Pieces under `MIN_UNITS` words are never dropped, table rows only
    when their cells are identical, and rules ("---") never, so lists and tables survive.

    When a dropped sentence leaves its predecessor ending in a comma, the comma becomes the
    dropped sentence's full stop ("醒目，" -> "醒目。"). Text without repeats comes back
    byte-identical. The count is `len(text) - len(cleaned)`. This is `SentenceFilter` fed the
    whole text at once.
    """
    cleaner = SentenceFilter(similarity)
    cleaned = cleaner.feed(text) + cleaner.close()
    return cleaned, len(text) - len(cleaned)


class SentenceFilter:
    """`remove_repeated_sentences` for text that arrives a little at a time, as it is generated:
    `feed` returns the cleaned text that can no longer change, `close` the rest.

    Besides repeats, it drops templated repetition (`TEMPLATE_RUN`) and paraphrases: a piece
    whose content words (stop words aside) were all said in one earlier piece, numbers included,
    so a new colour, object, number or negation always survives.

    Held back, because it may still change: the piece being written while it might still turn
    out a repeat (its content words so far were all in some earlier piece, or it could be the
    third of a template), and the end of the last kept piece (a clause mark and spacing that
    dropping the next piece would mend). A piece being written that has said something new can
    no longer be dropped, so it is returned as it grows, and kept whatever follows; this makes
    what is returned depend on how the text was cut into feeds only in that it can never take
    text back.
    """

    def __init__(self, similarity: float = 0.9) -> None:
        if not 0.0 < similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {similarity}")
        self.history = _History(similarity)
        self.templates = _Templates()
        self.seen: list[frozenset[str]] = []  # content words of every piece judged
        self.pending = ""  # text not judged yet; starts where a piece starts
        self.mid_line = False  # pending starts inside a line of text (not at a row or rule)
        self.early = 0  # characters of the piece being written already returned: it is kept
        self.last = ""  # the last kept piece, whose end may still be mended
        self.last_out = 0  # characters of `last` already returned
        self.dropped_last = False
        self.dropped_run = 0  # pieces with words dropped in a row, lately
        self.trailing = ""  # the text's own trailing whitespace, restored when its end is dropped
        self.fed = 0
        self.out = 0

    @property
    def held(self) -> int:
        """Characters fed and not returned (nor dropped) yet."""
        return len(self.pending) - self.early + len(self.last) - self.last_out

    @property
    def removed(self) -> int:
        """Characters dropped so far (of the text judged)."""
        return self.fed - self.out - self.held

    def feed(self, text: str) -> str:
        self.fed += len(text)
        self.trailing = text[len(text.rstrip()):] if text.strip() else self.trailing + text
        self.pending += text
        pieces = _segments(self.pending, self.mid_line)
        words_at = [i for i, piece in enumerate(pieces) if piece.text.strip()]
        if not words_at:
            return ""
        return self._judge(pieces[: words_at[-1]]) + self._stream(pieces[words_at[-1]])

    def close(self) -> str:
        out = self._judge(_segments(self.pending, self.mid_line))
        if self.dropped_last:  # the dropped tail's whitespace is gone; restore the text's own ending
            self.last = self.last.rstrip() + self.trailing
        return out + self._release(len(self.last))

    def end_here(self) -> str:
        """Close, dropping what is left of the piece being written past what was returned:
        generation stops in the middle of it (see `AnswerText.repeating`)."""
        self.pending = self.pending[: self.early]
        return self.close()

    def _judge(self, pieces: list[_Piece]) -> str:
        out = ""
        for piece in pieces:
            self.pending = self.pending[len(piece.text):]
            self.mid_line = not piece.text.endswith("\n")
            words = _key_words(piece)
            self.dropped_last = words is not None and self.history.repeats(piece.kind, words)
            if piece.kind == "text" and not self.dropped_last:
                self.dropped_last = self.templates.drops(piece.text, words) or self.history.paraphrases(piece.text, words)
            if words is not None:
                self.seen.append(_content(words))
            if self.early:  # returned while it was written: kept
                self.dropped_last = self.templates.dropping = False
            if words is not None:
                self.dropped_run = self.dropped_run + 1 if self.dropped_last else 0
            if self.dropped_last:
                self.last = _mend(self.last, piece.text)
            else:
                out += self._release(len(self.last))
                self.last, self.last_out, self.early = piece.text, self.early, 0
            out += self._release(len(self.last) - len(_MENDABLE.search(self.last).group()))
        return out

    def _stream(self, piece: _Piece) -> str:
        """The piece being written, as far as it goes, once it can no longer be dropped."""
        if not self.early and self._may_repeat(piece.text):
            return ""
        upto = len(piece.text) - len(_MENDABLE.search(piece.text).group())
        if upto <= self.early:
            return ""
        out = self._release(len(self.last)) + piece.text[self.early : upto]  # `last` is final: the next piece stays
        self.out += upto - self.early
        self.early = upto
        return out

    def _may_repeat(self, text: str) -> bool:
        """Whether a piece being written could still be dropped: it might become the third of a
        template, or every content word it has so far (the last word may be unfinished) was in
        one earlier piece — all of repeats, near repeats and paraphrases need that."""
        if self.templates.dropping or self.templates.run >= TEMPLATE_RUN - 1:
            return True
        content = _content(_units(_OPENING_MARKER.sub("", text, count=1))[:-1])
        return not content or any(content <= earlier for earlier in self.seen)

    def _release(self, upto: int) -> str:
        """`last` up to `upto` (never less than is out already)."""
        piece = self.last[self.last_out : max(upto, self.last_out)]
        self.last_out += len(piece)
        self.out += len(piece)
        return piece


@dataclass(frozen=True)
class RepetitionMetrics:
    """How repetitive an answer is; every share is in [0, 1]."""

    distinct_1: float
    distinct_2: float
    distinct_3: float
    distinct_4: float
    repeated_ngram_ratio: float
    longest_repeat_share: float
    repeated_clause_share: float
    looped: bool

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def repetition_metrics(text: str, tokens: Sequence[Hashable] | None = None) -> RepetitionMetrics:
    """Score repetition in `text` (and its `tokens`, when given).

    Units for the n-gram measures are `tokens` when given; otherwise the text (NFKC, casefolded)
    read as: each CJK character one unit, each run of other letters/digits one unit (a word),
    each other visible character one unit (punctuation). Chinese is thus counted by character
    and English by word, and a text of colons has many units rather than none.

    - distinct_n: unique n-grams / all n-grams, n = 1..4 (0 when there are none).
    - repeated_ngram_ratio: share of 4-gram positions whose 4-gram occurred at an earlier
      position (overlap allowed); by construction it equals 1 - distinct_4.
    - longest_repeat_share: length of the longest substring occurring at least twice, the two
      occurrences allowed to overlap, over len(text), in characters.
    - repeated_clause_share: characters in clauses that equal an earlier clause (as
      `remove_repeated_sentences` compares them, exact only) over len(text).
    - looped: any of (a) the text ends in >= MIN_LOOP_REPEATS contiguous copies of one unit
      spanning >= MIN_LOOP_CHARS and >= LOOP_SHARE of the text; (b) longest_repeat_share
      >= LOOP_SHARE with the repeat >= MIN_LOOP_CHARS long (a loop anywhere: k contiguous
      copies make a repeat of k-1 copies); (c) repeated_clause_share >= LOOP_SHARE with some
      clause occurring >= MIN_LOOP_REPEATS times (a clause recurring in sentence after sentence).
    """
    units = list(tokens) if tokens is not None else _units(text)
    distinct = [_distinct(units, n) for n in range(1, 5)]
    longest = _longest_repeat(text)
    longest_share = longest / len(text) if text else 0.0
    clause_chars, top_count = _repeated_clauses(text)
    clause_share = clause_chars / len(text) if text else 0.0
    looped = (
        _ends_in_loop(text)
        or (longest_share >= LOOP_SHARE and longest >= MIN_LOOP_CHARS)
        or (clause_share >= LOOP_SHARE and top_count >= MIN_LOOP_REPEATS)
    )
    return RepetitionMetrics(
        distinct_1=distinct[0],
        distinct_2=distinct[1],
        distinct_3=distinct[2],
        distinct_4=distinct[3],
        repeated_ngram_ratio=1.0 - distinct[3] if len(units) >= 4 else 0.0,
        longest_repeat_share=longest_share,
        repeated_clause_share=clause_share,
        looped=looped,
    )


# --- splitting ---------------------------------------------------------------------------------


def _segments(text: str, mid_line: bool = False) -> list[_Piece]:
    """Pieces of `text`; `mid_line`: its first line continues a line of text already split."""
    pieces: list[_Piece] = []
    for index, line in enumerate(_LINE.findall(text)):
        body = line.strip()
        if index == 0 and mid_line:
            pieces.extend(_Piece(clause, "text") for clause in _clauses(line))
        elif _RULE.fullmatch(body):
            pieces.append(_Piece(line, "rule"))
        elif body.startswith("|"):
            pieces.append(_Piece(line, "row"))
        else:
            pieces.extend(_Piece(clause, "text") for clause in _clauses(line))
    return _merge(pieces)


def _clauses(line: str) -> Iterator[str]:
    start = 0
    for match in _BREAK.finditer(line):
        yield line[start:match.end()]
        start = match.end()
    if start < len(line):
        yield line[start:]


def _merge(pieces: list[_Piece]) -> list[_Piece]:
    """Attach blank lines to the piece before them and list markers to the piece after them."""
    merged: list[_Piece] = []
    marker = ""
    for piece in pieces:
        if merged and not marker and not piece.text.strip():
            merged[-1] = replace(merged[-1], text=merged[-1].text + piece.text)
            continue
        if piece.kind == "text" and _MARKER.fullmatch(piece.text):
            marker += piece.text
            continue
        merged.append(_Piece(marker + piece.text, piece.kind))
        marker = ""
    if marker:
        merged.append(_Piece(marker, "text"))
    return merged


# --- comparing ---------------------------------------------------------------------------------


def _units(text: str) -> list[str]:
    return _UNIT.findall(unicodedata.normalize("NFKC", text).casefold())


def _key_words(piece: _Piece) -> tuple[str, ...] | None:
    """The words a piece is compared by, or None when it must never be dropped."""
    if piece.kind == "rule":
        return None
    if piece.kind == "row":  # keep cell boundaries: "| a b | c |" differs from "| a | b c |"
        words = [w for w in _units(piece.text) if w[0].isalnum() or w == "|"]
    else:
        words = [w for w in _units(_LEADING_MARKER.sub("", piece.text, count=1)) if w[0].isalnum()]
    if sum(w != "|" for w in words) < MIN_UNITS:
        return None
    return tuple(words)


class _History:
    """Pieces seen so far: a set for exact repeats, and kept prose bucketed by (length, numbers)
    for near repeats, so a piece is only matched against the few it could possibly match."""

    def __init__(self, similarity: float) -> None:
        self.similarity = similarity
        self.exact: set[tuple[str, tuple[str, ...]]] = set()
        self.buckets: dict[tuple[int, tuple[str, ...]], list[tuple[str, ...]]] = {}
        self.contents: list[frozenset[str]] = []

    def repeats(self, kind: str, words: tuple[str, ...]) -> bool:
        """Whether a piece repeats an earlier one; records it either way. Rows: exact only."""
        if (kind, words) in self.exact:
            return True
        self.exact.add((kind, words))
        if kind != "text":
            return False
        numbers = tuple(w for w in words if any(c.isdigit() for c in w))
        if self._near(words, numbers):
            return True
        self.buckets.setdefault((len(words), numbers), []).append(words)
        return False

    def paraphrases(self, text: str, words: tuple[str, ...] | None) -> bool:
        """Whether a piece's content words were all in one earlier piece; records it if not."""
        if words is None:
            return False
        content = _content_words(text)
        if len(content) >= MIN_CONTENT and any(content <= earlier for earlier in self.contents):
            return True
        self.contents.append(content)
        return False

    def _near(self, words: tuple[str, ...], numbers: tuple[str, ...]) -> bool:
        # ratio = 2M / (a + b) <= 2 min(a, b) / (a + b): only lengths within this window can pass.
        s = self.similarity
        low, high = int(len(words) * s / (2 - s)), int(len(words) * (2 - s) / s) + 1
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(words)
        for length in range(low, high + 1):
            for earlier in self.buckets.get((length, numbers), ()):
                matcher.set_seq1(earlier)
                if matcher.quick_ratio() >= s and matcher.ratio() >= s and _content(words) <= _content(earlier):
                    return True
        return False


class _Templates:
    """Runs of pieces equal once numbers and names are masked, each with other names."""

    def __init__(self) -> None:
        self.masked: tuple[str, ...] | None = None
        self.names: tuple[str, ...] = ()
        self.run = 0
        self.dropping = False

    def drops(self, text: str, words: tuple[str, ...] | None) -> bool:
        """Whether this piece goes: the third or later of a run, or a short piece (an answer
        such as "A: Madrid.") right after a dropped one."""
        if words is None:
            return self.dropping
        masked, names = _masked(text)
        self.run = self.run + 1 if masked == self.masked and names != self.names else 1
        self.masked, self.names = masked, names
        self.dropping = self.run >= TEMPLATE_RUN
        return self.dropping


def _masked(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(words with numbers as '#' and names as 'N', the names): a name is a capitalised word
    other than the first, so "Red car…" keeps its colour."""
    words = _WORD.findall(_LEADING_MARKER.sub("", text, count=1))
    names = tuple(w for w in words[1:] if w[0].isupper())
    masked = tuple("#" if any(c.isdigit() for c in w) else "N" if i and w[0].isupper() else w.casefold()
                   for i, w in enumerate(words))  # fmt: skip
    return masked, names


def _content_words(text: str) -> frozenset[str]:
    return _content(_units(text))


def _content(units) -> frozenset[str]:
    """Words that carry meaning: stop words and CJK function characters left out, a plural 's' dropped."""
    content = set()
    for unit in units:
        if not unit[0].isalnum() or unit in _STOP_WORDS or unit in _CJK_FUNCTION:
            continue
        content.add(unit[:-1] if len(unit) > 3 and unit.endswith("s") and unit.isalpha() else unit)
    return frozenset(content)


def _mend(kept: str, dropped: str) -> str:
    """`kept` (the piece before `dropped`) with its end mended: punctuation and line breaks."""
    body = kept.rstrip()
    spacing = kept[len(body):]
    dropped_spacing = dropped[len(dropped.rstrip()):]
    terminal = _TERMINAL_END.search(dropped.rstrip())
    if terminal and _CLAUSE_END.search(body):
        body = _CLAUSE_END.sub(terminal.group(1), body)
    if dropped_spacing.count("\n") > spacing.count("\n"):
        spacing = dropped_spacing
    return body + spacing


def _repeated_clauses(text: str) -> tuple[int, int]:
    """Characters in clauses equal to an earlier clause, and the top clause's occurrence count."""
    counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
    repeated = 0
    for piece in _segments(text):
        words = _key_words(piece)
        if words is None:
            continue
        key = (piece.kind, words)
        if counts[key]:
            repeated += len(piece.text.strip())
        counts[key] += 1
    return repeated, max(counts.values(), default=0)


# --- measuring ---------------------------------------------------------------------------------


def _distinct(units: Sequence[Hashable], n: int) -> float:
    grams = list(zip(*(units[i:] for i in range(n)), strict=False))  # shifted copies: the shortest ends it
    return len(set(grams)) / len(grams) if grams else 0.0


_MOD = (1 << 61) - 1
_BASE = 1_000_003


def _longest_repeat(text: str) -> int:
    """Length of the longest substring that occurs twice (overlap allowed), in O(n log n).

    Binary search on the length: if some substring of length L repeats, so does one of L - 1.
    Each length is checked with a polynomial rolling hash, and hash hits are confirmed by
    comparing the strings, so a collision can never report a repeat that is not there.
    """
    n = len(text)
    prefix = [0] * (n + 1)
    powers = [1] * (n + 1)
    for i, char in enumerate(text):
        prefix[i + 1] = (prefix[i] * _BASE + ord(char)) % _MOD
        powers[i + 1] = powers[i] * _BASE % _MOD

    def repeats(length: int) -> bool:
        first: dict[int, int] = {}
        power = powers[length]
        for i in range(n - length + 1):
            h = (prefix[i + length] - prefix[i] * power) % _MOD
            j = first.setdefault(h, i)
            if j != i and text[j:j + length] == text[i:i + length]:
                return True
        return False

    low, high = 0, max(n - 1, 0)  # low always repeats (the empty string); high is the most possible
    while low < high:
        middle = (low + high + 1) // 2
        if repeats(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _ends_in_loop(text: str) -> bool:
    """Whether the text ends in >= MIN_LOOP_REPEATS contiguous copies of one unit (any period).

    For each period p, walk back from the end while each character equals the one p before it;
    a truncated last copy counts as part of the run. Ordinary text stops the walk at once, so
    this is close to linear in practice.
    """
    body = text.rstrip()
    n = len(body)
    needed = max(MIN_LOOP_CHARS, LOOP_SHARE * n)
    for period in range(1, n // MIN_LOOP_REPEATS + 1):
        k = n - 1
        while k >= period and body[k] == body[k - period]:
            k -= 1
        run = n - 1 - k + period
        if run >= MIN_LOOP_REPEATS * period and run >= needed:
            return True
    return False
