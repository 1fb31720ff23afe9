"""Shared fixtures: one tiny random-weight checkpoint and one engine per test session."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    from smolsight.testing import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny"))


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """float32, so batched and one-by-one greedy answers can be compared token for token."""
    from smolsight.engine import Engine

    return Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True)


def picture(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A small deterministic test picture with some structure."""
    image = Image.new("RGB", (width, height), (40 + seed * 30 % 200, 120, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 4, height // 4, width // 2, height // 2], fill=(220, 40 + seed * 50 % 200, 40))
    draw.ellipse([width // 2, height // 2, width - 10, height - 10], fill=(250, 250, 0))
    return image


@pytest.fixture
def image_file(tmp_path) -> str:
    path = tmp_path / "scene.png"
    picture().save(path)
    return str(path)
