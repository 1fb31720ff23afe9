"""Evaluation suites: the cases a model is scored on, as data.

A suite is a directory holding `suite.yaml`, or any `.yaml`/`.yml` file, or a `.jsonl` file
with one case per line. Media paths are relative to the suite file. A YAML suite is either a
list of cases or a mapping with `cases` and, optionally, `name`, `description` and `meta`:

```yaml
name: plant-cameras
description: What the field report tried, on our own pictures.
cases:
  - id: shrimp-tank-3
    scenario: counting            # scenery | accident | simulation | counting | text | measurement | any
    media: [images/tank3.jpg]     # images (a list), or one video: media: clips/line2.mp4
    lang: zh                      # zh (default) | en
    task: count                   # describe | accident | trend | count | read | measure | qa
    subject: 虾苗                  # fills {subject} in the task's prompt
    answer_type: number           # number | text | contains_all | contains_none | choice | trend | anls | free
    expected: 37
  - id: pencil
    scenario: measurement
    media: [images/pencil.jpg]
    prompt: 图像上的铅笔有多长？    # sent as is; without it the runner uses the task's prompt
    answer_type: number
    expected: 14.7
    unit: cm                      # answers in mm or m are converted to cm
    tolerance: {rel: 0.1}         # or {abs: 0.5}; no tolerance means exact
  - id: fire
    scenario: accident
    media: [images/furnace.jpg]
    answer_type: contains_all
    expected: [fire, smoke]
    synonyms: {fire: [火, 火焰, flames], smoke: [烟, 烟雾]}
  - id: field
    scenario: simulation
    media: [images/field.png]
    answer_type: trend
    expected: right_hotter        # see smolsight.evals.scoring.DIRECTIONS
  - id: valve
    scenario: text
    media: [images/valve.jpg]
    prompt: 阀门是开还是关？
    answer_type: choice
    choices: [开, 关]
    expected: 关
```

What `expected` holds depends on `answer_type`: a number (number); a string or list of
accepted strings (text, anls); a list of keywords (contains_all, contains_none); one of
`choices` (choice); a direction (trend); nothing (free). A case without `media` is text-only:
its prompt is asked alone (language-only measurements, such as repetition on a real language
model: `smolsight/evals/data/repetition.yaml`). `task` defaults from the scenario
(scenery→describe, accident→accident, simulation→trend, counting→count, text→read,
measurement→measure); a case with neither a known task nor a prompt is an error. `meta` holds
anything else about a case (ground truth details such as object positions); scorers ignore it.
Unknown keys are errors, so a misspelt `expectd` does not silently leave a case unscored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..console import format_table
from ..engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..errors import SmolsightError
from .scoring import SCORERS, canonical_direction
from ..tasks import STYLES, TASKS, styled_prompt, task_prompt

SCENARIO_TASKS = {
    "scenery": "describe",
    "accident": "accident",
    "simulation": "trend",
    "counting": "count",
    "text": "read",
    "measurement": "measure",
}


class SuiteError(SmolsightError):
    """A suite file that cannot be loaded; the message names the file, line and case."""

    code = "invalid_suite"


class Tolerance(BaseModel):
    """How far a number may be off: `abs` in the case's unit, or `rel` as a fraction of expected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    abs: float | None = Field(default=None, ge=0)
    rel: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Tolerance:
        if (self.abs is None) == (self.rel is None):
            raise ValueError("give exactly one of abs or rel")
        return self

    def allowed(self, expected: float) -> float:
        return self.abs if self.abs is not None else self.rel * abs(expected)


