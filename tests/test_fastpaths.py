"""Fast paths are only worth having if they give the plain path's answers: these tests check that on
the tiny random-weight checkpoint (greedy, float32), with int8 held to a documented agreement
threshold instead. No timings are asserted: speed is `smolsight bench`'s job."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import picture
from PIL import Image

from smolsight.engine import engine as engine_module
from smolsight.engine import fastpaths
from smolsight.bench import relative
from smolsight.cli import main
from smolsight.engine import Engine, Request
from smolsight.errors import SmolsightError
from smolsight.engine.int8 import int8_product, packed_int8
from smolsight.engine.fastpaths import FastPaths, Int8DecodeLinear, default_fast_paths, growing_layer_class, parse_fast_paths
from smolsight.engine.leandecode import LeanDecodeStep
from smolsight.engine.options import resolve_options
from smolsight.engine.prompts import Message

# Share of leading greedy tokens the int8 path must reproduce, averaged over the requests below
# (docs/performance.md: 0.58-0.68 measured on the tiny checkpoint, whose random logits have small gaps).
INT8_AGREEMENT = 0.4
TOKENS = 24


def load(checkpoint: str, fast: str) -> Engine:
    return Engine.load(checkpoint, device="cpu", dtype="float32", quiet=True, fast=fast)


@pytest.fixture(scope="module")
def plain(tiny_checkpoint) -> Engine:
    return load(tiny_checkpoint, "none")


def requests(preset: str = "seed") -> list[Request]:
    """Different images and sizes (so rows are padded differently), a text-only question, two presets."""
    options = resolve_options(preset, max_new_tokens=TOKENS, min_new_tokens=TOKENS if preset == "seed" else 0)
    return [
        Request([Message("user", "What is in the picture?", images=[picture(320, 240, seed=1)])], options),
        Request([Message("user", "Count the vehicles.", images=[picture(200, 300, seed=2)])], options, split=False),
        Request([Message("user", "Say something about farms and roads.")], options),
    ]


def answers(engine: Engine, batch: list[Request]) -> list[tuple[str, int, str]]:
    return [(r.raw_text, r.output_tokens, r.finish_reason) for r in engine.ask_batch(batch)]


def leading_agreement(reference: str, other: str) -> float:
    """Share of the reference's words reproduced before the first difference (tokens are words here)."""
    ref, got = reference.split(), other.split()
    same = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    return same / max(len(ref), 1)


@pytest.mark.parametrize("preset", ["seed", "precise"])
@pytest.mark.parametrize("spec", ["decode_threads=1", "decode_threads=2", "decode_threads=auto"])
def test_exact_fast_paths_give_the_plain_tokens(tiny_checkpoint, plain, spec, preset):
    fast = load(tiny_checkpoint, spec)
    assert fast.fast == parse_fast_paths(spec, "cpu")
    expected = answers(plain, requests(preset))
    assert answers(fast, requests(preset)) == expected
    assert [answers(fast, [r])[0] for r in requests(preset)] == expected


def mean_agreement(references: list[tuple], others: list[tuple]) -> float:
    return sum(leading_agreement(r[0], o[0]) for r, o in zip(references, others)) / len(references)


def test_growing_cache_layer_returns_what_concatenation_returns():
    from transformers.cache_utils import DynamicLayer

    growing, concatenating = growing_layer_class()(), DynamicLayer()
    for length in (300, 1, 1, 5, 400, 1):  # prefill, steps, and growth past the first blocks
        keys, values = torch.randn(2, 3, length, 8), torch.randn(2, 3, length, 8)
        got, want = growing.update(keys, values), concatenating.update(keys, values)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        assert growing.get_seq_length() == concatenating.get_seq_length()


