"""HTML reports of evaluation runs: one file each, that opens offline and can be mailed around.

Everything is inside the page: thumbnails are JPEG data URIs (a video shows its first and last
frames, so a motion question can be checked by eye), charts are inline SVG, styles are inline.
No scripts, no fonts, no network.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from html import escape
from pathlib import Path

from ..errors import SmolsightError
from ..engine.media import is_video, load_image, load_video
from .results import LOOPS_FAIL, LOOPS_SCORED, CaseResult, Run

THUMB_SIZE = (200, 150)
PALETTE = ("#3b6fb6", "#e07b28", "#4a9a5b", "#a14da0", "#c9413a", "#6b6b6b")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}dl.meta dt{color:#666}dl.meta dd{margin:0}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts svg{background:#fff;border:1px solid #ddd;border-radius:6px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #ddd;padding:5px 7px;vertical-align:top;text-align:left}
th{background:#f0f0f0;position:sticky;top:0}td.num{text-align:right;white-space:nowrap}
td.media img{display:block;max-width:200px;margin-bottom:3px;border-radius:3px}
.answer{max-height:12em;overflow:auto;white-space:pre-wrap;word-break:break-word}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-weight:600;font-size:12px;color:#fff}
.pass{background:#2e8540}.fail{background:#c9302c}.unscored{background:#888}.error{background:#e07b28}.looped{background:#8a4baf}
tr.row-pass{background:#f3faf4}tr.row-fail{background:#fdf3f3}tr.row-error{background:#fff5ea}tr.differs{background:#fff8e1}.small{color:#666;font-size:12px}details summary{cursor:pointer;color:#666;font-size:12px}
"""


# ---------------------------------------------------------------------------------------------
# Pieces


def _data_uri(image) -> str:
    image = image.copy()
    image.thumbnail(THUMB_SIZE)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(media: list[str]) -> list[str]:
    """Data URIs of small JPEGs: one per image, the first and last frames of a video."""
    from PIL import Image

    uris = []
    for path in media:
        if is_video(path):
            video = load_video(path, target_fps=1000.0, max_frames=2)
            uris += [_data_uri(Image.fromarray(frame)) for frame in video.frames]
        else:
            uris.append(_data_uri(load_image(path)))
    return uris


def media_cell(media: list[str]) -> str:
    """Thumbnails, or a note saying why there are none (media moved since the run, say)."""
    if not media:
        return '<td class="media"><span class="small">text only</span></td>'
    try:
        images = "".join(f'<img src="{uri}" alt="{escape(Path(media[0]).name)}">' for uri in thumbnails(media))
    except (SmolsightError, OSError) as exc:
        images = f'<span class="small">no thumbnail: {escape(str(exc))}</span>'
    names = ", ".join(Path(m).name for m in media)
    return f'<td class="media">{images}<span class="small">{escape(names)}</span></td>'


def verdict_badge(passed: bool | None, finish_reason: str = "") -> str:
    if finish_reason == "error":
        return '<span class="badge error">ERROR</span>'
    kind, word = {True: ("pass", "PASS"), False: ("fail", "FAIL"), None: ("unscored", "NOT SCORED")}[passed]
    return f'<span class="badge {kind}">{word}</span>'


def looped_badge(looped: bool) -> str:
    return '<span class="badge looped">LOOPED</span>' if looped else ""


