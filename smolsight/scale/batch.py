"""Batch jobs: one question over a folder of pictures and clips, or a JSONL of media and
questions, answered into a JSONL file that can be resumed.

Input: a folder (every image or video file in it, recursively, each asked `--prompt`; its id is
the path relative to the folder) or a `.jsonl` file whose lines hold `media` (a path or a list
of paths, relative to the file), `prompt` (else `--prompt`) and optionally `id` (else
`line-N`). Output: one JSON line per item, in the order answers finish: id, media, prompt,
answer, finish_reason, token counts, timings, model, and `error` (null, or why the item has no
answer). Ids already in the output file are skipped, so a stopped job picks up where it ended;
delete an item's line to ask it again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..engine.batches import Backend, answer_isolated, error_detail, request_or_error
from ..engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..engine.options import GenerationOptions
from ..errors import SmolsightError
from ..evals.suite import jsonl_lines


@dataclass(frozen=True)
class Item:
    """One question about one picture, several pictures, or one clip."""

    id: str
    media: tuple[str, ...]
    prompt: str


class BatchInputError(SmolsightError):
    """A batch input that cannot be read; the message names the file and line."""


def read_items(source: str | Path, prompt: str | None = None) -> list[Item]:
    """The items of a folder or a JSONL file (see the module docstring), checked before any
    model loads."""
    path = Path(source)
    if path.is_dir():
        return folder_items(path, prompt)
    if path.suffix.lower() == ".jsonl" and path.is_file():
        return jsonl_items(path, prompt)
    raise BatchInputError(f"{source}: give a folder of images and clips, or a .jsonl file of media and prompts")


def folder_items(folder: Path, prompt: str | None) -> list[Item]:
    if not prompt or not prompt.strip():
        raise BatchInputError(f"{folder}: a folder needs the question: --prompt QUESTION")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if not files:
        raise BatchInputError(f"{folder}: no image or video files in it")
    return [Item(str(p.relative_to(folder)), (str(p),), prompt) for p in files]


def jsonl_items(file: Path, prompt: str | None) -> list[Item]:
    items, seen = [], {}
    for number, entry in jsonl_lines(file, file.read_text(encoding="utf-8"), BatchInputError):
        where = f"{file}:{number}"
        item = jsonl_item(entry, file.parent, prompt, where, number)
        if item.id in seen:
            raise BatchInputError(f"{where}: duplicate id {item.id!r}, first used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise BatchInputError(f"{file}: no items in it")
    return items


def jsonl_item(entry, root: Path, prompt: str | None, where: str, number: int) -> Item:
    if not isinstance(entry, dict):
        raise BatchInputError(f"{where}: a line is a JSON object with media and prompt")
    unknown = set(entry) - {"id", "media", "prompt"}
    if unknown:
        raise BatchInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a line has media, prompt and optionally id")
    media = entry.get("media", [])
    media = [media] if isinstance(media, str) else media
    if not isinstance(media, list) or not all(isinstance(m, str) and m for m in media):
        raise BatchInputError(f"{where}: media is a path or a list of paths")
    question = entry.get("prompt", prompt)
    if not isinstance(question, str) or not question.strip():
        raise BatchInputError(f"{where}: no prompt (give it on the line or as --prompt)")
    resolved = tuple(m if m.startswith(("http://", "https://", "data:")) else str(root / m) for m in media)
    return Item(str(entry.get("id", f"line-{number}")), resolved, question)


def done_ids(out: str | Path) -> set[str]:
    """Ids already answered in the output file (a torn last line, from a job that was killed
    while writing, is ignored and its item asked again)."""
    path = Path(out)
    if not path.is_file():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def answer_items(backend: Backend, items: list[Item], options: GenerationOptions, settings: dict) -> list[dict]:
    """One output row per item, answered as one batch; an item that fails gets an error row."""
    requests = [request_or_error(item.media, item.prompt, options, settings) for item in items]
    model = getattr(backend, "name", type(backend).__name__)
    return [row(item, outcome, model) for item, outcome in zip(items, answer_isolated(backend, requests), strict=True)]


def row(item: Item, outcome, model: str) -> dict:
    base = {**asdict(item), "media": list(item.media), "model": model}
    if isinstance(outcome, Exception):
        return {**base, "answer": None, "finish_reason": "error", "input_tokens": 0, "output_tokens": 0,
                "ttft_s": 0.0, "total_s": 0.0, "error": error_detail(outcome)}  # fmt: skip
    return {**base, "answer": outcome.text, "finish_reason": outcome.finish_reason, "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens, "ttft_s": outcome.ttft_s, "total_s": outcome.total_s, "error": None,
            **({"ocr": outcome.ocr} if outcome.ocr is not None else {})}  # fmt: skip


def chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_local(backend: Backend, items: list[Item], options: GenerationOptions, settings: dict, batch_size: int) -> Iterator[dict]:
    """Rows, a batch at a time, in this process."""
    for chunk in chunks(items, batch_size):
        yield from answer_items(backend, chunk, options, settings)


def write_rows(rows: Iterable[dict], out: str | Path, total: int, progress: bool = True) -> dict:
    """Append each row to the output as it comes (flushed: a killed job loses at most the line
    being written), with a progress bar; returns counts."""
    from tqdm import tqdm

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    counts = {"answered": 0, "errors": 0}
    with path.open("a", encoding="utf-8") as file, tqdm(total=total, unit="item", file=sys.stderr, disable=not progress) as bar:
        if torn:  # a line cut off by a killed job stays unreadable on its own line
            file.write("\n")
        for entry in rows:
            file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            file.flush()
            counts["errors" if entry["error"] else "answered"] += 1
            bar.update(1)
            bar.set_postfix_str(f"errors {counts['errors']}" if counts["errors"] else "")
    return counts


def answer_payloads(engine: Backend, payloads: list[dict], options: GenerationOptions, settings: dict) -> list[dict]:
    """`answer_items` for items sent as JSON (what a Ray actor receives)."""
    return answer_items(engine, [Item(p["id"], tuple(p["media"]), p["prompt"]) for p in payloads], options, settings)
