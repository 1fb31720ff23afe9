"""Scaling out on a real local Ray cluster (this machine's 2 CPUs, started and shut down here):
batch jobs on Ray Data give the same answers as in one process, and the server runs as Ray
Serve replicas that the official openai client talks to. Starting Ray and its actors takes
tens of seconds, so those tests are marked `slow` (CI runs them; see docs/development.md)."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from helpers import cli, free_port, picture

from smolsight.errors import SmolsightError
from smolsight.scale.batch import BatchInputError, done_ids, read_items

QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU cluster. Its workers, and the in-process runs they are compared with, decode with
    the lean step in float32 (SMOLSIGHT_FAST=lean, set before the workers start, so they inherit it):
    int8 rounds a row differently in a batch than alone, and Ray's batches are not the local ones."""
    from smolsight.scale.cluster import connect

    before = os.environ.get("SMOLSIGHT_FAST")
    os.environ["SMOLSIGHT_FAST"] = "lean"
    ray = connect(num_cpus=2)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    if before is None:
        del os.environ["SMOLSIGHT_FAST"]
    else:
        os.environ["SMOLSIGHT_FAST"] = before


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "line2").mkdir(parents=True)
    for i in range(4):
        picture(seed=i).save(folder / ("line2" if i == 3 else "") / f"cam{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 30)
    (folder / "notes.txt").write_text("not a picture")
    return folder


def answers(path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def run_batch(source, out, checkpoint, *extra) -> dict:
    run = cli("batch", str(source), "-o", str(out), "-q", "--model", checkpoint, "--dtype", "float32",
              "--max-new-tokens", "6", "--batch-size", "2", *extra)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return answers(out)


@pytest.mark.slow
def test_batch_on_ray_answers_as_one_process_does(ray_cluster, photos, tmp_path, tiny_checkpoint):
    local = run_batch(photos, tmp_path / "local.jsonl", tiny_checkpoint, "-p", QUESTION)
    remote = run_batch(photos, tmp_path / "ray.jsonl", tiny_checkpoint, "-p", QUESTION, "--ray", "--actors", "2")
    assert sorted(local) == ["broken.jpg", "cam0.png", "cam1.png", "cam2.png", "line2/cam3.png"]  # the .txt is not media
    assert {k: (r["answer"], r["finish_reason"], r["error"]) for k, r in local.items()} == \
           {k: (r["answer"], r["finish_reason"], r["error"]) for k, r in remote.items()}  # fmt: skip
    assert local["broken.jpg"]["error"].startswith(str(photos / "broken.jpg")) and local["broken.jpg"]["answer"] is None
    assert all(r["output_tokens"] == 6 and r["answer"] for k, r in remote.items() if k != "broken.jpg")


@pytest.mark.slow
def test_eval_on_ray_gives_the_runs_answers(ray_cluster, tmp_path, tiny_checkpoint):
    from smolsight.evals.results import load_run
    from smolsight.evals.synth import write_synthetic_suite

    suite = write_synthetic_suite(tmp_path / "suite", per_scenario=1)
    common = ["-q", "--model", tiny_checkpoint, "--dtype", "float32", "--max-new-tokens", "4", "--no-split", "--limit", "5"]
    assert cli("eval", str(suite), "-o", str(tmp_path / "local"), *common).returncode == 0
    remote = cli("eval", str(suite), "-o", str(tmp_path / "ray"), *common, "--ray", "--actors", "2", "--batch-size", "2")
    assert remote.returncode == 0, remote.stderr
    one, spread = load_run(tmp_path / "local"), load_run(tmp_path / "ray")
    assert [c.id for c in one.cases] == [c.id for c in spread.cases]  # suite order kept
    assert [(c.answer, c.passed, c.finish_reason) for c in one.cases] == [(c.answer, c.passed, c.finish_reason) for c in spread.cases]
    assert spread.meta["ray"] == {"actors": 2, "batch_size": 2, "cpus_per_actor": 1.0, "gpus_per_actor": 0.0}
    assert (tmp_path / "ray" / "report.html").is_file()


def test_batch_resumes_where_it_stopped(photos, tmp_path, tiny_checkpoint):
    out = tmp_path / "answers.jsonl"
    first = run_batch(photos, out, tiny_checkpoint, "-p", QUESTION)
    lines = out.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25], encoding="utf-8")  # killed while writing line 3
    assert done_ids(out) == {json.loads(line)["id"] for line in lines[:2]}
    again = cli("batch", str(photos), "-o", str(out), "-p", QUESTION, "--model", tiny_checkpoint, "--dtype", "float32",
                "--max-new-tokens", "6", "--batch-size", "2")  # fmt: skip
    assert again.returncode == 0 and "2 of 5 items already in" in again.stderr
    resumed = answers_tolerant(out)
    assert sorted(resumed) == sorted(first) and all(resumed[k]["answer"] == first[k]["answer"] for k in first)
    assert cli("batch", str(photos), "-o", str(out), "-p", QUESTION, "--model", "/no/such/model").returncode == 0  # all done: no model loaded


