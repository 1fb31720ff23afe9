"""Shared fixtures: one tiny random-weight checkpoint and one engine per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import picture

# Engines on CPU run vision on OpenVINO by default, converting new weights once: the tests keep
# their conversions in a cache of their own, kept between runs (the tiny checkpoint's weights are
# the same every session, so it converts once per machine). Tests about the cache use their own.
os.environ.setdefault("SMOLSIGHT_OPENVINO_CACHE", str(Path.home() / ".cache" / "smolsight-tests" / "openvino"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    from smolsight.checkpoints import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny"))


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """float32 and the lean decode step without int8, so batched and one-by-one greedy answers can be
    compared token for token (int8 rounds a row differently in a batch than alone: tests/test_leandecode.py
    and tests/test_fastpaths.py test the int8 paths)."""
    from smolsight.engine import Engine

    return Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True, fast="lean")


@pytest.fixture
def image_file(tmp_path) -> str:
    path = tmp_path / "scene.png"
    picture().save(path)
    return str(path)


@pytest.fixture(scope="session")
def blank_media(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "x.png"
    path.write_bytes(b"")  # scorers never open media; the suite only checks it exists
    return path


@pytest.fixture
def case(blank_media):
    """Makes a case to score answers against: case(answer_type, expected, **fields)."""
    from smolsight.evals.suite import Case

    def make(answer_type: str, expected=None, **fields) -> Case:
        fields.setdefault("scenario", "test")
        fields.setdefault("task", "describe")
        return Case(id="c", media=[blank_media], answer_type=answer_type, expected=expected, **fields)

    return make


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (test tools cannot download their own browser here)."""
    from pathlib import Path

    from helpers import missing_system_package
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        missing_system_package(f"no {CHROMIUM} (scripts/setup.sh installs chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