def test_int8_decode_agrees_with_the_plain_path(tiny_checkpoint, plain):
    int8 = load(tiny_checkpoint, "int8")
    layers = [m for m in int8.model.modules() if isinstance(m, Int8DecodeLinear)]
    assert len(layers) == 2 * 7 + 1  # two decoder layers of q, k, v, o, gate, up, down; and the LM head
    expected = answers(plain, requests())
    batched = answers(int8, requests())
    alone = [answers(int8, [r])[0] for r in requests()]
    assert all(tokens == TOKENS for _, tokens, _ in batched + alone)
    for got in (batched, alone):
        agreement = mean_agreement(expected, got)
        assert agreement >= INT8_AGREEMENT, f"int8 agreed on {agreement:.0%} of leading tokens"


def test_int8_keeps_prefill_exact_and_scales_each_row_on_its_own(tiny_checkpoint):
    int8 = load(tiny_checkpoint, "int8")
    layer = next(m for m in int8.model.modules() if isinstance(m, Int8DecodeLinear))
    prompt = torch.randn(2, 7, layer.full.in_features)
    step = torch.randn(3, 1, layer.full.in_features) * torch.tensor([1.0, 30.0, 0.1])[:, None, None]
    with torch.inference_mode():
        assert torch.equal(layer(prompt), layer.full(prompt))
        decoded = layer(step)
        exact = layer.full(step)
        assert not torch.equal(decoded, exact)
        assert torch.allclose(decoded, exact, atol=0.05 * exact.abs().amax(-1, keepdim=True).max().item())
        # A row's result does not depend on the other rows (one activation scale would couple them).
        assert all(torch.equal(decoded[i], layer(step[i : i + 1])[0]) for i in range(3))
        assert not torch.equal(int8_product(step.float()[:, 0], layer.packed)[0], decoded[0][0])


@pytest.mark.parametrize("bias", [False, True])
def test_int8_copy_is_torchs_dynamic_quantisation_exactly(bias):
    """`packed_int8` builds what torch's own dynamic int8 module makes of a Linear layer, without
    the module (whose constructor packs a full-size placeholder first): the same int8 values,
    scales and products, bit for bit."""
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    torch.manual_seed(3)
    linear = torch.nn.Linear(96, 40, bias=bias)
    with torch.no_grad():
        linear.weight[5] *= 40  # one loud output channel: per-channel scales must differ
    linear.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = DynamicInt8Linear.from_float(linear)
    expected_weight, expected_bias = torch.ops.quantized.linear_unpack(reference._packed_params._packed_params)
    weight, got_bias = torch.ops.quantized.linear_unpack(packed_int8(linear.weight, linear.bias))
    assert torch.equal(weight.int_repr(), expected_weight.int_repr())
    assert torch.equal(weight.q_per_channel_scales(), expected_weight.q_per_channel_scales())
    assert (got_bias is None) == (not bias) and (not bias or torch.equal(got_bias, expected_bias))
    x = torch.randn(1, 96) * 3
    assert torch.equal(int8_product(x, packed_int8(linear.weight, linear.bias)), reference(x))


def test_repeated_image_skips_the_vision_encoder_and_gives_the_same_answer(plain):
    calls = []
    hook = plain.model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        plain.vision_cache.clear()
        image = picture(300, 200, seed=5)
        first = plain.ask(image, "What is here?", "seed", max_new_tokens=12)
        again = plain.ask(image, "What is here?", "seed", max_new_tokens=12)
        assert len(calls) == 1 and again.raw_text == first.raw_text
        plain.vision_cache.clear()
        fresh = plain.ask(image, "What is here?", "seed", max_new_tokens=12)
        assert len(calls) == 2 and fresh.raw_text == first.raw_text
    finally:
        hook.remove()


def noise(width: int, height: int, seed: int) -> Image.Image:
    """A picture none of whose tiles repeats another."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


class CountingVision:
    """The engine's vision backend, noting how many tiles each call encodes."""

    def __init__(self, backend) -> None:
        self.backend, self.tiles = backend, []

    def __call__(self, pixels, pixel_mask):
        self.tiles.append(pixels.shape[0] * pixels.shape[1])
        return self.backend(pixels, pixel_mask)