class Case(BaseModel):
    """One image (or images, or a video), one question, and how to score the answer."""

    model_config = ConfigDict(extra="forbid")
    id: str
    scenario: str
    media: list[Path] = Field(default_factory=list)  # none: a text-only case, the question alone
    prompt: str | None = None
    lang: Literal["zh", "en"] = "zh"
    task: str | None = None
    subject: str | None = None
    answer_type: str
    expected: Any = None
    tolerance: Tolerance | None = None
    unit: str | None = None
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    choices: list[str] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return bool(self.media) and self.media[0].suffix.lower() in VIDEO_SUFFIXES

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("media", mode="before")
    @classmethod
    def _media_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("media")
    @classmethod
    def _media_files(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        """Resolve against the suite file's directory; every file must exist, a video alone."""
        root = (info.context or {}).get("root", Path.cwd())
        resolved = [p if p.is_absolute() else root / p for p in paths]
        for path in resolved:
            if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                raise ValueError(f"{path.name}: not an image or video file type we read")
            if not path.is_file():
                raise ValueError(f"media file not found: {path}")
        if len(resolved) > 1 and any(p.suffix.lower() in VIDEO_SUFFIXES for p in resolved):
            raise ValueError("a video must be the case's only media")
        return resolved

    @field_validator("answer_type")
    @classmethod
    def _known_answer_type(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(f"unknown answer_type {value!r}; use one of {', '.join(SCORERS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        if self.task is None:
            self.task = SCENARIO_TASKS.get(self.scenario)
        if self.prompt is None and self.task not in TASKS:
            raise ValueError(f"no prompt, and task {self.task!r} has no built-in prompt ({', '.join(TASKS)})")
        self.expected = _check_expected(self)
        return self


def _check_expected(case: Case) -> Any:
    """`expected` in the shape its scorer reads, or ValueError saying what is wrong."""
    kind, expected = case.answer_type, case.expected
    if kind == "free":
        return expected
    if expected is None or expected == [] or expected == "":
        raise ValueError(f"expected is required for answer_type {kind!r}")
    if kind == "number":
        if isinstance(expected, bool) or not isinstance(expected, int | float):
            raise ValueError(f"expected must be a number for answer_type 'number', not {expected!r}")
        return expected
    if kind in ("text", "anls", "contains_all", "contains_none"):
        strings = [expected] if isinstance(expected, str) else expected
        if not isinstance(strings, list) or not all(isinstance(s, str | int | float) for s in strings):
            raise ValueError(f"expected must be a string or a list of strings for answer_type {kind!r}")
        return [str(s) for s in strings]
    if kind == "choice":
        if not case.choices or str(expected) not in case.choices:
            raise ValueError(f"expected {expected!r} must be one of choices {case.choices!r}")
        return str(expected)
    if kind == "trend":
        canonical_direction(str(expected))
        return str(expected)
    return expected


class Suite(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    path: Path
    description: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case]

    def __iter__(self):  # type: ignore[override]  # iterate cases, not fields
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)


def _suite_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("suite.yaml", "suite.yml", "suite.jsonl"):
            if (path / name).is_file():
                return path / name
        raise SuiteError(f"{path}: no suite.yaml in this directory")
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file or directory")
    if path.suffix.lower() not in (".yaml", ".yml", ".jsonl"):
        raise SuiteError(f"{path}: a suite is a .yaml, .yml or .jsonl file")
    return path


def jsonl_lines(path: Path, text: str, error: type[SmolsightError] = SuiteError) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line; a bad line raises `error` naming it."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                entries.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return entries


def _jsonl_entries(path: Path, text: str) -> tuple[dict[str, Any], list[tuple[int, Any]]]:
    return {}, jsonl_lines(path, text)


def _yaml_entries(path: Path, text: str) -> tuple[dict[str, Any], list[tuple[int, Any]]]:
    """The suite's header and its cases, each with the line it starts on (from the YAML nodes)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SuiteError(yaml_problem(path, err)) from None
    if isinstance(data, dict):
        cases_node = next((v for k, v in node.value if k.value == "cases"), None)
        header, cases = {k: v for k, v in data.items() if k != "cases"}, data.get("cases")
    else:
        cases_node, header, cases = node, {}, data
    if not isinstance(cases, list) or not isinstance(cases_node, yaml.SequenceNode):
        raise SuiteError(f"{path}: expected a list of cases, or a mapping with a 'cases' list")
    return header, [(item.start_mark.line + 1, case) for item, case in zip(cases_node.value, cases, strict=True)]


def yaml_problem(path: Path, error: yaml.YAMLError) -> str:
    """One line: the file, the line and column, and what is wrong ("not valid YAML: …")."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite; a bad case raises SuiteError naming its file, line and id."""
    file = _suite_file(Path(path))
    text = file.read_text(encoding="utf-8")
    reader = _jsonl_entries if file.suffix.lower() == ".jsonl" else _yaml_entries
    header, entries = reader(file, text)
    unknown = set(header) - {"name", "description", "meta"}
    if unknown:
        raise SuiteError(f"{file}: unknown suite keys {', '.join(sorted(unknown))} (name, description, meta, cases)")
    cases, seen = [], {}
    for index, (line, entry) in enumerate(entries, start=1):
        label = f"case {entry.get('id')!r}" if isinstance(entry, dict) and entry.get("id") is not None else f"case #{index}"
        where = f"{file}:{line}: {label}"
        if not isinstance(entry, dict):
            raise SuiteError(f"{where}: a case is a mapping of fields, not {type(entry).__name__}")
        try:
            case = Case.model_validate(entry, context={"root": file.parent.resolve()})
        except ValidationError as err:
            raise SuiteError(f"{where}: {_describe(err)}") from None
        if case.id in seen:
            raise SuiteError(f"{where}: duplicate id, first used on line {seen[case.id]}")
        seen[case.id] = line
        cases.append(case)
    name = header.get("name") or (file.parent.name if file.stem == "suite" else file.stem)
    return Suite(name=name, path=file, description=header.get("description", ""), meta=header.get("meta") or {}, cases=cases)


def case_prompt(case: Case, style: str) -> str:
    """The prompt the runner sends for `case` in `style` (rules in the module docstring)."""
    if case.task not in TASKS:
        return case.prompt
    built_in = {task_prompt(case.task, case.lang, s, case.subject) for s in STYLES}
    if case.prompt is None or case.prompt in built_in:
        return task_prompt(case.task, case.lang, style, case.subject)
    return styled_prompt(case.task, case.prompt, case.lang, style)


def suite_summary(suite: Suite) -> str:
    """What a suite holds, per scenario: case count, tasks, answer types and languages."""
    rows = []
    for name in dict.fromkeys(c.scenario for c in suite):
        cases = [c for c in suite if c.scenario == name]
        rows.append([name, str(len(cases)), *(", ".join(sorted({str(getattr(c, key)) for c in cases})) for key in ("task", "answer_type", "lang"))])
    table = format_table(["scenario", "cases", "tasks", "answer types", "languages"], rows)
    return f"{suite.name}: {len(suite)} cases in {suite.path}\n{table}"


def select_cases(suite: Suite, scenarios: Iterable[str] | None = None, limit: int | None = None) -> list[Case]:
    """The suite's cases in the given scenarios (all when None), at most `limit` of them."""
    cases = list(suite.cases)
    if scenarios:
        wanted, known = set(scenarios), {c.scenario for c in cases}
        unknown = wanted - known
        if unknown:
            raise SmolsightError(f"no scenario {', '.join(sorted(unknown))} in suite {suite.name}; it has {', '.join(sorted(known))}")
        cases = [c for c in cases if c.scenario in wanted]
    if limit is not None:
        if limit < 1:
            raise SmolsightError("limit must be at least 1")
        cases = cases[:limit]
    return cases
