"""Test helpers: the CLI run in-process or as a subprocess, a deterministic picture, a
backend that answers from a script and the truthful answer to a suite case."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from click.testing import CliRunner
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from smolsight.engine import Request, Result
    from smolsight.evals.suite import Case


@dataclass
class Outcome:
    """What a command run gave back, alike for in-process and subprocess runs."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Outcome:
    """`smolsight ARGS…` in this process (click's CliRunner): no interpreter start, no torch
    import per call. stdout and stderr are kept apart, as a terminal user sees them."""
    from smolsight.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def subprocess_cli(*args: str, timeout: int = 300) -> Outcome:
    """`python -m smolsight ARGS…` as a real process: for what only a process shows (the entry
    point, exit codes, signals, output as it streams)."""
    run = subprocess.run([sys.executable, "-m", "smolsight", *args], capture_output=True, text=True, timeout=timeout)
    return Outcome(run.returncode, run.stdout, run.stderr)


def picture(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A small deterministic test picture with some structure."""
    image = Image.new("RGB", (width, height), (40 + seed * 30 % 200, 120, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 4, height // 4, width // 2, height // 2], fill=(220, 40 + seed * 50 % 200, 40))
    draw.ellipse([width // 2, height // 2, width - 10, height - 10], fill=(250, 250, 0))
    return image


class ScriptedBackend:
    """Answers each request with the next scripted text, like the engine would return it but
    without measuring repetition (the runner measures what a backend leaves out)."""

    runtime = {"model": "scripted", "device": "none"}

    def __init__(self, answers: list[str]) -> None:
        self.answers = iter(answers)
        self.batches: list[list[Request]] = []

    def ask_batch(self, requests: list[Request]) -> list[Result]:
        self.batches.append(requests)
        return [self.result(next(self.answers), row) for row in range(len(requests))]

    @staticmethod
    def result(text: str, row: int) -> Result:
        from smolsight.engine import Result

        return Result(text=text, finish_reason="stop", input_tokens=100, output_tokens=len(text), ttft_s=0.05,
                      total_s=0.1 + 0.01 * row, model="scripted", device="none", dtype="none", attn="none", row=row)  # fmt: skip


def truth(case: Case) -> str:
    """An answer stating the case's ground truth, in words a person would use."""
    kind, expected = case.answer_type, case.expected
    if kind == "number":
        return f"{expected:g}"
    if kind in ("text", "anls", "choice"):
        return expected if isinstance(expected, str) else expected[0]
    if kind == "contains_all":
        return ", ".join(expected) + "."
    if kind == "trend":
        if expected.startswith("moves_"):
            return f"The dot moves to the {expected.removeprefix('moves_')}."
        return f"The {expected.removesuffix('_hotter')} side is hotter."
    raise AssertionError(f"no truthful answer written for {kind}")


def missing_system_package(message: str) -> None:
    """Skip a test whose Debian package is not installed here; in CI (which installs them all
    through scripts/setup.sh) that is a failure, so a broken set-up cannot pass as skips."""
    import os

    import pytest

    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nobody listens on (for a server the test starts itself)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