def test_tiles_seen_before_are_not_encoded_again_and_give_the_same_features(plain, monkeypatch):
    """A reference picture beside a new one: only the new picture's tiles reach the encoder, and the
    features (so the answer) are those of encoding everything afresh."""
    counting = CountingVision(plain.vision)
    monkeypatch.setattr(plain, "vision", counting)
    reference, frame = noise(300, 200, seed=5), noise(260, 180, seed=6)
    plain.vision_cache.clear()
    tiles_of_reference = len(plain.process(plain.request(reference, "?"))["pixel_values"][0])
    plain.ask(reference, "What is here?", "seed", max_new_tokens=2)
    assert counting.tiles == [tiles_of_reference]
    both = plain.request([reference, frame], "What changed?", "seed", max_new_tokens=12)
    inputs = plain.process(both)
    tiles_of_both = len(inputs["pixel_values"][0])
    with torch.inference_mode():
        cached = plain.image_features(inputs)
    assert counting.tiles == [tiles_of_reference, tiles_of_both - tiles_of_reference]
    answer = plain.ask_batch([both])[0]
    assert len(counting.tiles) == 2  # the whole request now comes from the cache
    plain.vision_cache.clear()
    with torch.inference_mode():
        fresh = plain.image_features(inputs)
    assert counting.tiles[-1] == tiles_of_both
    assert (cached - fresh).abs().max().item() < 1e-5
    assert plain.ask_batch([both])[0].raw_text == answer.raw_text


def test_a_tile_repeated_in_one_request_is_encoded_once_and_the_cache_stays_bounded(plain, monkeypatch):
    counting = CountingVision(plain.vision)
    monkeypatch.setattr(plain, "vision", counting)
    monkeypatch.setattr(engine_module, "TILE_CACHE_SIZE", 20)
    plain.vision_cache.clear()
    uniform = Image.new("RGB", (400, 300), (40, 90, 160))  # every tile, the downscaled whole picture's too, the same pixels
    inputs = plain.process(plain.request(uniform, "?"))
    tiles = len(inputs["pixel_values"][0])
    with torch.inference_mode():
        features = plain.image_features(inputs)
    assert tiles > 2 and counting.tiles == [1]
    assert len(features) == tiles * plain.processor.image_seq_len
    for seed in range(4):
        plain.ask(picture(300, 200, seed=20 + seed), "?", "seed", max_new_tokens=1)
        assert len(plain.vision_cache) <= 20
    assert sum(counting.tiles) > 20