def answers_tolerant(path) -> dict[str, dict]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[entry["id"]] = entry
    return rows


def test_jsonl_input_with_its_own_prompts(tmp_path, tiny_checkpoint):
    picture().save(tmp_path / "a.png")
    picture(seed=1).save(tmp_path / "b.png")
    source = tmp_path / "jobs.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in [
        {"id": "pair", "media": ["a.png", "b.png"], "prompt": "What changed?"},
        {"media": "a.png"},
        {"id": "text-only", "prompt": "What is a PLC?"},
    ]) + "\n", encoding="utf-8")  # fmt: skip
    rows = run_batch(source, tmp_path / "out.jsonl", tiny_checkpoint, "-p", QUESTION)
    assert set(rows) == {"pair", "line-2", "text-only"}
    assert rows["line-2"]["prompt"] == QUESTION and rows["pair"]["media"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert rows["pair"]["input_tokens"] > rows["line-2"]["input_tokens"] > rows["text-only"]["input_tokens"]


@pytest.mark.parametrize(
    "lines, words",
    [
        (["{not json"], "jobs.jsonl:1: not valid JSON"),
        ([{"media": "a.png", "prompt": "x"}, {"media": "a.png", "question": "x"}], "jobs.jsonl:2: unknown key(s) question"),
        ([{"id": "a", "media": "a.png", "prompt": "x"}, {"id": "a", "media": "a.png", "prompt": "y"}], "jobs.jsonl:2: duplicate id 'a', first used on line 1"),
        ([{"media": "a.png"}], "jobs.jsonl:1: no prompt"),
        ([{"media": 3, "prompt": "x"}], "jobs.jsonl:1: media is a path or a list of paths"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, lines, words):
    source = tmp_path / "jobs.jsonl"
    source.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_items(source)


def test_bad_batch_inputs_fail_in_one_line_before_loading(tmp_path, photos):
    assert "a folder needs the question" in cli("batch", str(photos), "-o", str(tmp_path / "o.jsonl"), "--model", "/nope").stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    run = cli("batch", str(empty), "-p", QUESTION, "-o", str(tmp_path / "o.jsonl"), "--model", "/nope")
    assert run.returncode == 1 and run.stderr.strip() == f"error: {empty}: no image or video files in it"


def test_missing_ray_is_one_clear_line(monkeypatch, photos, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` fails
    (tmp_path / "suite.yaml").write_text("cases:\n  - {id: a, scenario: any, media: [photos/cam0.png], prompt: Hi, answer_type: free}\n")
    for args in (["batch", str(photos), "-p", QUESTION, "-o", str(tmp_path / "o.jsonl")], ["eval", str(tmp_path)], ["serve"]):
        run = cli(*args, "--ray", "--model", "/nope")
        assert run.returncode == 1 and run.stderr == "error: this needs Ray: pip install 'smolsight[ray]'\n", args
    from smolsight.scale.cluster import require_ray

    with pytest.raises(SmolsightError, match="pip install 'smolsight\\[ray\\]'"):
        require_ray()


# ---- Ray Serve ------------------------------------------------------------------------------




@pytest.fixture(scope="module")
def ray_serve(ray_cluster):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


def deploy(tiny_checkpoint: str, replicas: int) -> None:
    from ray import serve

    from smolsight.scale.serving import DEPLOYMENT, build_app

    app = build_app({"model": tiny_checkpoint, "dtype": "float32", "device": "cpu", "served_model_name": "tiny",
                     "replicas": str(replicas), "cpus_per_replica": "0.5"})  # fmt: skip
    serve.run(app, name=DEPLOYMENT, route_prefix="/")


def running_replicas() -> int:
    from ray import serve

    from smolsight.scale.serving import DEPLOYMENT

    status = serve.status().applications[DEPLOYMENT].deployments[DEPLOYMENT]
    return status.replica_states.get("RUNNING", 0)


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2])
def test_serve_replicas_answer_the_openai_client(ray_serve, tiny_checkpoint, engine, replicas):
    deploy(tiny_checkpoint, replicas)
    assert running_replicas() == replicas
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{ray_serve}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    messages = [{"role": "user", "content": "Describe the plant floor."}]
    direct = engine.ask(None, "Describe the plant floor.", max_new_tokens=8)

    def ask(_: int) -> str:
        return client.chat.completions.create(model="tiny", messages=messages, max_tokens=8).choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == [direct.text] * 6
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct.text  # streams equal the answer


def test_build_app_names_its_arguments():
    from smolsight.scale.serving import build_app, parse_autoscale

    with pytest.raises(SmolsightError, match="build_app takes model="):
        build_app({"replica": "2"})
    assert parse_autoscale("1:4") == (1, 4)
    with pytest.raises(SmolsightError, match="MIN:MAX"):
        parse_autoscale("4")
