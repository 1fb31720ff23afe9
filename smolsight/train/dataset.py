"""Training data for `smolsight finetune`: conversations or an evaluation suite, checked line by
line, and encoded by the inference path so the trained format is exactly the asked format.

Two formats are read. A conversations file is JSONL, one conversation a line; media paths are
relative to the file and go with the first user turn (images, or one video):

    {"media": ["images/tank3.jpg"], "messages": [
        {"role": "user", "content": "How many shrimp fry are in the tank?"},
        {"role": "assistant", "content": "37"}]}

`id` is optional; a `system` turn may come first; user and assistant turns alternate and the
last one is the assistant's. An evaluation suite (see `smolsight.evals.suite`) is read as is: each
case's prompt (its own, or its task's prompt in the chosen style) and expected answer become one
user/assistant turn. Numbers become their text ("37", "14.7"); text, anls and choice cases give
their (first) expected string, contains_all cases their keywords and trend cases a sentence
naming the direction ("右边温度更高。", "It moves to the left."); cases with nothing to say
(contains_none, free) are skipped and reported.

Encoding: the prompt before each assistant turn is built by `chat_text` and the engine's own
processor call, then the answer follows as " <answer><end_of_utterance>" — what the model would
generate after "Assistant:". Only answer tokens carry labels; prompt and image tokens get
IGNORE so they are left out of the loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SmolsightError
from ..engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_video, load_image
from ..engine.prompts import Message, chat_text
from ..evals.suite import jsonl_lines

if TYPE_CHECKING:
    from ..engine import Engine
    from ..evals.suite import Case, Suite

IGNORE = -100  # label of tokens left out of the loss (torch's cross-entropy ignore_index)
SUITE_MARKS = {"scenario", "answer_type", "expected"}  # keys only a suite case has
CONVERSATION_KEYS = {"id", "media", "messages"}
ANSWERABLE = {"number", "text", "anls", "choice", "contains_all", "trend"}
SIDE_WORDS = {"left": "左", "right": "右", "top": "上", "bottom": "下"}


class DataError(SmolsightError):
    """A training data line that cannot be used; the message names the file and line."""

    code = "invalid_training_data"


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    text: str


@dataclass(frozen=True)
class Example:
    """One training conversation. `where` names its source for error messages; `case` is the
    suite case it came from, so a held-out example can be scored like any evaluation case."""

    id: str
    media: tuple[Path, ...]
    turns: tuple[Turn, ...]
    where: str
    case: Case | None = None


@dataclass(frozen=True)
class TrainingData:
    examples: list[Example]
    skipped: list[str]  # "where: why" of suite cases with no answer to train on
    source: Path


# ---------------------------------------------------------------------------------------------
# Reading


def load_examples(path: str | Path, prompt_style: str = "short") -> TrainingData:
    """Conversations JSONL or a suite (directory, .yaml/.yml, or .jsonl of cases)."""
    source = Path(path)
    if not source.exists():
        raise DataError(f"{source}: no such training data file or directory")
    if source.is_dir() or source.suffix.lower() in (".yaml", ".yml"):
        return examples_from_suite(source, prompt_style)
    if source.suffix.lower() != ".jsonl":
        raise DataError(f"{source}: training data is a conversations .jsonl file or a suite (.yaml, .jsonl or directory)")
    lines = read_jsonl(source)
    if lines and "messages" not in lines[0][1]:
        if not SUITE_MARKS & set(lines[0][1]):
            number, entry = lines[0]
            raise DataError(f"{source}:{number}: neither a conversation (needs 'messages') nor a suite case (needs "
                            f"'scenario' and 'answer_type'); the line has {', '.join(sorted(entry)) or 'no keys'}")  # fmt: skip
        return examples_from_suite(source, prompt_style)
    examples = [conversation(entry, source, number) for number, entry in lines]
    if not examples:
        raise DataError(f"{source}: no conversations in the file")
    check_unique_ids(examples)
    return TrainingData(examples, [], source)


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line."""
    entries = jsonl_lines(path, path.read_text(encoding="utf-8"), DataError)
    for number, entry in entries:
        if not isinstance(entry, dict):
            raise DataError(f"{path}:{number}: a line is a JSON object, not {type(entry).__name__}")
    return entries


