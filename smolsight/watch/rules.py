"""The rules file: what to watch, what to ask, when to ask it and what raises an alert.

Read with YAML, checked field by field; every mistake is reported as one line naming the file,
the line and the field (`rules.yaml:14: sources[0].rules[1].answer: must be one of ...`), before
any model loads or any camera is opened. docs/watch.md is the reference of every field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..engine.fetch import UrlPolicy
from ..engine.options import IMAGE_SIZE_RULE, PRESETS, image_size_setting
from ..errors import SmolsightError
from ..evals.suite import yaml_problem

ANSWER_TYPES = ("yes_no", "number", "choice", "text")
COMPARISONS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "==": float.__eq__, "!=": float.__ne__}
THRESHOLD = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
DEFAULT_TOKENS = {"yes_no": 4, "number": 8, "choice": 8, "text": 48}
INSTRUCTIONS = {
    "yes_no": "Answer yes or no.",
    "number": "Answer with a number.",
    "text": "Answer briefly.",
}


class RulesError(SmolsightError):
    """A rules file that cannot be used, with the place of the mistake."""


@dataclass(frozen=True)
class Rule:
    """One question about one source, when to ask it and which answers raise an alert."""

    name: str
    ask: str
    answer: str  # one of ANSWER_TYPES
    every_s: float | None  # ask at least this often; None: only on change
    on_change: bool  # ask when the frame changed past the gate
    alert_when: tuple[str, ...] | str | None  # yes/no; a threshold like "> 3"; choices; words
    choices: tuple[str, ...] = ()
    cooldown_s: float = 60.0  # after an event closes, no new one opens for this long
    clear_after: int = 2  # answers without the condition that close an open event
    max_new_tokens: int = 8
    ocr: str | None = None  # "prompt": OCR'd lines go to the model; "answer": the text read is the answer

    @property
    def prompt(self) -> str:
        """The question with the instruction that makes its answer readable as the rule's type."""
        if self.answer == "choice":
            return f"{self.ask} Answer with one of: {', '.join(self.choices)}."
        return f"{self.ask} {INSTRUCTIONS[self.answer]}"


@dataclass(frozen=True)
class SourceSpec:
    """One camera, stream, clip or folder and the rules asked about it."""

    name: str
    url: str
    kind: str  # auto | rtsp | mjpeg | snapshot | file | folder | camera
    sample_fps: float  # frames looked at per second (of the source's own time for files)
    change_threshold: float  # mean absolute difference, 0..1, that counts as a change
    rules: tuple[Rule, ...]
    image_size: int | str | None = None  # a longest edge, or "native" (engine.options.image_size_setting)
    split: bool = False
    realtime: bool = False  # files and folders: play at the clip's speed, as a camera would


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0


@dataclass(frozen=True)
class MqttSpec:
    host: str
    port: int = 1883
    topic: str = "smolsight/watch"
    qos: int = 1
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class WatchConfig:
    """A whole rules file."""

    path: Path
    sources: tuple[SourceSpec, ...]
    out_dir: Path  # the event log and snapshots
    webhook: WebhookSpec | None
    mqtt: MqttSpec | None
    urls: UrlPolicy
    preset: str = "precise"


# ---- YAML with line numbers -----------------------------------------------------------------


class Mapping(dict):
    """A YAML mapping that remembers its line and each key's line."""

    line = 0
    key_lines: dict