def expected_text(expected) -> str:
    if isinstance(expected, list):
        return ", ".join(str(e) for e in expected)
    return "—" if expected is None else str(expected)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def table(element_id: str, headers: list[str], rows: list[str]) -> str:
    """A table; `rows` are ready-made <tr> elements (cells differ too much to share a builder)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table id="{element_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def bar_chart(
    element_id: str,
    title: str,
    categories: list[str],
    series: list[tuple[str, list[float | None]]],
    label: Callable[[float | None], str],
    top: float | None = None,
) -> str:
    """Horizontal grouped bars as inline SVG: one group per category, one bar per series;
    a legend when there is more than one series. `top` fixes the scale (1.0 for accuracy)."""
    width, left, right, bar, gap, head = 620, 130, 70, 16, 12, 34
    group = bar * len(series) + gap
    legend = 22 if len(series) > 1 else 0
    height = head + group * len(categories) + legend + 6
    peak = top or max((v for _, values in series for v in values if v), default=1.0) or 1.0
    scale = (width - left - right) / peak
    parts = [f'<text x="10" y="20" font-size="15" font-weight="600">{escape(title)}</text>']
    for i, category in enumerate(categories):
        y0 = head + i * group
        parts.append(f'<text x="{left - 8}" y="{y0 + bar * len(series) / 2 + 4}" text-anchor="end" font-size="12">{escape(category)}</text>')
        for j, (name, values) in enumerate(series):
            value, y = values[i], y0 + j * bar
            length = max(0.0, (value or 0) * scale)
            tip = escape(f"{name}: {category}: {label(value)}")
            parts.append(f'<rect class="bar" x="{left}" y="{y}" width="{length:.1f}" height="{bar - 2}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{tip}</title></rect>'
                         f'<text x="{left + length + 4:.1f}" y="{y + bar - 4}" font-size="11">{escape(label(value))}</text>')  # fmt: skip
    if legend:
        x, y = left, height - legend + 8
        for j, (name, _) in enumerate(series):
            parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                         f'<text x="{x + 14}" y="{y + 9}" font-size="12">{escape(name)}</text>')  # fmt: skip
            x += 24 + 7 * len(name)
    body = "".join(parts)
    return (f'<svg id="{element_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">{body}</svg>')  # fmt: skip


def charts(categories: list[str], series: list[tuple[str, dict]]) -> str:
    """The accuracy and latency charts, from per-scenario stats of one or more runs."""
    def values(key: str) -> list[tuple[str, list[float | None]]]:
        return [(name, [(stats.get(c) or {}).get(key) for c in categories]) for name, stats in series]

    return (f'<section id="charts"><h2>Charts</h2><div class="charts">'
            f'{bar_chart("chart-accuracy", "Accuracy per scenario", categories, values("accuracy"), percent, 1.0)}'
            f'{bar_chart("chart-latency", "Mean latency per scenario", categories, values("mean_latency_s"), seconds)}'
            f"</div></section>")  # fmt: skip


def stats_cells(s: dict | None) -> str:
    if s is None:
        return '<td colspan="7">not in this run</td>'
    numbers = [f"{s['passed']}/{s['scored']}", percent(s["accuracy"]),
               "n/a" if s["mean_score"] is None else f"{s['mean_score']:.2f}", seconds(s["mean_latency_s"]),
               seconds(s["p90_latency_s"]), "—" if s["mean_output_tokens"] is None else f"{s['mean_output_tokens']:.0f}",
               f"{s['looped']}" + (f" ({s['errors']} errors)" if s["errors"] else "")]  # fmt: skip
    return "".join(f'<td class="num">{escape(n)}</td>' for n in numbers)


STATS_HEADERS = ["passed", "accuracy", "mean score", "mean latency", "p90 latency", "mean out tokens", "looped"]


def meta_list(meta: dict) -> str:
    runtime = meta.get("runtime") or {}
    items = {
        "suite": f"{meta.get('suite_name')} ({meta.get('suite')})", "model": meta.get("model"),
        "preset": meta.get("preset"), "prompt style": meta.get("prompt_style"),
        "runtime": ", ".join(f"{k}={v}" for k, v in runtime.items() if k != "model") or "—",
        "batch size": meta.get("batch_size"),
        "looped answers": {True: LOOPS_FAIL, False: LOOPS_SCORED}.get(meta.get("loops_fail"), "—"),
        "date": meta.get("date"), "smolsight": meta.get("smolsight"),
    }  # fmt: skip
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items.items())
    options = ", ".join(f"{k}={v}" for k, v in (meta.get("options") or {}).items())
    return f'<dl class="meta">{rows}</dl><details><summary>generation options</summary><p class="small">{escape(options)}</p></details>'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# One run


def answer_cell(case: CaseResult) -> str:
    text = f'<div class="answer">{escape(case.answer) or "<i>(empty)</i>"}</div>'
    if case.raw_answer and case.raw_answer.strip() != case.answer:
        text += (f"<details><summary>as generated ({len(case.raw_answer)} chars, {escape(case.finish_reason)})</summary>"
                 f'<div class="answer">{escape(case.raw_answer)}</div></details>')  # fmt: skip
    return f"<td>{text}</td>"


def case_row(case: CaseResult) -> str:
    metrics = case.metrics
    repetition = (f'{looped_badge(bool(metrics.get("looped")))}<div class="small">distinct-2 {metrics.get("distinct_2", 0):.2f}<br>'
                  f'repeated n-grams {metrics.get("repeated_ngram_ratio", 0):.2f}</div>') if metrics else "—"  # fmt: skip
    verdict = "error" if case.finish_reason == "error" else {True: "pass", False: "fail", None: "unscored"}[case.passed]
    return (f'<tr class="case row-{verdict}" id="case-{escape(case.id)}">{media_cell(case.media)}'
            f'<td><b>{escape(case.id)}</b><div class="small">{escape(case.scenario)} · {escape(str(case.task))} · {escape(case.lang)}</div></td>'
            f"<td>{escape(case.prompt)}</td>{answer_cell(case)}"
            f'<td>{escape(expected_text(case.expected))}<div class="small">{escape(case.answer_type)}</div></td>'
            f"<td>{verdict_badge(case.passed, case.finish_reason)}</td>"
            f'<td>{"" if case.score is None else f"{case.score:.2f}"}<div class="small">{escape(case.detail)}</div></td>'
            f'<td class="num">{seconds(case.latency_s)}<div class="small">first token {seconds(case.ttft_s)}</div></td>'
            f'<td class="num">{case.input_tokens} in<br>{case.output_tokens} out<div class="small">{escape(case.finish_reason)}</div></td>'
            f"<td>{repetition}</td></tr>")  # fmt: skip


def render_run(run: Run) -> str:
    """report.html: settings, headline numbers, charts, per-scenario table, every case."""
    summary = run.summary()
    overall = summary["overall"]
    cards = {
        "accuracy": percent(overall["accuracy"]), "passed / scored": f"{overall['passed']} / {overall['scored']}",
        "mean latency": seconds(overall["mean_latency_s"]), "p90 latency": seconds(overall["p90_latency_s"]),
        "mean output tokens": "—" if overall["mean_output_tokens"] is None else f"{overall['mean_output_tokens']:.0f}",
        "looped answers": str(overall["looped"]), "errors": str(overall["errors"]),
    }  # fmt: skip
    card_html = "".join(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in cards.items())
    scenario_rows = [f"<tr><td>{escape(name)}</td><td class=num>{s['cases']}</td>{stats_cells(s)}</tr>"
                     for name, s in summary["scenarios"].items()]  # fmt: skip
    scenario_rows.append(f"<tr><th>overall</th><td class=num>{overall['cases']}</td>{stats_cells(overall)}</tr>")
    case_headers = ["media", "case", "question", "answer", "expected", "verdict", "score", "latency", "tokens", "repetition"]
    body = (f"<header><h1>Evaluation: {escape(str(run.meta.get('suite_name')))} — {escape(run.label)}</h1>{meta_list(run.meta)}</header>"
            f'<section id="overview"><h2>Overview</h2><div class="cards">{card_html}</div></section>'
            f"{charts(run.scenarios(), [(run.label, summary['scenarios'])])}"
            f'<section id="scenarios"><h2>Per scenario</h2>{table("scenario-table", ["scenario", "cases", *STATS_HEADERS], scenario_rows)}</section>'
            f'<section id="cases"><h2>Cases</h2>{table("case-table", case_headers, [case_row(c) for c in run.cases])}</section>')  # fmt: skip
    return page(f"smolsight eval — {run.label}", body)


# ---------------------------------------------------------------------------------------------
# Several runs


def compare_cell(entry: dict | None) -> str:
    if entry is None:
        return "<td>not in this run</td>"
    answer = entry["answer"] if len(entry["answer"]) <= 300 else entry["answer"][:300] + "…"
    return (f"<td>{verdict_badge(entry['passed'])}{looped_badge(entry['looped'])} <span class=small>{seconds(entry['latency_s'])}</span>"
            f'<div class="answer">{escape(answer)}</div></td>')  # fmt: skip


def render_comparison(runs: list[Run], data: dict) -> str:
    """compare.html from `evaluate.comparison` data: legend, charts, per-scenario, per-case."""
    letters = [r["letter"] for r in data["runs"]]
    legend_rows = [f"<tr><td><b>{escape(r['letter'])}</b></td><td>{escape(r['label'])}</td><td>{escape(str(r.get('model')))}</td>"
                   f"<td>{escape(str(r.get('preset')))}</td><td>{escape(str(r.get('prompt_style')))}</td><td>{escape(str(r.get('date')))}</td></tr>"
                   for r in data["runs"]]  # fmt: skip
    scenario_rows = [f"<tr><td>{escape(name)}</td>" + "".join(_compare_stats(cells[letter]) for letter in letters) + "</tr>"
                     for name, cells in data["scenarios"].items()]  # fmt: skip
    scenario_rows.append("<tr><th>overall</th>" + "".join(_compare_stats(data["overall"][letter]) for letter in letters) + "</tr>")
    media = {c.id: c.media for run in runs for c in reversed(run.cases)}
    case_rows = [f'<tr class="{"differs" if case["differs"] else "same"}"><td><b>{escape(case["id"])}</b>'
                 f'<div class="small">{escape(case["scenario"])}</div></td>{media_cell(media[case["id"]])}'
                 f'<td>{escape(expected_text(case["expected"]))}</td>' + "".join(compare_cell(case["runs"][letter]) for letter in letters) + "</tr>"
                 for case in data["cases"]]  # fmt: skip
    series = [(f"{r['letter']}: {r['label']}", {name: cells[r["letter"]] for name, cells in data["scenarios"].items()}) for r in data["runs"]]
    body = (f"<header><h1>Comparison of {len(runs)} runs</h1>"
            f'{table("run-table", ["", "label", "model", "preset", "prompt style", "date"], legend_rows)}</header>'
            f"{charts(list(data['scenarios']), series)}"
            f'<section id="scenarios"><h2>Per scenario (passed/scored, accuracy, mean latency)</h2>'
            f'{table("scenario-table", ["scenario", *letters], scenario_rows)}</section>'
            f'<section id="cases"><h2>Per case (highlighted: verdicts differ)</h2>'
            f'{table("case-table", ["case", "media", "expected", *letters], case_rows)}</section>')  # fmt: skip
    return page("smolsight eval — comparison", body)


def _compare_stats(s: dict | None) -> str:
    if s is None:
        return "<td>—</td>"
    return f'<td class="num">{s["passed"]}/{s["scored"]} · {percent(s["accuracy"])} · {seconds(s["mean_latency_s"])}</td>'