def conversation(entry: dict[str, Any], path: Path, number: int) -> Example:
    """One checked conversations line."""
    where = f"{path}:{number}"
    unknown = set(entry) - CONVERSATION_KEYS
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a line has media, messages and optionally id")
    media = media_paths(entry.get("media"), path.parent, where)
    turns = conversation_turns(entry.get("messages"), where)
    return Example(str(entry.get("id", f"line-{number}")), media, turns, where)


def media_paths(value: Any, root: Path, where: str) -> tuple[Path, ...]:
    """Existing image files, or one video file, resolved against the data file's directory."""
    items = [value] if isinstance(value, str) else value
    if not items or not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise DataError(f"{where}: missing media: give \"media\" as a path or a list of paths")
    paths = tuple(p if p.is_absolute() else root / p for p in map(Path, items))
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            known = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
            raise DataError(f"{where}: {path.name}: unknown media type {path.suffix or '(no suffix)'!r}; use one of {known}")
        if not path.is_file():
            raise DataError(f"{where}: media file not found: {path}")
    if len(paths) > 1 and any(is_video(p) for p in paths):
        raise DataError(f"{where}: a video must be a conversation's only media")
    return paths


def conversation_turns(value: Any, where: str) -> tuple[Turn, ...]:
    """Optional system turn, then user/assistant alternating, ending with a non-empty answer."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: \"messages\" must be a non-empty list of {{role, content}} objects")
    turns = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, dict) or set(item) != {"role", "content"} or not isinstance(item["content"], str):
            raise DataError(f"{where}: message {index} must be an object with a role and a string content")
        turns.append(Turn(item["role"], item["content"].strip()))
    skip = 1 if turns[0].role == "system" else 0
    dialogue = turns[skip:]
    for index, turn in enumerate(dialogue):
        expected, number = ("user" if index % 2 == 0 else "assistant"), index + skip + 1
        if turn.role != expected:
            raise DataError(f"{where}: message {number} is {turn.role!r} where {expected!r} was expected (optional system, then user and assistant alternating)")
        if not turn.text:
            kind = "empty answer" if turn.role == "assistant" else "empty question"
            raise DataError(f"{where}: {kind} in message {number}")
    if not dialogue or dialogue[-1].role != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer to train on")
    return tuple(turns)


def check_unique_ids(examples: list[Example]) -> None:
    seen: dict[str, str] = {}
    for example in examples:
        if example.id in seen:
            raise DataError(f"{example.where}: duplicate id {example.id!r}, first used at {seen[example.id]}")
        seen[example.id] = example.where


def examples_from_suite(path: Path, prompt_style: str) -> TrainingData:
    """Each answerable case as one user/assistant turn; the others listed as skipped."""
    from ..evals.suite import case_prompt, load_suite

    suite = load_suite(path)
    examples, skipped = [], []
    for case in suite:
        where = f"{suite.path}: case {case.id!r}"
        answer = answer_text(case)
        if answer is None:
            skipped.append(f"{where}: answer_type {case.answer_type!r} has no answer text to train on")
            continue
        turns = (Turn("user", case_prompt(case, prompt_style)), Turn("assistant", answer))
        examples.append(Example(case.id, tuple(case.media), turns, where, case))
    if not examples:
        raise DataError(f"{suite.path}: no case has an answer to train on (answer types {', '.join(sorted(ANSWERABLE))})")
    return TrainingData(examples, skipped, suite.path)


def answer_text(case: Case) -> str | None:
    """What the model should say for a case, or None when the case gives nothing to say."""
    if case.answer_type not in ANSWERABLE:
        return None
    expected = case.expected
    if case.answer_type == "number":
        return f"{expected:g}" if isinstance(expected, float) else str(expected)
    if case.answer_type == "contains_all":
        return ("、" if case.lang == "zh" else ", ").join(expected)
    if case.answer_type == "trend":
        return trend_sentence(expected, case.lang)
    return expected if isinstance(expected, str) else expected[0]


def trend_sentence(direction: str, lang: str) -> str:
    """A direction of `smolsight.evals.scoring` (left_hotter, moves_up …) said in one sentence."""
    from ..evals.scoring import canonical_direction

    canonical = canonical_direction(direction)
    if canonical.startswith("moves_"):
        side = canonical.removeprefix("moves_")
        return f"向{SIDE_WORDS[side]}移动。" if lang == "zh" else f"It moves to the {side}."
    side = canonical.removesuffix("_hotter")
    return f"{SIDE_WORDS[side]}边温度更高。" if lang == "zh" else f"The {side} side is hotter."


# ---------------------------------------------------------------------------------------------
# Splitting and evaluation cases


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded random `fraction` held out, at least one of each."""
    if not 0 < fraction < 1:
        raise DataError(f"eval split must be between 0 and 1, not {fraction}")
    if len(examples) < 2:
        raise DataError("an eval split needs at least 2 examples")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    chosen = set(order[:held])
    return [e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen]