def test_requests_prepared_on_two_threads_keep_their_features_while_the_cache_evicts(plain, monkeypatch):
    """A cache far smaller than one picture: each thread's tiles are evicted by the other's while it
    encodes, and every request still gets the features it would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(engine_module, "TILE_CACHE_SIZE", 3)
    inputs = [plain.process(plain.request(noise(200 + 20 * i, 150, seed=30 + i), "?")) for i in range(6)]
    with torch.inference_mode():
        alone = []
        for item in inputs:
            plain.vision_cache.clear()
            alone.append(plain.image_features(item))
        plain.vision_cache.clear()
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(plain.image_features, inputs + inputs[::-1]))
    assert len(plain.vision_cache) <= 3
    for got, expected in zip(together, alone + alone[::-1]):
        assert got.shape == expected.shape and (got - expected).abs().max().item() < 1e-5


def test_defaults_are_used_without_flags_and_can_be_switched_off(tiny_checkpoint, monkeypatch):
    monkeypatch.delenv("SMOLSIGHT_FAST", raising=False)
    engine = Engine.load(tiny_checkpoint, device="cpu", quiet=True)
    assert engine.fast == default_fast_paths("cpu")
    assert isinstance(engine.decode_forward, LeanDecodeStep) == engine.fast.lean
    # The lean step makes its own fused int8 copies; transformers' forward gets them only without it.
    assert any(isinstance(m, Int8DecodeLinear) for m in engine.model.modules()) == (engine.fast.int8 and not engine.fast.lean)
    monkeypatch.setenv("SMOLSIGHT_FAST", "none")
    engine = Engine.load(tiny_checkpoint, device="cpu", quiet=True)
    assert engine.fast == FastPaths()
    assert not any(isinstance(m, Int8DecodeLinear) for m in engine.model.modules())
    assert not isinstance(engine.decode_forward, LeanDecodeStep)


def test_threads_fast_path_sets_torch_threads(tiny_checkpoint):
    before = torch.get_num_threads()
    try:
        load(tiny_checkpoint, "threads=1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("others, expected", [(1.5, 1), (0.1, None)])
def test_auto_decode_threads_use_one_thread_only_on_a_busy_machine(monkeypatch, others, expected):
    before = torch.get_num_threads()
    monkeypatch.setattr(fastpaths.CPU_WATCH, "others_cores", lambda: others)
    with fastpaths.thread_count("auto"):
        assert torch.get_num_threads() == (expected or before)
    assert torch.get_num_threads() == before


def test_cpu_watch_sees_another_busy_process():
    watch = fastpaths.CpuWatch()
    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    try:
        time.sleep(1.0)
        assert watch.others_cores() >= 0.5
    finally:
        burner.wait()


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("turbo", "unknown fast path 'turbo'"),
        ("threads=0", "positive count"),
        ("threads=two", "positive count"),
        ("static_cache", "unknown fast path 'static_cache'"),
    ],
)
def test_bad_fast_path_specs_are_named(tiny_checkpoint, spec, problem):
    with pytest.raises(SmolsightError, match=problem):
        load(tiny_checkpoint, spec)


def test_fast_path_spec_parsing():
    assert parse_fast_paths("int8, decode_threads=1,threads=2", "cpu") == FastPaths(int8=True, decode_threads=1, threads=2)
    assert parse_fast_paths("none", "cuda") == FastPaths()
    assert parse_fast_paths("decode_threads=auto", "cpu") == FastPaths(decode_threads="auto")
    assert parse_fast_paths(None, "cuda") == default_fast_paths("cuda")


def test_bench_runs_both_paths_on_the_same_inputs(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", "--model", tiny_checkpoint, "--tokens", "3", "--repeats", "1", "--batch", "2", "-o", str(out), "--ocr"]
    )
    assert result.exit_code == 0, result.output
    assert "smolsight vs the seed path:" in result.output and "time to first token" in result.output
    report = json.loads(out.read_text())
    words = relative(report["speedup"]["end_to_end"])
    assert f"{words} end to end" in result.output and re.fullmatch(r"\d+\.\d\dx (faster|slower)", words)
    seed, smol = report["paths"]["seed path"], report["paths"]["smolsight"]
    assert seed["input_tokens"] == smol["input_tokens"] > 100  # same image and prompt, tiles included
    assert seed["output_tokens"] == smol["output_tokens"] == 3
    assert len(seed["runs"]) == len(smol["runs"]) == 1
    assert report["speedup"]["end_to_end"] == pytest.approx(seed["end_to_end_s"] / smol["end_to_end_s"], rel=0.01)
    cost = report["ocr"]  # the bench picture has no text: the reading's cost, not its lines
    assert cost["engine"] == "rapidocr" and cost["seconds_per_image"] > 0 and len(cost["runs"]) == 1
    assert f"OCR (rapidocr): {cost['seconds_per_image']:.2f} s per image" in result.output


@pytest.mark.parametrize("ratio, words", [(2.8, "2.80x faster"), (1.0, "1.00x faster"), (0.17, "5.88x slower"), (0.5, "2.00x slower")])
def test_bench_says_slower_when_smolsight_is_slower(ratio, words):
    assert relative(ratio) == words


def test_bench_rejects_bad_arguments(tiny_checkpoint):
    result = CliRunner().invoke(main, ["bench", "--model", tiny_checkpoint, "--tokens", "1"])
    assert result.exit_code == 1 and "--tokens at least 2" in result.output
