"""The README as a newcomer uses it: its server commands and client examples work together as
written, and its usage sections are the commands' own --help.

`SMOLSIGHT_UPDATE_DOCS=1 pytest tests/test_readme.py` rewrites the usage sections from --help.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import free_port
from click.testing import CliRunner

from smolsight.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def blocks(language: str, containing: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == language and containing in body]




@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """The README's two server commands, as written but for the checkpoint directory and the port."""
    (commands,) = blocks("bash", "smolsight serve")
    directory, port = str(tmp_path_factory.mktemp("readme") / "tiny"), free_port()
    make, serve = [shlex.split(line.replace("/tmp/tiny", directory)) for line in commands.strip().splitlines()]
    assert make[:2] == ["smolsight", "make-checkpoint"] and serve[:2] == ["smolsight", "serve"]
    made = subprocess.run([sys.executable, "-m", "smolsight", *make[1:]], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    process = subprocess.Popen([sys.executable, "-m", "smolsight", *serve[1:], "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no start"
        time.sleep(0.3)
    yield port
    process.terminate()
    process.wait(timeout=60)


def with_port(text: str, port: int) -> str:
    return text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def test_readme_curl_example_gets_an_answer(readme_server):
    (curl,) = blocks("bash", "curl ")
    run = subprocess.run(["bash", "-c", with_port(curl, readme_server)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    import json

    reply = json.loads(run.stdout)
    assert reply["object"] == "chat.completion" and reply["model"] == "smolvlm2", reply
    assert reply["choices"][0]["finish_reason"] in ("stop", "length", "repetition") and reply["usage"]["completion_tokens"] >= 1


def test_readme_python_example_streams_an_answer(readme_server):
    (python,) = blocks("python", "OpenAI(")
    run = subprocess.run([sys.executable, "-c", with_port(python, readme_server)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "the streamed answer is printed"


def test_another_model_name_is_a_404_naming_the_served_one(readme_server):
    reply = httpx.post(f"http://127.0.0.1:{readme_server}/v1/chat/completions", timeout=30,
                       json={"model": "256m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})  # fmt: skip
    assert reply.status_code == 404 and "serves 'smolvlm2'" in reply.json()["error"]["message"]


def usage_sections(text: str) -> list[tuple[str, str]]:
    """(command, the fenced block under its `### `smolsight COMMAND`` heading)."""
    return re.findall(r"^### `smolsight ([\w-]+)`\n\n```\n(.*?)```", text, re.DOTALL | re.MULTILINE)


def help_text(command: str) -> str:
    return CliRunner().invoke(main, [command, "--help"], prog_name="smolsight", terminal_width=80).output


def test_readme_usage_is_each_commands_help():
    text = README.read_text(encoding="utf-8")
    sections = usage_sections(text)
    assert {name for name, _ in sections} == set(main.commands), "every command has a usage section"
    if os.environ.get("SMOLSIGHT_UPDATE_DOCS"):
        for name, body in sections:
            text = text.replace(f"### `smolsight {name}`\n\n```\n{body}```", f"### `smolsight {name}`\n\n```\n{help_text(name)}```")
        README.write_text(text, encoding="utf-8")
        sections = usage_sections(text)
    stale = [name for name, body in sections if body != help_text(name)]
    assert not stale, f"README usage differs from --help for {stale}; refresh with SMOLSIGHT_UPDATE_DOCS=1"