def evaluation_suite(examples: list[Example], name: str, path: Path) -> Suite:
    """Held-out examples as a suite: their own case, or the first question and answer scored by ANLS."""
    from ..evals.suite import Case, Suite

    cases = []
    for example in examples:
        if example.case is not None:
            cases.append(example.case)
            continue
        dialogue = [t for t in example.turns if t.role != "system"]
        fields = {"id": example.id, "scenario": "any", "media": list(example.media), "prompt": dialogue[0].text}
        cases.append(Case.model_validate({**fields, "answer_type": "anls", "expected": dialogue[1].text}))
    return Suite(name=name, path=path, cases=cases)


# ---------------------------------------------------------------------------------------------
# Encoding and collation


def messages_of(example: Example, engine: Engine, settings: dict) -> list[Message]:
    """The example's turns as engine messages, its media loaded into the first user turn."""
    from ..engine import Request

    messages = [Message(turn.role, turn.text) for turn in example.turns]
    first_user = next(m for m in messages if m.role == "user")
    if example.media and is_video(example.media[0]):
        first_user.video = engine.load_video(str(example.media[0]), Request(messages, **settings))
    else:
        first_user.images = [load_image(path) for path in example.media]
    return messages


def encode(example: Example, engine: Engine, settings: dict) -> dict[str, torch.Tensor]:
    """input_ids and labels (IGNORE outside answers), plus the processor's pixel tensors.

    `settings` are Request processing settings (image_size, split, video_fps, max_frames)."""
    from ..engine import Request

    messages = messages_of(example, engine, settings)
    end = engine.tokenizer.eos_token
    ids: list[torch.Tensor] = []
    trained: list[bool] = []
    pixels: dict[str, torch.Tensor] = {}
    rendered = ""
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt = chat_text(engine.processor, messages[:index])
        if not rendered:
            inputs = engine.process(Request(messages[:index], **settings))
            pixels = {k: v[0] for k, v in inputs.items() if k.startswith("pixel")}
            ids.append(inputs["input_ids"][0])
        elif prompt.startswith(rendered):
            ids.append(tokens(engine, prompt[len(rendered) :]))
        else:
            raise DataError(f"{example.where}: the model's chat template does not extend earlier turns; train on single turns")
        trained.append(False)
        answer = f" {message.text}{end}"
        ids.append(tokens(engine, answer))
        trained.append(True)
        rendered = prompt + answer
    labels = [piece if train else torch.full_like(piece, IGNORE) for piece, train in zip(ids, trained, strict=True)]
    return {"input_ids": torch.cat(ids), "labels": torch.cat(labels), **pixels}


def tokens(engine: Engine, text: str) -> torch.Tensor:
    return torch.tensor(engine.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def collate(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Pixel tensors are zero-padded to the most images and the largest
    size in the batch, which the model recognises as padding (as the processor itself pads)."""
    width = max(len(e["input_ids"]) for e in encoded)
    batch = {
        "input_ids": pad_stack([e["input_ids"] for e in encoded], (width,), pad_id),  # [B, T]
        "labels": pad_stack([e["labels"] for e in encoded], (width,), IGNORE),  # [B, T]
        "attention_mask": pad_stack([torch.ones_like(e["input_ids"]) for e in encoded], (width,), 0),  # [B, T]
    }
    for key in ("pixel_values", "pixel_attention_mask"):  # [B, N, 3, H, W] and [B, N, H, W]
        if key in encoded[0]:
            shape = tuple(max(sizes) for sizes in zip(*(e[key].shape for e in encoded), strict=True))
            batch[key] = pad_stack([e[key] for e in encoded], shape, 0)
    return batch


def pad_stack(tensors: list[torch.Tensor], shape: tuple[int, ...], value: int) -> torch.Tensor:
    """Stack tensors after padding each at the end of every dimension to `shape`."""
    out = torch.full((len(tensors), *shape), value, dtype=tensors[0].dtype)
    for row, tensor in enumerate(tensors):
        out[(row, *(slice(0, size) for size in tensor.shape))] = tensor
    return out
