"""What smolsight prints for people: progress lines on stderr and tables that line up in a
terminal, Chinese text included. Every command and module prints through these."""

from __future__ import annotations

import sys
import unicodedata


def log(message: str, quiet: bool = False) -> None:
    """One progress line on stderr (stdout stays for answers and results), unless quiet."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def display_width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` terminal columns, with … where it was cut."""
    if display_width(text) <= width:
        return text
    out = ""
    for char in text:
        if display_width(out + char) > width - 1:
            break
        out += char
    return out + "…"


def pad(cell: str, width: int, right: bool = False) -> str:
    space = " " * (width - display_width(cell))
    return space + cell if right else cell + space


def format_table(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> str:
    """A plain-text table whose columns line up in a terminal; columns listed in `right` are
    right-aligned (numbers)."""
    table = [headers, *rows]
    widths = [max(display_width(row[i]) for row in table) for i in range(len(headers))]
    lines = [" | ".join(pad(cell, w, i in right) for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
