"""One home per idea: the rules that were once written twice (with different values) now live
once, and every surface that needs them gets the same answer. Two of these were bugs."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
from helpers import cli, picture
from test_media import write_video

from smolsight.engine.fetch import UrlPolicy, fetch
from smolsight.engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_video, load_image, load_video
from smolsight.errors import MediaError
from smolsight.evals.runner import run_suite
from smolsight.evals.suite import load_suite
from smolsight.serve.convert import to_request
from smolsight.serve.protocol import ChatCompletionRequest
from smolsight.serve.settings import MediaPolicy
from smolsight.cli import ask_arguments
from smolsight.tasks import styled_prompt

SERVER_MEDIA = MediaPolicy(max_pixels=4096 * 4096, max_frames=8, video_fps=1.0)


def server_prompt(text: str, task: str, lang: str | None = None) -> str:
    body = ChatCompletionRequest(messages=[{"role": "user", "content": text}], task=task, task_lang=lang)
    return to_request(body, SERVER_MEDIA, 64).messages[-1].text


@pytest.mark.parametrize(
    "question, task, expected",
    [
        ("How many houses?", "count", "How many houses? Answer with a number only."),
        ("有几座房子？", "count", "有几座房子？只回答一个数字。"),
        ("What does the sign say?", "read", "What does the sign say? Output only the text."),
    ],
)
def test_the_server_task_adds_only_the_answer_instruction(question, task, expected, image_file):
    """The bug: the server appended the task's whole prompt ("…How many shrimp fry are in the
    image?"), unlike `ask --task`. CLI, server and evaluation now share `styled_prompt`."""
    assert server_prompt(question, task) == expected
    assert ask_arguments((image_file, question), None, task) == ([image_file], expected)
    assert styled_prompt(task, question) == expected
    assert "shrimp" not in server_prompt("How many houses?", "count")


def test_a_task_without_a_question_asks_the_tasks_own(image_file):
    assert server_prompt("", "count", "en") == "How many shrimp fry are in the image? Answer with a number only."
    assert server_prompt("", "count", "zh") == ask_arguments((image_file,), None, "count", "zh")[1]


def test_server_task_reaches_the_model_as_the_cli_sends_it(engine, image_file):
    from smolsight.engine import Request

    body = ChatCompletionRequest(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_base64()}},
        {"type": "text", "text": "How many houses?"}]}], task="count", max_tokens=1)  # fmt: skip
    request = to_request(body, SERVER_MEDIA, 64)
    direct = Request.simple(picture(), "How many houses? Answer with a number only.", options=request.options)
    assert engine.ask_batch([request])[0].input_tokens == engine.ask_batch([direct])[0].input_tokens


def png_base64() -> str:
    import base64
    import io

    buffer = io.BytesIO()
    picture().save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_one_media_suffix_set():
    assert {".tif", ".tiff"} <= IMAGE_SUFFIXES and ".m4v" in VIDEO_SUFFIXES
    assert is_video("clip.m4v") and is_video("http://cam/clip.M4V?x=1") and not is_video("plate.tif")


def test_m4v_and_tiff_cases_run_as_the_suite_validated_them(tmp_path, engine):
    """The bug: suites accepted .m4v/.tif that media loading did not know, so a `clip.m4v` case
    validated and then failed, opened as an image."""
    write_video(tmp_path / "clip.m4v")
    picture().save(tmp_path / "plate.tif")
    assert load_video(str(tmp_path / "clip.m4v")).total_frames == 12
    assert load_image(str(tmp_path / "plate.tif")).size == (320, 240)
    (tmp_path / "suite.yaml").write_text(
        "cases:\n"
        "  - {id: clip, scenario: any, media: clip.m4v, prompt: 'Where does the bar go?', answer_type: free}\n"
        "  - {id: plate, scenario: any, media: [plate.tif], prompt: 'What is written?', answer_type: free}\n",
        encoding="utf-8",
    )
    suite = load_suite(tmp_path / "suite.yaml")
    assert suite.cases[0].is_video and not suite.cases[1].is_video
    run = run_suite(engine, suite, progress=False, max_new_tokens=1)
    assert all(c.finish_reason != "error" for c in run.cases), [c.detail for c in run.cases]


class Drip(http.server.BaseHTTPRequestHandler):
    """Answers 200, then one byte every 0.3 s: a per-read timeout never fires on it."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.3)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def drip_site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/slow.png"
    server.shutdown()


def test_one_fetch_deadline_for_the_whole_download(drip_site):
    start = time.monotonic()
    with pytest.raises(MediaError, match="not fetched within 1 s"):
        fetch(drip_site, UrlPolicy(timeout_s=1.0))
    assert time.monotonic() - start < 2.5


def test_the_cli_fetches_through_the_same_fetcher(drip_site, tiny_checkpoint, monkeypatch):
    """`ask URL` uses the one fetcher: redirects are refused and malformed URLs are named."""
    monkeypatch.setattr("smolsight.engine.fetch.LOCAL_USER", UrlPolicy(timeout_s=1.0))
    monkeypatch.setattr("smolsight.engine.media.LOCAL_USER", UrlPolicy(timeout_s=1.0))
    run = cli("ask", "-q", "--model", tiny_checkpoint, drip_site, "Describe.")
    assert run.returncode == 1 and "not fetched within 1 s" in run.stderr
    bad = cli("ask", "-q", "--model", tiny_checkpoint, "http://127.0.0.1:99999/x.png", "Describe.")
    assert bad.returncode == 1 and "malformed URL" in bad.stderr


def test_redirects_are_not_followed_from_the_cli_either(tmp_path):
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(MediaError, match="HTTP 302"):
            load_image(f"http://127.0.0.1:{server.server_port}/cam.jpg")
    finally:
        server.shutdown()


def test_unused_port_is_a_clear_media_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MediaError, match="could not be fetched"):
        fetch(f"http://127.0.0.1:{port}/x.png", UrlPolicy())
