"""Shared fixtures: one tiny random-weight checkpoint and one engine per test session."""

from __future__ import annotations

import pytest
from helpers import picture


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    from smolsight.checkpoints import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny"))


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """float32, so batched and one-by-one greedy answers can be compared token for token."""
    from smolsight.engine import Engine

    return Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True)


@pytest.fixture
def image_file(tmp_path) -> str:
    path = tmp_path / "scene.png"
    picture().save(path)
    return str(path)
