"""The `smolsight` command: in-process (click's CliRunner) for what it does, and a real process for
what only a process shows: the entry point and its exit status, output streaming as it is made."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import cli as smolsight, picture, subprocess_cli
from PIL import Image




def test_entry_point_makes_a_checkpoint_then_answers_json(tmp_path, image_file):
    made = subprocess_cli("make-checkpoint", str(tmp_path / "t"), "--shape", "tiny")
    assert made.returncode == 0, made.stderr
    run = subprocess_cli("ask", "--model", str(tmp_path / "t"), image_file, "请描述这张图像？", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    expected = {"text", "finish_reason", "input_tokens", "output_tokens", "ttft_s", "total_s", "model", "device", "dtype"}
    assert expected <= set(result)
    assert result["finish_reason"] in ("stop", "length", "repetition")
    assert result["device"] == "cpu" and result["input_tokens"] > 0 and result["total_s"] >= result["ttft_s"] > 0


def test_plain_output_streams_the_answer(tiny_checkpoint, image_file):
    args = ["ask", "-q", "--model", tiny_checkpoint, image_file, "Describe.", "--preset", "seed", "--max-new-tokens", "30"]
    plain = smolsight(*args)
    as_json = json.loads(smolsight(*args, "--json").stdout)
    assert plain.returncode == 0 and plain.stderr == ""
    assert plain.stdout == as_json["text"] + "\n"


def test_streaming_prints_before_the_end(tiny_checkpoint, image_file):
    process = subprocess.Popen(
        [sys.executable, "-m", "smolsight", "ask", "-q", "--model", tiny_checkpoint, image_file, "Describe.",
         "--preset", "seed", "--max-new-tokens", "400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    first = process.stdout.read(8)
    still_running = process.poll() is None
    rest, _ = process.communicate(timeout=300)
    assert first and still_running and len(first + rest) > 400


def test_verbose_prints_runtime_choice(tiny_checkpoint, image_file):
    run = smolsight("ask", "--model", tiny_checkpoint, image_file, "Hi", "-v", "--max-new-tokens", "3")
    assert "device=cpu" in run.stderr and "attn=sdpa" in run.stderr


def bomb(path) -> str:
    Image.new("1", (10_000, 9_000)).save(path)
    return str(path)


@pytest.mark.parametrize(
    "make, prompt, words",
    [
        (lambda d: str(d / "missing.png"), "Describe.", "no such file"),
        (lambda d: (d / "notes.txt").write_text("hello") and str(d / "notes.txt"), "Describe.", "not an image"),
        (lambda d: (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40) and str(d / "broken.png"), "Describe.", "not an image|corrupt"),
        (lambda d: (d / "empty.mp4").write_bytes(b"\0" * 500) and str(d / "empty.mp4"), "Describe.", "decode|no video|no decodable"),
        (lambda d: bomb(d / "bomb.png"), "Describe.", "pixels"),
        (lambda d: picture().save(d / "ok.png") or str(d / "ok.png"), "  ", "prompt is empty"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_on_stderr(tmp_path, tiny_checkpoint, make, prompt, words):
    run = smolsight("ask", "-q", "--model", tiny_checkpoint, make(tmp_path), prompt)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
    assert "Traceback" not in run.stderr
    import re

    assert re.search(words, lines[0]), lines[0]


def test_truncated_jpeg(tmp_path, tiny_checkpoint):
    full = tmp_path / "full.jpg"
    picture(400, 300).save(full, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:600])
    run = smolsight("ask", "-q", "--model", tiny_checkpoint, str(cut), "Describe.")
    assert run.returncode == 1 and "corrupt or truncated" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "model, words",
    [("999m", "unknown model"), ("nobody/no-such-model", "pass a local model directory"), ("/no/such/dir", "unknown model")],
)
def test_unknown_models(image_file, model, words):
    run = smolsight("ask", "-q", "--model", model, image_file, "Hi")
    assert run.returncode == 1 and words in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_bad_option_value(tiny_checkpoint, image_file):
    run = smolsight("ask", "-q", "--model", tiny_checkpoint, image_file, "Hi", "--top-p", "3")
    assert run.returncode == 1 and "top_p" in run.stderr
