"""The evaluation runner end to end: the tiny checkpoint on the synthetic suite, a scripted
second backend that knows the answers, a looping one, comparisons, the CLI, and the report in
a real browser."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import ScriptedBackend, cli as smolsight, picture, truth
from PIL import Image

from smolsight.engine import Request, Result
from smolsight.errors import SmolsightError
from smolsight.evals.compare import compare_runs, write_comparison
from smolsight.evals.results import load_run
from smolsight.evals.runner import run_suite, write_run
from smolsight.evals.suite import Case, case_prompt, load_suite
from smolsight.cli import ask_arguments
from smolsight.tasks import styled_prompt
from smolsight.evals.synth import write_synthetic_suite
from smolsight.tasks import TASK_PROMPTS

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The synthetic suite, one picture per scenario plus the video: 8 cases, all in Chinese."""
    return load_suite(write_synthetic_suite(tmp_path_factory.mktemp("suite"), seed=0, per_scenario=1))


@pytest.fixture(scope="module")
def bilingual_suite(tmp_path_factory):
    """Two pictures per scenario: the second of each is asked in English."""
    return load_suite(write_synthetic_suite(tmp_path_factory.mktemp("suite2"), seed=1, per_scenario=2))


@pytest.fixture(scope="module")
def tiny_run(engine, suite, tmp_path_factory):
    """The tiny checkpoint's answers to the whole suite, written out."""
    run = run_suite(engine, suite, progress=False, batch_size=4, max_new_tokens=4)
    out = tmp_path_factory.mktemp("run")
    write_run(run, out)
    return run, out


LOOP = "虾苗在水中游来游去，" * 30


def test_ground_truth_backend_scores_everything(bilingual_suite):
    backend = ScriptedBackend([truth(case) for case in bilingual_suite])
    run = run_suite(backend, bilingual_suite, progress=False, batch_size=5)
    total = len(bilingual_suite)
    assert [len(batch) for batch in backend.batches] == [min(5, total - start) for start in range(0, total, 5)]
    failed = [(c.id, c.answer, c.detail) for c in run.cases if not c.passed]
    assert not failed
    summary = run.summary()
    assert summary["overall"]["accuracy"] == 1.0 and summary["overall"]["scored"] == len(bilingual_suite)
    assert set(summary["scenarios"]) == {c.scenario for c in bilingual_suite}
    assert {c.lang for c in run.cases} == {"zh", "en"}
    assert summary["overall"]["looped"] == 0
    assert run.cases[1].latency_s == pytest.approx(0.11)  # each row's own time within its batch


def test_looping_backend_is_flagged_looped(suite, tmp_path):
    run = run_suite(ScriptedBackend([LOOP] * len(suite)), suite, progress=False)
    assert all(case.metrics["looped"] for case in run.cases)
    assert run.summary()["overall"]["looped"] == len(suite)
    write_run(run, tmp_path)
    html = Page.parse(tmp_path / "report.html")
    assert sum("LOOPED" in " ".join(row["cells"]) for row in html.rows("case-table")) == len(suite)


def test_unreadable_media_is_an_error_row_not_a_crash(tmp_path, engine):
    picture().save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cases = [{"id": name, "scenario": "scenery", "media": [f"{name}.{ext}"], "answer_type": "contains_all", "expected": ["sky"]}
             for name, ext in (("good", "png"), ("broken", "png"), ("broken-video", "mp4"))]  # fmt: skip
    (tmp_path / "broken-video.mp4").write_bytes(b"\0" * 500)
    (tmp_path / "suite.yaml").write_text(json.dumps({"cases": cases}))
    # The broken picture fails while the request is built, the broken video inside the engine's
    # batch: the batch is retried one request at a time and the good case still gets answered.
    run = run_suite(engine, load_suite(tmp_path), progress=False, batch_size=3, max_new_tokens=2)
    good, picture_case, video_case = run.cases
    assert good.finish_reason in ("length", "stop", "repetition") and good.output_tokens > 0
    assert picture_case.finish_reason == video_case.finish_reason == "error"
    assert "broken.png" in picture_case.detail and "broken-video.mp4" in video_case.detail
    assert run.summary()["overall"]["errors"] == 2