class Sequence(list):
    """A YAML list that remembers its line and each item's line."""

    line = 0
    item_lines: list


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and lists know where they were written."""


def construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> Mapping:
    mapping = Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def construct_sequence(loader: LineLoader, node: yaml.SequenceNode) -> Sequence:
    sequence = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    sequence.line = node.start_mark.line + 1
    sequence.item_lines = [child.start_mark.line + 1 for child in node.value]
    return sequence


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)


class Fields:
    """Typed reads of one mapping's fields; a wrong or unknown field is a `RulesError` with its line."""

    def __init__(self, file: Path, mapping: object, where: str, line: int) -> None:
        self.file = file
        self.where = where
        self.line = getattr(mapping, "line", line)
        if not isinstance(mapping, dict):
            self.fail(None, f"must be a mapping (key: value lines), not {type(mapping).__name__}")
        self.mapping = mapping
        self.read: set[str] = set()

    def fail(self, key: str | None, problem: str):
        line = self.mapping.key_lines.get(key, self.line) if key is not None and hasattr(self, "mapping") else self.line
        name = f"{self.where}.{key}" if key is not None and self.where else key or self.where or "the file"
        raise RulesError(f"{self.file}:{line}: {name}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default=None, required: bool = False):
        self.read.add(key)
        if key not in self.mapping or self.mapping[key] is None:
            if required:
                self.fail(None, f"'{key}' is required")
            return default
        value = self.mapping[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.fail(key, f"must be {' or '.join(KIND_WORDS[k] for k in kinds)}, not {value!r}")
        return value

    def positive(self, key: str, default: float | None, zero: bool = False) -> float | None:
        value = self.get(key, float, default)
        if value is not None and (value < 0 or (value == 0 and not zero) or math.isinf(value)):
            self.fail(key, f"must be {'zero or more' if zero else 'more than zero'}, not {value:g}")
        return value

    def child(self, key: str, where: str | None = None) -> Fields | None:
        value = self.get(key, dict)
        return None if value is None else Fields(self.file, value, where or f"{self.where}.{key}".lstrip("."), self.mapping.key_lines[key])

    def items(self, key: str) -> list[tuple[object, str, int]]:
        """(item, its name for messages, its line) for a non-empty list field."""
        value = self.get(key, list, required=True)
        if not value:
            self.fail(key, "must list at least one entry")
        return [(item, f"{self.where}.{key}[{i}]".lstrip("."), line) for i, (item, line) in enumerate(zip(value, value.item_lines, strict=True))]

    def done(self) -> None:
        unknown = [key for key in self.mapping if key not in self.read]
        if unknown:
            self.fail(unknown[0], f"unknown field (known here: {', '.join(sorted(self.read))})")


KIND_WORDS = {str: "text", float: "a number", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping"}


# ---- the file's parts -----------------------------------------------------------------------


def load_rules(path: str | Path) -> WatchConfig:
    """The checked rules file; a `RulesError` naming the line of the first mistake otherwise."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {file}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=LineLoader)
    except yaml.YAMLError as exc:
        raise RulesError(yaml_problem(file, exc)) from None
    top = Fields(file, data if data is not None else Mapping(), "", 1)
    sources = tuple(read_source(file, item, where, line) for item, where, line in top.items("sources"))
    names = [s.name for s in sources]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        top.fail("sources", f"two sources are named {duplicate!r}; names must differ")
    outputs = top.child("outputs") or Fields(file, Mapping(), "outputs", top.line)
    out_dir = Path(outputs.get("dir", str, "watch-events"))
    if not out_dir.is_absolute():
        out_dir = file.parent / out_dir
    webhook = read_webhook(outputs.child("webhook"))
    mqtt = read_mqtt(outputs.child("mqtt"))
    outputs.done()
    urls = read_urls(top.child("urls"))
    preset = top.get("preset", str, "precise")
    if preset not in PRESETS:
        top.fail("preset", f"must be one of {', '.join(PRESETS)}, not {preset!r}")
    top.done()
    return WatchConfig(file, sources, out_dir, webhook, mqtt, urls, preset)


SOURCE_KINDS = ("auto", "rtsp", "mjpeg", "snapshot", "file", "folder", "camera")


def read_source(file: Path, item: object, where: str, line: int) -> SourceSpec:
    fields = Fields(file, item, where, line)
    name = fields.get("name", str, required=True)
    url = fields.get("url", str, required=True)
    kind = fields.get("kind", str, "auto")
    if kind not in SOURCE_KINDS:
        fields.fail("kind", f"must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    sample_fps = fields.positive("sample_fps", 2.0)
    threshold = fields.positive("change_threshold", 0.02, zero=True)
    if threshold > 1:
        fields.fail("change_threshold", f"is a fraction of full brightness, 0 to 1, not {threshold:g}")
    image_size = fields.get("image_size", (int, str))
    try:
        image_size = image_size_setting(image_size)
    except SmolsightError:
        fields.fail("image_size", f"{IMAGE_SIZE_RULE}, not {image_size!r}")
    split = fields.get("split", bool, False)
    realtime = fields.get("realtime", bool, False)
    rules = tuple(read_rule(file, rule, rule_where, rule_line) for rule, rule_where, rule_line in fields.items("rules"))
    names = [r.name for r in rules]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        fields.fail("rules", f"two rules are named {duplicate!r}; names must differ within a source")
    fields.done()
    return SourceSpec(name, url, kind, sample_fps, threshold, rules, image_size, split, realtime)


def read_rule(file: Path, item: object, where: str, line: int) -> Rule:
    fields = Fields(file, item, where, line)
    name = fields.get("name", str, required=True)
    ask = fields.get("ask", str, required=True)
    answer = fields.get("answer", str, "yes_no")
    if answer not in ANSWER_TYPES:
        fields.fail("answer", f"must be one of {', '.join(ANSWER_TYPES)}, not {answer!r}")
    every_s = fields.positive("every_s", None)
    on_change = fields.get("on_change", bool, False)
    if every_s is None and not on_change:
        fields.fail(None, "say when to ask: every_s (seconds), on_change: true, or both")
    choices = tuple(str(c) for c in fields.get("choices", list, []))
    if (answer == "choice") != bool(choices):
        fields.fail("choices" if choices else None, "a choice rule lists its choices; only a choice rule has them")
    alert_when = read_condition(fields, answer, choices)
    cooldown = fields.positive("cooldown_s", 60.0, zero=True)
    clear_after = fields.get("clear_after", int, 2)
    if clear_after < 1:
        fields.fail("clear_after", f"must be 1 or more, not {clear_after}")
    tokens = fields.get("max_new_tokens", int, DEFAULT_TOKENS[answer])
    if tokens < 1:
        fields.fail("max_new_tokens", f"must be 1 or more, not {tokens}")
    ocr = fields.get("ocr", (bool, str), False)
    if ocr not in (False, True, "prompt", "answer"):
        fields.fail("ocr", f"must be true, prompt or answer, not {ocr!r}")
    fields.done()
    ocr_mode = "prompt" if ocr is True else ocr or None
    return Rule(name, ask, answer, every_s, on_change, alert_when, choices, cooldown, clear_after, tokens, ocr_mode)


def read_condition(fields: Fields, answer: str, choices: tuple[str, ...]) -> tuple[str, ...] | str | None:
    """The answers that raise an alert: yes or no; a threshold ("> 3"); some of the choices; words
    any of which in a free-text answer alerts. None: answers are recorded, never alert."""
    value = fields.get("alert_when", (str, int, float, bool, list))
    if value is None:
        return None
    if answer == "yes_no":
        word = {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value
        if word not in ("yes", "no"):
            fields.fail("alert_when", f"a yes_no rule alerts on yes or on no, not {value!r}")
        return word
    if answer == "number":
        if not isinstance(value, str) or not THRESHOLD.match(value):
            fields.fail("alert_when", f'a number rule alerts on a threshold such as "> 3" or "<= 0.5", not {value!r}')
        return value.strip()
    words = tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)
    if answer == "choice":
        unknown = [w for w in words if w not in choices]
        if unknown:
            fields.fail("alert_when", f"{unknown[0]!r} is not one of the choices {list(choices)}")
    return words


def read_webhook(fields: Fields | None) -> WebhookSpec | None:
    if fields is None:
        return None
    url = fields.get("url", str, required=True)
    if not url.startswith(("http://", "https://")):
        fields.fail("url", f"must be an http(s) URL, not {url!r}")
    spec = WebhookSpec(url, fields.positive("timeout_s", 5.0), fields.get("retries", int, 3), fields.positive("backoff_s", 1.0, zero=True))
    if spec.retries < 0:
        fields.fail("retries", f"must be 0 or more, not {spec.retries}")
    fields.done()
    return spec


def read_mqtt(fields: Fields | None) -> MqttSpec | None:
    if fields is None:
        return None
    spec = MqttSpec(fields.get("host", str, required=True), fields.get("port", int, 1883), fields.get("topic", str, "smolsight/watch"),
                    fields.get("qos", int, 1), fields.get("username", str), fields.get("password", str))  # fmt: skip
    if spec.qos not in (0, 1, 2):
        fields.fail("qos", f"must be 0, 1 or 2, not {spec.qos}")
    fields.done()
    return spec


def read_urls(fields: Fields | None) -> UrlPolicy:
    """Where http(s) and rtsp sources may point: any host, private addresses included (cameras
    live on the user's own network), unless the rules file narrows it."""
    if fields is None:
        return UrlPolicy()
    allow_list = tuple(str(h).lower() for h in fields.get("allow_list", list, []))
    policy = UrlPolicy(True, allow_list, fields.get("allow_private", bool, True), timeout_s=fields.positive("timeout_s", 10.0))
    fields.done()
    return policy
