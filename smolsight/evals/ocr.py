"""OCR alone on a suite's reading cases, for `smolsight ocr-eval`: how often each OCR engine reads
the text exactly, its ANLS, per kind of case and language, and the seconds it takes per image.

This is the one accuracy in smolsight measured on real weights without downloading a model: the
OCR engines ship theirs (docs/eval.md has the table and why `rapidocr` is the default). Engines
take turns on each image (the order alternates), each read is timed without the cache, and each
engine reads one image untimed first, so loading is not counted; cost figures are medians.

Exact match compares the text in the scorers' normal form (NFKC, case folded, spaces beside
Chinese characters dropped); "exact, spaces ignored" also forgives missing spaces between Latin
words, which PP-OCR often drops ("ModelNEU-505") and which rarely change what text means.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..console import format_table, log
from ..engine import ocr
from ..engine.media import load_image
from ..errors import SmolsightError
from ..text import has_cjk, normalise
from .scoring.answers import expected_strings
from .scoring.text import anls
from .suite import Case, Suite, select_cases


@dataclass(frozen=True)
class Reading:
    """One engine's reading of one case; `lang` is the language of the text read."""

    case: str
    kind: str
    lang: str
    engine: str
    text: str
    expected: str
    exact: bool
    exact_spaceless: bool
    anls: float
    seconds: float


@dataclass
class OcrRun:
    readings: list[Reading]
    engines: list[str]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"meta": self.meta, "engines": self.engines, "readings": [asdict(r) for r in self.readings]}


def reading_cases(suite: Suite, scenarios: Iterable[str] | None = None, limit: int | None = None) -> list[Case]:
    """The cases that ask what the text in their images is (task `read`, not a video)."""
    cases = [c for c in select_cases(suite, scenarios) if c.task == "read" and not c.is_video][:limit]
    if not cases:
        raise SmolsightError(f"suite {suite.name} has no reading cases (task: read) on images; draw some: smolsight synth DIR --scenario text")
    return cases


def case_kind(case: Case) -> str:
    """'text_hard/gauge', or the scenario alone when the case does not say its kind."""
    kind = (case.meta or {}).get("kind")
    return f"{case.scenario}/{kind}" if kind else case.scenario


def text_language(text: str) -> str:
    """The language of the text to read (not of the question): zh, en, or zh+en for a bilingual sign."""
    latin = re.search(r"[A-Za-z]", text) is not None
    return "zh+en" if has_cjk(text) and latin else "zh" if has_cjk(text) else "en"


def score_reading(text: str, case: Case) -> tuple[bool, bool, float]:
    """(exact, exact with spaces ignored, ANLS) of `text` against the case's expected strings."""
    read = normalise(text, keep_punctuation=True)
    wanted = [normalise(e, keep_punctuation=True) for e in expected_strings(case)]
    exact = read in wanted
    spaceless = read.replace(" ", "") in {w.replace(" ", "") for w in wanted}
    return exact, spaceless, anls(text, expected_strings(case))


def run_ocr_eval(suite: Suite, engines: Iterable[str], scenarios: Iterable[str] | None = None, limit: int | None = None,
                 quiet: bool = False) -> OcrRun:  # fmt: skip
    """Every reading case read by every engine, interleaved; see the module docstring."""
    engines = list(engines)
    cases = reading_cases(suite, scenarios, limit)
    load_before = [round(x, 2) for x in os.getloadavg()]
    first = [load_image(m) for m in cases[0].media]
    for name in engines:
        ocr.read_media(first, engine=name)  # loads the engine: not timed
    readings = []
    for number, case in enumerate(cases):
        images = [load_image(m) for m in case.media]
        for name in engines if number % 2 == 0 else reversed(engines):
            readings.append(timed_reading(case, images, name))
        log(f"[{number + 1}/{len(cases)}] {case.id}: " + "; ".join(f"{r.engine} {r.text!r}" for r in readings[-len(engines):]), quiet)
    meta = {"suite": str(suite.path), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    return OcrRun(readings, engines, meta)


def timed_reading(case: Case, images: list, engine: str) -> Reading:
    start = time.perf_counter()
    lines = [line for image in images for line in ocr.read_image(image, engine, cached=False)]
    seconds = time.perf_counter() - start
    text = ocr.answer_text(lines)
    exact, spaceless, value = score_reading(text, case)
    return Reading(case.id, case_kind(case), text_language(expected_strings(case)[0]), engine, text, expected_strings(case)[0], exact, spaceless, value, seconds)


def accuracy_table(run: OcrRun) -> str:
    """Per kind and language (then all cases), per engine: exact, exact with spaces ignored, ANLS."""
    groups: dict[tuple[str, str], list[Reading]] = {}
    for reading in run.readings:
        groups.setdefault((reading.kind, reading.lang), []).append(reading)
    groups[("all", "")] = run.readings
    headers = ["kind", "lang", "cases"] + [f"{engine} {column}" for engine in run.engines for column in ("exact", "exact no-space", "ANLS")]
    rows = []
    for (kind, lang), readings in groups.items():
        row = [kind, lang, str(len(readings) // len(run.engines))]
        for engine in run.engines:
            mine = [r for r in readings if r.engine == engine]
            row += [percent(r.exact for r in mine), percent(r.exact_spaceless for r in mine), f"{statistics.mean(r.anls for r in mine):.3f}"]
        rows.append(row)
    return format_table(headers, rows, right=tuple(range(2, len(headers))))


def cost_table(run: OcrRun) -> str:
    """Seconds per image, per engine: median, 90th percentile, and the range."""
    rows = []
    for engine in run.engines:
        seconds = sorted(r.seconds for r in run.readings if r.engine == engine)
        p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
        rows.append([engine, str(len(seconds)), f"{statistics.median(seconds):.2f}", f"{p90:.2f}", f"{seconds[0]:.2f}-{seconds[-1]:.2f}"])
    return format_table(["engine", "images", "median s/image", "p90 s/image", "range"], rows, right=(1, 2, 3, 4))


def percent(flags: Iterable[bool]) -> str:
    values = list(flags)
    return f"{100 * sum(values) / len(values):.0f}%"
