"""Side by side: one question answered under several decoding settings, for `smolsight compare-presets`.

The field report's settings (`seed`) let answers loop to the token limit. This shows what each
fix buys on the user's own input: the loop guard alone (`guard-only`: seed's settings with the
guard switched on and nothing else, so everything before a loop is unchanged), and `precise`
(guard plus a mild repetition penalty). Every column runs the same `Request` on its own, so each
column's time is the time of one answer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from ..console import format_table
from ..errors import SmolsightError
from ..engine.options import PRESETS, GenerationOptions, resolve_options
from ..engine.redundancy import RepetitionMetrics

if TYPE_CHECKING:
    from ..engine import Engine, Request, Result

# Column name -> (preset, fixed overrides). Each preset is a column of its own; guard-only is seed + guard.
COLUMNS: dict[str, tuple[str, dict]] = {
    "seed": ("seed", {}),
    "guard-only": ("seed", {"loop_guard": True}),
    **{name: (name, {}) for name in PRESETS if name != "seed"},
}
# Every repetition metric, `looped` first: derived, so a new metric shows up without an edit here.
METRIC_ROWS = ("looped", *(f.name for f in fields(RepetitionMetrics) if f.name != "looped"))
PREVIEW_CHARS = 160


@dataclass
class Column:
    name: str
    options: GenerationOptions
    result: Result

    def to_dict(self) -> dict:
        return {"name": self.name, "options": self.options.to_dict(), "result": self.result.to_dict()}


def plan(spec: str, overrides: dict) -> list[tuple[str, GenerationOptions]]:
    """'seed,guard-only,precise' -> (name, options) per column, every name and knob checked
    before a model is loaded."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise SmolsightError(f"unknown preset(s) {', '.join(unknown)} in --presets; choose from {', '.join(COLUMNS)}")
    if not names:
        raise SmolsightError(f"--presets is empty; give some of {', '.join(COLUMNS)}")
    if len(set(names)) != len(names):
        raise SmolsightError(f"--presets names a preset twice: {spec}")
    return [(name, column_options(name, overrides)) for name in names]


def column_options(name: str, overrides: dict) -> GenerationOptions:
    """The column's preset and fixed changes, then the user's knobs (None = keep) on top, alike for every column."""
    preset, fixed = COLUMNS[name]
    return resolve_options(preset, **{**fixed, **{k: v for k, v in overrides.items() if v is not None}})


def compare(engine: Engine, request: Request, columns: list[tuple[str, GenerationOptions]]) -> list[Column]:
    """Answer `request` once per column, one after another.

    A one-token warm-up first loads the media and fills the engine's vision cache and the
    framework's lazy state, so the first column is not charged for what all columns share.
    """
    warm_up = replace(columns[0][1], max_new_tokens=1, min_new_tokens=0)
    engine.ask_batch([replace(request, options=warm_up)])
    return [Column(name, options, engine.ask_batch([replace(request, options=options)])[0]) for name, options in columns]


def columns_table(columns: list[Column]) -> str:
    """One row per measure, one column per preset, then a preview of each answer."""
    rows: list[tuple[str, list[str]]] = [
        ("tokens generated", [str(c.result.output_tokens) for c in columns]),
        ("time (s)", [f"{c.result.total_s:.2f}" for c in columns]),
        ("first token (s)", [f"{c.result.ttft_s:.2f}" for c in columns]),
        ("tokens/s", [f"{c.result.tokens_per_s:.1f}" for c in columns]),
        ("finish reason", [c.result.finish_reason for c in columns]),
        ("removed chars", [str(c.result.removed_chars) for c in columns]),
        ("held back chars", [str(c.result.held_back_chars) for c in columns]),
        *((metric, [show(c.result.metrics.get(metric)) for c in columns]) for metric in METRIC_ROWS),
    ]
    names = [c.name for c in columns]
    lines = [format_table(["", *names], [[label, *cells] for label, cells in rows], right=tuple(range(1, len(names) + 1)))]
    for column in columns:
        lines += ["", f"[{column.name}] {preview(column.result.text)}"]
    return "\n".join(lines)


def show(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def preview(text: str) -> str:
    """The answer on one line, cut to PREVIEW_CHARS (a looped seed answer can run to 5000 tokens)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else f"{flat[:PREVIEW_CHARS]}… ({len(flat)} chars)"


def to_json(columns: list[Column]) -> dict:
    return {"columns": [column.to_dict() for column in columns]}
