"""`smolsight bench`'s time split (preprocess, vision, prefill, decode) for every path, the machine
it records, and the image-cost sweep. No speed is asserted: only that the split is measured where
the work happens and adds up."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from helpers import picture

from smolsight.bench import Inputs, PhaseClock, SeedPath, SmolsightPath, peak_memory, seams_of, timed_run
from smolsight.cli import main


def test_nested_seams_count_only_their_own_time():
    class Work:
        def outer(self):
            time.sleep(0.05)
            self.inner()

        def inner(self):
            time.sleep(0.1)

    work = Work()
    with PhaseClock("cpu").watching([("prefill", work, "outer"), ("vision", work, "inner")]) as clock:
        work.outer()
    assert 0.1 <= clock.seconds["vision"] < 0.2 and 0.05 <= clock.seconds["prefill"] < 0.1
    assert "outer" not in vars(work) and "inner" not in vars(work)  # the seams are put back


def test_peak_memory_sees_a_brief_allocation_freed_before_the_end():
    """300 MB touched for a moment inside the block: the peak must count it, though nothing is left
    resident when the block ends (a sampler could miss it; the kernel's high-water mark does not)."""
    with peak_memory("cpu") as peak:
        block = bytearray(300_000_000)  # zero-filled: every page touched
        del block
    assert 0.28 <= peak() < 0.6
    with peak_memory("cpu") as peak:  # the mark is reset at the start of each block
        pass
    assert peak() < 0.05


def test_both_paths_get_the_split(engine, tiny_checkpoint):
    inputs = Inputs([picture(400, 300)], "Describe.", 4, None)
    for path in (SmolsightPath(engine), SeedPath(tiny_checkpoint, "cpu")):
        path.answer(inputs, 2)  # warm-up
        before = [getattr(owner, name) for _, owner, name in seams_of(path)]
        run = timed_run(path, inputs, 4, "cpu")
        split = run.split()
        assert split["preprocess_s"] > 0 and split["vision_s"] > 0 and split["prefill_s"] > 0, path.setup
        assert split["preprocess_s"] + split["vision_s"] + split["prefill_s"] <= run.ttft_s
        assert run.phases["decode"] > 0 and split["decode_ms_per_token"] > 0
        assert [getattr(owner, name) for _, owner, name in seams_of(path)] == before  # the seams are put back


def test_bench_reports_the_split_the_cpu_and_the_load(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--model", tiny_checkpoint, "--tokens", "2", "--repeats", "2", "--size", "320x240", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["inputs"]["image"] == "320x240"
    seed, smol = (report["paths"][name]["runs"] for name in ("seed path", "smolsight"))
    rounds = report["speedup"]["end_to_end_per_round"]
    assert rounds == [round(a["total_s"] / b["total_s"], 2) for a, b in zip(seed, smol)] and len(rounds) == 2
    assert "round by round" in result.output and f"{rounds[1]:.2f}x" in result.output
    for path in report["paths"].values():
        assert {"preprocess_s", "vision_s", "prefill_s", "other_s", "decode_ms_per_token"} <= set(path)
        assert path["vision_s"] > 0 and path["runs"][0]["load_average"] >= 0 and path["runs"][0]["phases"]["prefill"] > 0
    machine = report["machine"]
    assert machine["cpu"] and isinstance(machine["cpu_flags"], list) and machine["cpu_kind"] in ("amx", "avx512_bf16", "avx2", "basic")
    assert "vision: encoder + connector (s)" in result.output and "CPU flags:" in result.output


def test_image_cost_sweeps_sizes_under_both_policies(tiny_checkpoint, tmp_path):
    out = tmp_path / "cost.json"
    result = CliRunner().invoke(main, ["bench", "--model", tiny_checkpoint, "--image-cost", "--size", "64x64", "--size", "300x200",
                                       "--tokens", "2", "--repeats", "1", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {(row["image"], row["image_size"]): row for row in json.loads(out.read_text())["image_cost"]}
    assert set(rows) == {("64x64", "model's"), ("64x64", "native"), ("300x200", "model's"), ("300x200", "native")}
    assert rows["64x64", "native"]["input_tokens"] < rows["300x200", "native"]["input_tokens"] < rows["300x200", "model's"]["input_tokens"]
    assert rows["64x64", "model's"]["input_tokens"] > rows["300x200", "model's"]["input_tokens"]  # upscaled to 512x512: more tiles
    assert "native" in result.output and "input tokens" in result.output


def test_bench_refuses_bad_sizes(tiny_checkpoint):
    bad = CliRunner().invoke(main, ["bench", "--model", tiny_checkpoint, "--size", "640by480"])
    assert bad.exit_code == 1 and "invalid --size '640by480': use WIDTHxHEIGHT" in bad.output
    several = CliRunner().invoke(main, ["bench", "--model", tiny_checkpoint, "--size", "64x64", "--size", "32x32"])
    assert several.exit_code == 1 and "add --image-cost" in several.output
