"""The web page at /, end to end in headless Chromium against a live server on loopback:
choose an image, ask, watch the answer stream in, see the timings; desktop and phone sizes."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import pytest

from smolsight.engine import Chunk
from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings
from smolsight.tasks import styled_prompt

playwright = pytest.importorskip("playwright.sync_api")
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
EXAMPLE = str(resources.files("smolsight") / "assets" / "example.jpg")
QUESTION = "What is happening on this road?"
MODEL_ID = "smolvlm2-tiny-random"


@pytest.fixture(scope="module")
def live(engine):
    with LoopbackServer(create_app(engine, ServerSettings(model_name=MODEL_ID, max_tokens=2000))) as server:
        yield server




def ask_on_page(page, url: str) -> None:
    page.goto(url)
    page.set_input_files("#file", EXAMPLE)
    playwright.expect(page.locator("#preview img")).to_be_visible()
    page.fill("#question", QUESTION)
    page.select_option("#preset", "seed")
    page.select_option("#task", "describe")
    page.fill("#maxtokens", "24")
    page.click("#ask")
    playwright.expect(page.locator("#timings")).to_contain_text("tokens", timeout=60_000)


def test_upload_ask_and_see_the_streamed_answer(live, browser, engine, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 620})
    urls: list[str] = []
    page.on("response", lambda response: urls.append(response.url))
    ask_on_page(page, live.url)
    playwright.expect(page.locator("#model")).to_have_text(MODEL_ID)
    prompt = styled_prompt("describe", QUESTION)  # the page's task adds the answer instruction, as `ask --task` does
    expected = "".join(e.text for e in engine.stream(EXAMPLE, prompt, preset="seed", max_new_tokens=24) if isinstance(e, Chunk))
    assert page.inner_text("#answer").strip() == expected.strip()
    timings = page.inner_text("#timings")
    for label in ("finish length", "first token", "total", "speed", "out"):
        assert label in timings
    assert f"{live.url}/v1/chat/completions" in urls
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot))
    if os.environ.get("SMOLSIGHT_UPDATE_DOCS"):  # refresh the README's picture on demand only
        DOCS_IMG.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS_IMG / "web.png")
    page.close()


def test_phone_layout_stacks_and_fits(live, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    ask_on_page(page, live.url)
    drop, question, answer = (page.locator(s).bounding_box() for s in ("#drop", "#question", "#answer"))
    assert question["y"] > drop["y"] + drop["height"]  # one column: the question sits below the picture
    for box in (drop, question, answer):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    assert page.inner_text("#answer").strip()
    page.close()


def test_error_is_shown_and_stop_cancels(live, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    page.goto(live.url)
    page.click("#ask")  # no picture, no question
    playwright.expect(page.locator("#answer.error")).to_contain_text("prompt is empty")
    page.fill("#question", "Go on and on.")
    page.fill("#maxtokens", "2000")  # long enough to be stopped
    page.select_option("#preset", "seed")
    page.click("#ask")
    playwright.expect(page.locator("#answer")).not_to_be_empty(timeout=30_000)
    page.click("#stop")
    playwright.expect(page.locator("#timings")).to_contain_text("stopped")
    playwright.expect(page.locator("#ask")).to_be_enabled()
    page.close()