# ---------------------------------------------------------------------------------------------
# Prompt styles


def test_prompt_styles_on_the_synthetic_suite(suite):
    by_id = {case.id: case for case in suite}
    assert case_prompt(by_id["counting-00"], "raw") == TASK_PROMPTS["raw"]["count"]["zh"].format(subject="虾苗")
    assert case_prompt(by_id["scenery-00"], "raw") == "请描述这张图像？"
    for case in suite:  # the synthetic suite writes the short prompts: short sends them unchanged
        assert case_prompt(case, "short") == case.prompt
    video = by_id["video-00"]  # a question of its own: raw keeps it, short already has the instruction
    assert case_prompt(video, "raw") == video.prompt == case_prompt(video, "short")


def test_a_cases_own_prompt_gets_the_answer_instruction(tmp_path):
    picture().save(tmp_path / "x.png")
    own = Case(id="c", scenario="counting", media=[tmp_path / "x.png"], prompt="池子里有几只虾？", answer_type="number", expected=3)
    assert case_prompt(own, "short") == "池子里有几只虾？只回答一个数字。"
    assert case_prompt(own, "raw") == "池子里有几只虾？"
    assert styled_prompt("count", "How many shrimp?") == "How many shrimp? Answer with a number only."
    assert styled_prompt("count", "How many? Answer with a number only.") == "How many? Answer with a number only."
    assert styled_prompt("measure", "How long is it?", lang="zh") == "How long is it?只回答一个以厘米为单位的数字。"
    with pytest.raises(SmolsightError, match="unknown prompt task"):
        styled_prompt("weigh", "How heavy?")


def test_ask_task_reads_ask_arguments(image_file):
    assert ask_arguments((image_file, "图中有几只虾？"), None, "count") == ([image_file], "图中有几只虾？只回答一个数字。")
    assert ask_arguments((image_file,), None, "count") == ([image_file], "图像中有多少虾苗？只回答一个数字。")
    assert ask_arguments((image_file,), None, "read", "en") == ([image_file], "What is the text in the image? Output only the text.")
    assert ask_arguments(("x" * 5000,), None, "trend") == ([], "x" * 5000 + " Answer in one sentence.")  # not a file name
    assert ask_arguments((image_file,), "How many?", "count", "en") == ([image_file], "How many? Answer with a number only.")


# ---------------------------------------------------------------------------------------------
# The tiny checkpoint end to end, results.json and report.html


