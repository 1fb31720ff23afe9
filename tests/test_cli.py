"""The `smolsight` command: in-process (click's CliRunner) for what it does, and a real process for
what only a process shows: the entry point and its exit status, output streaming as it is made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli as smolsight, picture, subprocess_cli
from PIL import Image

import smolsight as smolsight_package


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


@pytest.mark.parametrize(
    "spec, shown",
    [("int8,lean", "fast=int8,lean vision=torch"), ("none", "fast=none vision=torch"), ("lean,decode_threads=1", "fast=lean,decode_threads=1 ")],
)
def test_fast_paths_are_chosen_on_the_command_line(tiny_checkpoint, image_file, spec, shown):
    run = smolsight("ask", "--model", tiny_checkpoint, image_file, "Hi", "-v", "--max-new-tokens", "3", "--fast", spec)
    assert run.returncode == 0 and shown in run.stderr, run.stderr


@pytest.mark.parametrize(
    "command, words",
    [
        (["ask", "IMAGE", "Hi"], "unknown fast path 'turbo'"),
        (["eval", "SUITE"], "unknown fast path 'turbo'"),
        (["bench"], "unknown fast path 'turbo'"),
        (["batch", "FOLDER", "-o", "OUT", "--prompt", "Hi", "--ray"], "unknown fast path 'turbo'"),
        (["finetune", "FOLDER", "--out", "OUT"], "--fast is for ask, eval, serve and bench"),
    ],
)
def test_a_bad_fast_path_spec_is_refused_before_the_model_loads(image_file, tmp_path, command, words):
    folder = tmp_path / "pictures"
    folder.mkdir()
    picture().save(folder / "yard.png")
    suite = Path(smolsight_package.__file__).parent / "evals" / "data" / "repetition.yaml"
    named = {"IMAGE": image_file, "FOLDER": str(folder), "SUITE": str(suite), "OUT": str(tmp_path / "out")}
    argv = [named.get(a, a) for a in command]
    run = smolsight(*argv, "--model", "/no/such/model", "--fast", "turbo")  # the model would fail if it were loaded first
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
    assert words in run.stderr, run.stderr


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


# ---- what a newcomer trips on ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["IMAGE"], "no question given (IMAGE is media, not a question)"),
        (["IMAGE", "IMAGE2"], "no question given (IMAGE2 is media"),
        (["IMAGE", "http://127.0.0.1:9/cam.jpg"], "no question given (http://127.0.0.1:9/cam.jpg is media"),
        (["IMAGE", "missing.mp4"], "no question given (missing.mp4 is media"),
        ([], "nothing to ask"),
        (["IMAGE", "How many?", "--lang", "zh"], "--lang sets the language of --task's words; give --task too"),
    ],
)
def test_ask_without_a_question_is_refused_before_the_model_loads(image_file, tmp_path, args, words):
    second = tmp_path / "second.png"
    picture().save(second)
    argv = [image_file if a == "IMAGE" else str(second) if a == "IMAGE2" else a for a in args]
    words = words.replace("IMAGE2", str(second)).replace("IMAGE", image_file)
    run = smolsight("ask", "--model", "/no/such/model", *argv)  # the model would fail if it were loaded first
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert words in run.stderr, run.stderr


def test_the_question_as_the_last_argument_or_as_prompt(tiny_checkpoint, image_file):
    common = ["ask", "-q", "--json", "--model", tiny_checkpoint, "--max-new-tokens", "2"]
    last = json.loads(smolsight(*common, image_file, "What is in the picture?").stdout)
    option = json.loads(smolsight(*common, image_file, "-p", "What is in the picture?").stdout)
    text_only = json.loads(smolsight(*common, "What is 2+2?").stdout)
    assert last == {**option, "ttft_s": last["ttft_s"], "total_s": last["total_s"], "tokens_per_s": last["tokens_per_s"]}
    assert text_only["input_tokens"] < last["input_tokens"] / 5  # no image was sent
    task = smolsight(*common, image_file, "--task", "count")
    assert task.returncode == 0 and json.loads(task.stdout)["input_tokens"] > last["input_tokens"]


def test_loading_bars_only_with_verbose(tiny_checkpoint, image_file):
    args = ["ask", "--model", tiny_checkpoint, image_file, "Hi", "--max-new-tokens", "2"]
    plain, verbose = smolsight(*args), smolsight(*args, "-v")
    assert plain.returncode == verbose.returncode == 0
    assert plain.stderr.startswith("Loading ") and "Loading weights" not in plain.stderr
    assert "Loading weights" in verbose.stderr and "device=cpu" in verbose.stderr


def test_make_checkpoint_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = smolsight("make-checkpoint", str(tmp_path))
    assert run.returncode == 1 and "not empty" in run.stderr and "--force" in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    forced = smolsight("make-checkpoint", str(tmp_path), "--force")
    assert forced.returncode == 0 and (tmp_path / "config.json").is_file() and (tmp_path / "notes.txt").is_file()
    again = smolsight("make-checkpoint", str(tmp_path / "t"))
    assert again.returncode == 0 and smolsight("make-checkpoint", str(tmp_path / "t")).returncode == 0  # rewriting its own checkpoint


def test_oversized_png_and_jpeg_say_the_same_thing(tmp_path, tiny_checkpoint):
    """Both name the file, the image's pixels and the limit (PIL refuses a huge PNG before
    reading its size; a JPEG's size is read from its header)."""
    png, jpeg = tmp_path / "huge.png", tmp_path / "big.jpg"
    Image.new("1", (20_000, 9_500)).save(png)  # 190 MP: PIL's own guard fires first
    Image.new("RGB", (9_000, 8_000)).save(jpeg, quality=10)  # 72 MP: over our 64 MP default
    for path, pixels in ((png, "190,000,000 pixels"), (jpeg, "72,000,000 pixels")):
        run = smolsight("ask", "-q", "--model", tiny_checkpoint, str(path), "Describe.")
        line = run.stderr.strip()
        assert run.returncode == 1 and line.count("\n") == 0, line
        assert line.startswith(f"error: {path}:") and pixels in line and "over the limit of 64,000,000 pixels" in line
    smaller = smolsight("ask", "-q", "--model", tiny_checkpoint, str(jpeg), "Describe.", "--max-pixels", "1000")
    assert "72,000,000 pixels is over the limit of 1,000 pixels" in smaller.stderr


def test_corrupt_video_message_has_no_raw_errno(tmp_path, tiny_checkpoint):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 3000)
    run = smolsight("ask", "-q", "--model", tiny_checkpoint, str(clip), "Describe.")
    assert run.returncode == 1 and run.stderr.startswith(f"error: {clip}: ")
    assert "Errno" not in run.stderr and "'<none>'" not in run.stderr and "\n" not in run.stderr.strip()
