"""`smolsight serve --watch`: the dashboard router on the real server, its questions answered
through the server's own batcher by the tiny checkpoint, and the page live in headless Chromium."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from watch_helpers import ScriptedBackend, fire_clip, wait_for

from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings
from smolsight.watch.dashboard import dashboard_router
from smolsight.watch.watcher import checked_config

playwright = pytest.importorskip("playwright.sync_api")
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def rules_file(tmp_path: Path, clip: Path, realtime: bool) -> str:
    fire = {"name": "fire", "ask": "Is there a fire?", "every_s": 1, "on_change": True, "alert_when": "yes", "max_new_tokens": 3}
    people = {"name": "people", "ask": "How many people are there?", "answer": "number", "every_s": 2, "alert_when": "> 0", "max_new_tokens": 3}
    sources = [{"name": "yard", "url": str(clip), "sample_fps": 2, "realtime": realtime, "rules": [fire, people]}]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"sources": sources, "outputs": {"dir": "out"}}, sort_keys=False))
    return str(path)


def test_serve_watch_answers_through_the_servers_batcher(tmp_path, engine):
    clip = fire_clip(tmp_path / "clip", fps=2, calm_s=1, fire_s=1, after_s=1)
    router = dashboard_router(checked_config(rules_file(tmp_path, clip, realtime=False)), lambda app: app.state.service.batcher)
    with LoopbackServer(create_app(engine, ServerSettings(model_name="tiny"), [router])) as server:
        state = wait_for(lambda: (s := httpx.get(f"{server.url}/watch/state").json())["sources"][0]["status"] == "ended" and s, 60,
                         "the clip to be watched to its end")  # fmt: skip
        frame = httpx.get(f"{server.url}/watch/frame/yard.jpg")
        metrics = httpx.get(f"{server.url}/watch/metrics").text
        server_metrics = httpx.get(f"{server.url}/metrics").text
        assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == "tiny"
        assert httpx.get(f"{server.url}/watch/frame/nowhere.jpg").status_code == 404
    source = state["sources"][0]
    assert source["counts"]["seen"] == 6 and {a["rule"] for a in source["answers"]} == {"fire", "people"}
    assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert 'smolsight_watch_frames_seen_total{source="yard"} 6.0' in metrics
    asked = total(metrics, "smolsight_watch_questions_total")
    assert asked >= 4 and total(server_metrics, "smolsight_finished_total") == asked  # every question went through the batcher
    assert total(server_metrics, 'smolsight_requests_total{endpoint="/watch",status="200"}') >= 3  # state (polled), frame, metrics
    assert 'endpoint="other"' not in server_metrics


def total(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name))




def test_dashboard_shows_the_frame_answers_and_the_alert_live(tmp_path, engine, browser):
    clip = fire_clip(tmp_path / "clip", fps=2, calm_s=1.5, fire_s=30, after_s=0)
    router = dashboard_router(checked_config(rules_file(tmp_path, clip, realtime=True)), lambda app: ScriptedBackend())
    with LoopbackServer(create_app(engine, ServerSettings(), [router])) as server:
        page = browser.new_page(viewport={"width": 1100, "height": 560})
        page.goto(f"{server.url}/watch")
        card = page.locator('.source[data-source="yard"]')
        playwright.expect(card.locator(".status")).to_have_text("live", timeout=20_000)
        playwright.expect(page.locator("#recent .open")).to_have_text("OPEN", timeout=20_000)  # arrives over SSE, no reload
        playwright.expect(card).to_have_class("source alert")
        playwright.expect(card.locator('tr[data-rule="fire"] td').nth(1)).to_have_text("yes")
        wait_for(lambda: page.evaluate("document.querySelector('.source img').naturalWidth") > 0, 10, "the last frame to show")
        started = time.monotonic()
        shot = tmp_path / "watch.png"
        page.screenshot(path=str(shot))
        if os.environ.get("SMOLSIGHT_UPDATE_DOCS"):
            DOCS_IMG.mkdir(exist_ok=True)
            shutil.copy(shot, DOCS_IMG / "watch.png")
        page.close()
    assert time.monotonic() - started < 15  # the page's event stream let the server stop