class Page(HTMLParser):
    """What the checks need from a report: section ids, each table's rows (cell texts, image
    sources, class) and each chart's bars."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, list[dict]] = {}
        self.charts: dict[str, int] = {}
        self._table = self._row = self._chart = None

    @classmethod
    def parse(cls, path: Path) -> "Page":
        page = cls()
        page.feed(path.read_text(encoding="utf-8"))
        return page

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "table":
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = {"cells": [], "images": [], "class": a.get("class") or ""}
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row["cells"].append("")
        elif tag == "img" and self._row is not None:
            self._row["images"].append(a["src"])
        elif tag == "svg":
            self._chart = a["id"]
            self.charts[self._chart] = 0
        elif tag == "rect" and a.get("class") == "bar":
            self.charts[self._chart] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data

    def rows(self, table: str) -> list[dict]:
        """Body rows (the header row left out)."""
        return self.tables[table][1:]


def decodes_as_jpeg(uri: str) -> bool:
    head, _, payload = uri.partition(",")
    return head == "data:image/jpeg;base64" and Image.open(io.BytesIO(base64.b64decode(payload))).format == "JPEG"


def test_tiny_checkpoint_results_json(tiny_run, suite):
    run, out = tiny_run
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [c["id"] for c in data["cases"]] == [c.id for c in suite]
    assert data["meta"]["runtime"]["device"] == "cpu" and data["meta"]["prompt_style"] == "short"
    assert data["meta"]["options"]["max_new_tokens"] == 4
    for case in data["cases"]:
        assert case["finish_reason"] in ("stop", "length", "repetition")
        assert 0 < case["output_tokens"] <= 4 and case["input_tokens"] > 0
        assert case["latency_s"] >= case["ttft_s"] > 0
        assert isinstance(case["passed"], bool) and 0 <= case["score"] <= 1 and case["detail"]
        assert {"distinct_2", "repeated_ngram_ratio", "looped"} <= set(case["metrics"])
    assert set(data["summary"]["scenarios"]) == {c.scenario for c in suite}
    assert load_run(out).to_dict() == data == load_run(out / "results.json").to_dict()


def test_tiny_checkpoint_report_has_every_section_filled(tiny_run, suite):
    run, out = tiny_run
    page = Page.parse(out / "report.html")
    assert page.sections == ["overview", "charts", "scenarios", "cases"]
    scenarios = list(dict.fromkeys(c.scenario for c in suite))
    assert len(scenarios) == 7  # the six scenarios of the field report, and the video
    assert [row["cells"][0] for row in page.rows("scenario-table")] == [*scenarios, "overall"]
    assert page.charts == {"chart-accuracy": len(scenarios), "chart-latency": len(scenarios)}
    rows = page.rows("case-table")
    assert len(rows) == len(suite)
    for row, case in zip(rows, suite):
        text = " ".join(row["cells"])
        assert case.id in text and case.prompt in text and ("PASS" in text or "FAIL" in text)
        assert row["images"] and all(decodes_as_jpeg(uri) for uri in row["images"])
        assert len(row["images"]) == (2 if case.is_video else 1)  # a video shows its first and last frames
        answer = next(c for c in run.cases if c.id == case.id).answer
        assert " ".join(answer.split()) in " ".join(text.split())


def test_compare_two_runs(tiny_run, suite, tmp_path):
    tiny, out = tiny_run
    truthful = run_suite(ScriptedBackend([truth(c) for c in suite]), suite, progress=False, adapter_label="truth")
    runs = [load_run(out), truthful]
    text = compare_runs(runs)
    assert "B: truth" in text and "A: " in text
    lines = text.splitlines()
    for scenario in {c.scenario for c in suite}:
        assert any(line.startswith(scenario + " ") for line in lines)
    overall = next(line for line in lines if line.startswith("overall"))
    assert f"{len(suite)}/{len(suite)} 100%" in overall
    differs = [line for line in lines if line.startswith("* ")]
    assert len(differs) == sum(1 for c in tiny.cases if not c.passed)  # every tiny failure differs from the truth
    html = write_comparison(runs, tmp_path)
    page = Page.parse(html)
    assert page.charts == {"chart-accuracy": 2 * 7, "chart-latency": 2 * 7}
    assert [row["cells"][0] for row in page.rows("run-table")] == ["A", "B"]
    assert len(page.rows("case-table")) == len(suite)
    assert sum("differs" in row["class"] for row in page.rows("case-table")) == len(differs)
    data = json.loads((tmp_path / "compare.json").read_text(encoding="utf-8"))
    assert data["overall"]["B"]["accuracy"] == 1.0 and len(data["cases"]) == len(suite)


def test_load_run_errors_name_the_file(tmp_path):
    with pytest.raises(SmolsightError, match="no results.json"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(SmolsightError, match="not a results file"):
        load_run(tmp_path)


# ---------------------------------------------------------------------------------------------
# The report in a real browser


def test_report_renders_in_chromium(tiny_run, suite, tmp_path, browser):
    _, out = tiny_run
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto((out / "report.html").as_uri())
    for section in ("overview", "charts", "scenarios", "cases"):
        assert page.locator(f"#{section}").is_visible()
    assert page.locator("#scenario-table tbody tr").count() == 8
    assert page.locator("#case-table tbody tr").count() == len(suite)
    widths = page.eval_on_selector_all("#case-table img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(widths) == len(suite) + 1 and all(w > 0 for w in widths)
    for chart in ("#chart-accuracy", "#chart-latency"):
        box = page.locator(chart).bounding_box()
        assert box["width"] > 300 and box["height"] > 100
    assert all(url.startswith(("file:", "data:")) for url in requests)  # opens offline
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert Image.open(shot).size[1] > 900
    if os.environ.get("SMOLSIGHT_UPDATE_DOCS"):  # refresh the README's picture on demand only
        DOCS_IMG.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS_IMG / "report.png")


# ---------------------------------------------------------------------------------------------
# The commands, as users run them




def test_cli_synth_eval_and_compare(tmp_path, tiny_checkpoint):
    made = smolsight("synth", str(tmp_path / "s"), "--per-scenario", "1")
    assert made.returncode == 0, made.stderr
    assert "8 cases" in made.stdout and "measurement" in made.stdout and (tmp_path / "s" / "suite.yaml").is_file()
    common = ["--model", tiny_checkpoint, "--limit", "2", "--max-new-tokens", "3", "--no-split"]
    first = smolsight("eval", str(tmp_path / "s"), "--out", str(tmp_path / "a"), *common)
    assert first.returncode == 0, first.stderr
    assert "2/2" in first.stderr  # the progress bar, on stderr
    assert first.stdout.splitlines()[0].startswith("scenario") and "overall" in first.stdout
    second = smolsight("eval", str(tmp_path / "s"), "--out", str(tmp_path / "b"), "--prompt-style", "raw",
                       "--scenario", "counting", "-q", *common)  # fmt: skip
    assert second.returncode == 0 and "1/1" not in second.stderr, second.stderr
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert [c.id for c in a.cases] == ["scenery-00", "accident-00"] and [c.id for c in b.cases] == ["counting-00"]
    assert b.cases[0].prompt == "这是虾苗养殖图像，请分析虾苗数量？" and (tmp_path / "b" / "report.html").is_file()
    compared = smolsight("eval", "--compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "b"), "--out", str(tmp_path / "c"))
    assert compared.returncode == 0, compared.stderr
    assert "Per scenario" in compared.stdout and "counting-00" in compared.stdout and "scenery-00" in compared.stdout
    assert (tmp_path / "c" / "compare.html").is_file() and (tmp_path / "c" / "compare.json").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "/no/such/suite"], "no such suite"),
        (["eval", "--compare", "/no/such/run"], "no results.json"),
        (["synth", "OUT", "--per-scenario", "0"], "per_scenario must be at least 1"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, words):
    run = smolsight(*[str(tmp_path / "o") if a == "OUT" else a for a in args])
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert words in run.stderr and "Traceback" not in run.stderr


def test_cli_eval_bad_scenario_fails_before_loading_the_model(tmp_path, suite):
    run = smolsight("eval", str(suite.path), "--model", "/no/such/model", "--scenario", "weather")
    assert run.returncode == 1 and "no scenario weather" in run.stderr and "Traceback" not in run.stderr


def test_ask_task_appends_the_answer_instruction(tiny_checkpoint, engine, image_file):
    run = smolsight("ask", "-q", "--model", tiny_checkpoint, image_file, "How many shrimp?", "--task", "count",
                    "--json", "--max-new-tokens", "1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    sent = engine.ask(image_file, "How many shrimp? Answer with a number only.", max_new_tokens=1)
    plain = engine.ask(image_file, "How many shrimp?", max_new_tokens=1)
    assert json.loads(run.stdout)["input_tokens"] == sent.input_tokens > plain.input_tokens


class CrashingBackend(ScriptedBackend):
    """Raises RuntimeError (a fault of ours, not of the input) for requests with these prompts."""

    def __init__(self, answers: list[str], crash_on: set[str]) -> None:
        super().__init__(answers)
        self.crash_on = crash_on

    def ask_batch(self, requests: list[Request]) -> list[Result]:
        if any(r.messages[-1].text in self.crash_on for r in requests):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().ask_batch(requests)


def test_a_case_that_crashes_is_recorded_and_the_run_goes_on(suite, capfd):
    accident = {c.id for c in suite if c.scenario == "accident"}
    crash_on = {case_prompt(c, "short") for c in suite if c.id in accident}
    backend = CrashingBackend([truth(c) for c in suite if c.id not in accident], crash_on)
    run = run_suite(backend, suite, progress=False, batch_size=4)
    errored = {c.id for c in run.cases if c.finish_reason == "error"}
    assert errored == accident and len(run.cases) == len(suite)
    assert all("RuntimeError: CUDA error" in c.detail and c.passed is False for c in run.cases if c.id in errored)
    assert all(c.passed for c in run.cases if c.id not in errored)
    assert run.summary()["overall"]["errors"] == len(accident)
    assert "Traceback" in capfd.readouterr().err
