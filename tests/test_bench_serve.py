"""`smolsight bench-serve`: a real server on loopback, real streamed requests; the figures it
reports must add up (every request generates exactly --tokens tokens)."""

from __future__ import annotations

import json

import pytest
from helpers import cli


def test_bench_serve_measures_each_level_and_the_short_request(tiny_checkpoint, tmp_path):
    out = tmp_path / "serve.json"
    result = cli("bench-serve", "-m", tiny_checkpoint, "-q", "--concurrency", "1,3", "--tokens", "5", "--rounds", "2",
                 "--long-tokens", "40", "-o", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    levels = report["levels"]
    assert [level["concurrency"] for level in levels] == [1, 3]
    assert [level["requests"] for level in levels] == [2, 6] and [level["tokens"] for level in levels] == [10, 30]
    for level in levels:  # wall_s is rounded to 10 ms
        assert level["tokens"] / (level["wall_s"] + 0.006) <= level["tokens_per_s"] <= level["tokens"] / max(level["wall_s"] - 0.006, 1e-3)
    behind = report["short_behind_long"]
    assert behind["long_tokens"] == 40 and 0 < behind["short_ttft_alone_s"] and 0 < behind["short_ttft_behind_long_s"]
    assert report["machine"]["load_average"] and "clients" in result.stdout and "behind a 40-token stream" in result.stdout


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--concurrency", "0,4"], "--concurrency takes positive whole numbers"),
        (["--concurrency", "four"], "--concurrency takes positive whole numbers"),
        (["--tokens", "0"], "--tokens must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
    ],
)
def test_bench_serve_refuses_bad_arguments_before_loading(args, problem):
    result = cli("bench-serve", "-m", "/nonexistent/model", *args)
    assert result.returncode == 1 and problem in result.stderr and len(result.stderr.strip().splitlines()) == 1
