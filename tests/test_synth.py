"""The synthetic suite: repeatable, loadable, and true to its pictures (ground truth is read
back from the pixels, not from the generator's bookkeeping); `load_suite` errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from smolsight.evals import synth
from smolsight.errors import SmolsightError
from smolsight.evals.scoring import score
from smolsight.evals.suite import SuiteError, load_suite
from smolsight.evals.synth import jet, write_synthetic_suite


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    return write_synthetic_suite(tmp_path_factory.mktemp("synthetic"), seed=0)


@pytest.fixture(scope="module")
def suite(suite_file):
    return load_suite(suite_file.parent)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(case) -> np.ndarray:
    return np.asarray(Image.open(case.media[0]).convert("RGB"), dtype=int)


def _cases(suite, scenario):
    return [c for c in suite if c.scenario == scenario]


# --- repeatable, loadable ---------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(suite_file, tmp_path):
    first = _hashes(suite_file.parent)
    assert first == _hashes(write_synthetic_suite(tmp_path / "again", seed=0).parent)
    other = _hashes(write_synthetic_suite(tmp_path / "other", seed=1).parent)
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first)


def test_suite_shape(suite):
    assert len(suite) == 6 * 3 + 3 + 1  # text adds a question case per picture; one video
    assert {c.scenario for c in suite} == {"scenery", "accident", "simulation", "counting", "text", "measurement", "video"}
    assert all(c.prompt and all(p.is_file() for p in c.media) for c in suite)
    assert {c.lang for c in _cases(suite, "counting")} == {"zh", "en"}
    assert [c.is_video for c in suite].count(True) == 1
    assert str(suite.cases[0].media[0]).endswith("media/scenery-00.png")


def test_correct_answers_pass(suite):
    """An answer stating the ground truth passes every case: the cases and scorers agree."""
    for case in suite:
        if case.answer_type == "number":
            answer = f"{case.expected}"
        elif case.answer_type == "trend":
            first, second = case.expected.split("_")
            answer = f"It moves to the {second}." if first == "moves" else f"The {first} side is hotter."
        else:
            answer = " ".join(case.expected)
        assert score(answer, case).passed, (case.id, answer, score(answer, case).detail)


# --- ground truth matches the pixels ----------------------------------------------------------


def _components(mask: np.ndarray) -> int:
    """8-connected components of a boolean image, by joining runs row to row (union-find)."""
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[tuple[int, int, int]] = []
    for row in mask:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        current = []
        for start, stop in zip(edges[::2], edges[1::2]):
            parent.append(len(parent))
            label = parent[-1]
            for p_start, p_stop, p_label in previous:
                if p_start <= stop and p_stop >= start:  # overlapping or diagonally touching
                    parent[root(p_label)] = root(label)
            current.append((start, stop, label))
        previous = current
    return len({root(i) for i in range(len(parent))})


def test_counting_shrimp_count_back_from_the_image(suite):
    cases = _cases(suite, "counting")
    assert [c.expected for c in cases][0] <= 5 and cases[-1].expected >= 34  # spread over 1..200
    for case in cases:
        pixels = _pixels(case)
        body = (np.abs(pixels - np.array(case.meta["body_colour"])) <= 20).all(axis=2)
        centres = np.array(case.meta["centres"])
        assert len(centres) == case.expected
        assert body[centres[:, 1], centres[:, 0]].all(), case.id
        if not case.meta["overlap"]:
            assert _components(body) == case.expected, case.id
    assert any(c.meta["overlap"] for c in cases) and any(not c.meta["overlap"] for c in cases)


def test_components_counter():
    mask = np.zeros((6, 8), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one
    mask[4:6, 3:8] = True
    mask[3, 7] = True
    assert _components(mask) == 2


def test_simulation_trend_from_pixel_values(suite):
    lut = jet(np.linspace(0, 1, 256))
    for case in _cases(suite, "simulation"):
        x0, y0, x1, y1 = case.meta["field_box"]
        field = _pixels(case)[y0:y1:4, x0:x1:4]
        values = np.argmin(((field[:, :, None, :] - lut[None, None]) ** 2).sum(axis=3), axis=2)
        h, w = values.shape
        halves = {"left": values[:, : w // 2], "right": values[:, w // 2 :], "top": values[: h // 2], "bottom": values[h // 2 :]}
        means = {side: part.mean() for side, part in halves.items()}
        assert max(means, key=means.get) + "_hotter" == case.expected


def test_measurement_length_from_ruler_and_pencil_pixels(suite):
    for case in _cases(suite, "measurement"):
        pixels = _pixels(case)
        tick_row = pixels[int(case.meta["ruler_top"]) + 18]  # only whole-cm ticks reach this deep
        dark = np.flatnonzero(tick_row.sum(axis=1) < 200)
        ticks = [run.mean() for run in np.split(dark, np.flatnonzero(np.diff(dark) > 1) + 1)]
        assert len(ticks) == synth.RULER_CM + 1
        per_cm = (ticks[-1] - ticks[0]) / synth.RULER_CM
        row = pixels[int(case.meta["pencil_y"])]
        pencil = np.flatnonzero(np.abs(row - np.array(case.meta["table"])).sum(axis=1) > 60)
        assert (pencil[-1] - pencil[0] + 1) / per_cm == pytest.approx(case.expected, abs=0.1)
        assert case.unit == "cm" and case.tolerance.rel == 0.1
    assert _cases(suite, "measurement")[0].expected == 14.7  # the field report's pencil


def test_scenery_objects_are_where_recorded(suite):
    for case in _cases(suite, "scenery"):
        pixels = _pixels(case)
        for obj in case.meta["objects"]:
            x, y = obj["center"]
            assert np.abs(pixels[y, x] - obj["colour"]).max() <= 12, (case.id, obj)
        sky = pixels[: case.meta["horizon"] // 2].reshape(-1, 3).mean(axis=0)
        assert sky[2] > sky[0] + 50  # blue above
        kinds = {o["kind"] for o in case.meta["objects"]}
        assert ("house" in case.expected) == ("house" in kinds) and "tree" in kinds


def test_accident_has_fire_and_smoke(suite):
    for case in _cases(suite, "accident"):
        pixels = _pixels(case)
        x0, y0, x1, y1 = case.meta["flame_box"]
        flame = pixels[y0:y1, x0:x1].reshape(-1, 3)
        fiery = (flame[:, 0] > 190) & (flame[:, 2] < 110)
        assert fiery.mean() > 0.8, case.id
        x0, y0, x1, y1 = case.meta["smoke_box"]
        smoke = pixels[y0:y1, x0:x1].reshape(-1, 3)
        grey = (np.ptp(smoke, axis=1) < 25) & (smoke[:, 0] > 60) & (smoke[:, 0] < 170)
        assert grey.mean() > 0.8, case.id


def test_text_is_drawn_with_real_cjk_glyphs(suite):
    def glyph(char: str) -> bytes:
        image = Image.new("L", (64, 64))
        ImageDraw.Draw(image).text((4, 4), char, fill=255, font=synth.font(48))
        return image.tobytes()

    assert glyph("工") != glyph("\U0010fffd")  # not the missing-glyph box
    for case in _cases(suite, "text"):
        pixels = _pixels(case)
        for box in case.meta["boxes"]:
            x0, y0, x1, y1 = box
            ink = np.abs(pixels[y0:y1, x0:x1] - case.meta["plate"]).sum(axis=2) > 150
            assert ink.mean() > 0.05, (case.id, box)
        if case.answer_type == "anls":
            assert case.expected == [" ".join(case.meta["lines"])]
    assert any("iNeuOS 工业互联网操作系统" in c.expected[0] for c in _cases(suite, "text") if c.answer_type == "anls")


def test_missing_cjk_font_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SMOLSIGHT_CJK_FONT", "")
    monkeypatch.setattr(synth, "CJK_FONT_PATHS", ())
    monkeypatch.setattr(synth, "_fontconfig_cjk_fonts", lambda: [])
    synth.cjk_font_path.cache_clear()
    try:
        with pytest.raises(SmolsightError, match="fonts-noto-cjk"):
            synth.cjk_font_path()
    finally:
        synth.cjk_font_path.cache_clear()


def test_video_dot_moves_as_expected(suite):
    (case,) = _cases(suite, "video")
    with av.open(str(case.media[0])) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(stream)]
    assert len(frames) == synth.VIDEO_FRAMES
    assert 3 <= len(frames) / synth.VIDEO_FPS <= 4

    def centre(frame: np.ndarray) -> np.ndarray:
        red = (frame[:, :, 0] > 150) & (frame[:, :, 1] < 100) & (frame[:, :, 2] < 100)
        return np.argwhere(red).mean(axis=0)[::-1]  # (x, y)

    dx, dy = centre(frames[-1]) - centre(frames[0])
    moved = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("bottom" if dy > 0 else "top")
    assert case.expected == f"moves_{moved}"


# --- load_suite errors ------------------------------------------------------------------------

GOOD = {"id": "ok", "scenario": "counting", "media": ["a.png"], "answer_type": "number", "expected": 3}


def _write_yaml(tmp_path: Path, *cases: dict) -> Path:
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "suite.yaml"
    path.write_text("cases:\n" + "".join("  - " + json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"media": ["missing.png"]}, "media file not found"),
        ({"answer_type": "numbr"}, "unknown answer_type 'numbr'"),
        ({"expected": None}, "expected is required for answer_type 'number'"),
        ({"expected": "many"}, "expected must be a number"),
        ({"tolerance": {"abs": 1, "rel": 0.1}}, "exactly one of abs or rel"),
        ({"answer_type": "trend", "expected": "diagonal"}, "unknown direction"),
        ({"answer_type": "choice", "expected": "C", "choices": ["A", "B"]}, "must be one of choices"),
        ({"expectd": 3}, "expectd"),
        ({"scenario": "custom", "task": None}, "no prompt"),
        ({"media": ["a.png", "b.mp4"]}, "media file not found"),
    ],
)
def test_load_suite_names_the_bad_case_and_line(tmp_path, bad, message):
    path = _write_yaml(tmp_path, GOOD, {**GOOD, "id": "bad-one", **bad})
    with pytest.raises(SuiteError, match=message) as err:
        load_suite(path)
    assert f"{path}:3: case 'bad-one'" in str(err.value)


def test_load_suite_jsonl_line_numbers_and_duplicates(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "expected": None}) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"cases.jsonl:3: case 'ok': expected is required"):
        load_suite(path)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError, match="duplicate id, first used on line 1"):
        load_suite(path)
    path.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    loaded = load_suite(path)
    assert loaded.name == "cases" and loaded.cases[0].media == [tmp_path.resolve() / "a.png"]


def test_load_suite_defaults_and_video(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    path = _write_yaml(tmp_path, {**GOOD, "media": "clip.mp4"})
    case = load_suite(tmp_path).cases[0]
    assert case.is_video and case.task == "count" and case.lang == "zh" and case.tolerance is None
    assert load_suite(path).name == tmp_path.name


def test_load_suite_bad_files(tmp_path):
    with pytest.raises(SuiteError, match="no suite.yaml"):
        load_suite(tmp_path)
    (tmp_path / "suite.yaml").write_text("cases: {a: 1}\n", encoding="utf-8")
    with pytest.raises(SuiteError, match="list of cases"):
        load_suite(tmp_path)
    (tmp_path / "suite.yaml").write_text("cases:\n  - {id: a, prompt: What now?, answer_type: free}\n", encoding="utf-8")
    with pytest.raises(SuiteError) as raised:
        load_suite(tmp_path)
    message = str(raised.value)  # one line: file, line and column, the problem; no "<unicode string>"
    assert message.startswith(f"{tmp_path / 'suite.yaml'}:2:") and "not valid YAML: expected ',' or '}'" in message
    assert "\n" not in message and "unicode string" not in message
