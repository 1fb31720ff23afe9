"""`smolsight bench`: the seed's code path against smolsight's engine, in one process, on the same inputs.

Shared machines are noisy (the same run has measured 18 s one time and 31 s another), so only
ratios measured side by side mean anything: both paths are loaded in one process, run on the
same image and prompt with the same forced output length (min = max new tokens), interleaved
(the order alternates every repeat), and summarised by medians. The engine's vision cache is
cleared before every smolsight run, so both paths pay for the vision encoder every time.

One process has one OpenMP setup. torch is imported here before the engine, so OpenMP keeps its
default wait policy, as the seed path had; smolsight's own processes make idle threads sleep
(smolsight.openmp), which helps its prefill on a busy machine, so on a busy machine this bench
understates smolsight. Set OMP_WAIT_POLICY to run both paths under another policy.

Every path's time is split into preprocess (the processor), vision (encoder + connector), prefill
(the decoder over the prompt) and decode (per token) by `PhaseClock`, which times the callables
named by `seams_of(path)`: any path built on the `Engine`, or on a transformers model and
processor, gets the split without code of its own.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import torch  # before the engine: the seed path runs with OpenMP's default settings (see smolsight.openmp)
from PIL import Image, ImageDraw

from .console import format_table, log
from .engine import Engine, fastpaths, resolve_model
from .engine.cpu import cpu_defaults, this_cpu
from .errors import SmolsightError
from .engine.fastpaths import Int8DecodeLinear
from .engine.media import load_image

DEFAULT_PROMPT = "请描述这张图像？"  # the field report's question
SEED = "seed path"
SMOLSIGHT = "smolsight"


@dataclass
class TimedRun:
    """One timed answer (or batch of answers) of one path."""

    ttft_s: float
    total_s: float
    output_tokens: int
    input_tokens: int
    peak_extra_gb: float  # memory above what was in use when the run began (activations, KV cache)
    phases: dict = field(default_factory=dict)  # seconds in preprocess, vision, prefill (`PhaseClock`)
    load_average: float = 0.0  # 1-minute load average as the run began

    def decode_tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode if self.output_tokens > 1 and decode > 0 else 0.0

    def split(self) -> dict:
        """Where the time went: seconds before the first token by phase (`other`: the rest of it,
        such as building requests and choosing the first token), and wall time per decode step."""
        before_first = {phase: self.phases.get(phase, 0.0) for phase in ("preprocess", "vision", "prefill")}
        steps = self.output_tokens - 1
        return {
            **{f"{phase}_s": round(seconds, 4) for phase, seconds in before_first.items()},
            "other_s": round(max(0.0, self.ttft_s - sum(before_first.values())), 4),
            "decode_ms_per_token": round(1000 * (self.total_s - self.ttft_s) / steps, 2) if steps > 0 else 0.0,
        }


@dataclass
class PathReport:
    name: str
    setup: str
    load_s: float
    weights_gb: float
    runs: list[TimedRun] = field(default_factory=list)

    def summary(self, batch: int) -> dict:
        """Medians over the repeats: the figures the table and the ratios use."""
        median = statistics.median
        total = median([r.total_s for r in self.runs])
        return {
            "load_s": round(self.load_s, 2),
            "ttft_s": round(median([r.ttft_s for r in self.runs]), 3),
            "decode_tokens_per_s": round(median([r.decode_tokens_per_s() for r in self.runs]), 2),
            "end_to_end_s": round(total, 3),
            "images_per_s": round(batch / total, 4),
            "weights_gb": round(self.weights_gb, 3),
            "peak_extra_gb": round(median([r.peak_extra_gb for r in self.runs]), 3),
            "input_tokens": self.runs[0].input_tokens,
            "output_tokens": self.runs[0].output_tokens,
            **{key: round(median([r.split()[key] for r in self.runs]), 4) for key in self.runs[0].split()},
        }


@dataclass
class Inputs:
    """One distinct image per row of the batch, so neither path can reuse one row's vision work for another."""

    images: list[Image.Image]
    prompt: str
    tokens: int
    image_size: int | None

    @property
    def batch(self) -> int:
        return len(self.images)


def distinct_copies(image: Image.Image, count: int) -> list[Image.Image]:
    """`count` copies that differ in one pixel each: the same cost, different content."""
    copies = []
    for index in range(count):
        copy = image.copy()
        copy.putpixel((index % image.width, index // image.width), (index * 37 % 256, 0, 255))
        copies.append(copy)
    return copies


class SeedPath:
    """The field report's code: AutoProcessor + AutoModelForImageTextToText, bfloat16, eager attention,
    apply_chat_template(tokenize=True, return_dict=True), generate(do_sample=False), batch_decode."""

    setup = "transformers generate, bfloat16, eager attention"

    def __init__(self, source: str, device: str) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.device = device
        self.processor = AutoProcessor.from_pretrained(source)
        self.model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch.bfloat16, _attn_implementation="eager"
        ).to(device)
        self.processor.tokenizer.padding_side = "left"

    def answer(self, inputs: Inputs, tokens: int) -> tuple[float, int, int]:
        """(seconds to the first new token, input tokens, new tokens) for one batch of answers."""
        start = time.perf_counter()
        conversations = [
            [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": inputs.prompt}]}]
            for image in inputs.images
        ]
        processor_kwargs = {"padding": True}
        if inputs.image_size:
            processor_kwargs["size"] = {"longest_edge": inputs.image_size}
        model_inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs=processor_kwargs,
        ).to(self.model.device, dtype=torch.bfloat16)  # fmt: skip
        first = FirstToken(start)
        generated = self.model.generate(
            **model_inputs, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens, streamer=first
        )
        prompt_length = model_inputs["input_ids"].shape[1]
        self.processor.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)
        return first.seconds, prompt_length, generated.shape[1] - prompt_length


class FirstToken:
    """A generate() streamer that notes when the first new token arrives (its first call is the prompt)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.calls = 0
        self.seconds = 0.0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.seconds = time.perf_counter() - self.start

    def end(self) -> None:
        pass


class SmolsightPath:
    """The engine with its defaults (or the fast paths asked for), greedy, loop guard off so that the
    output length is forced to the same count as the seed path's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.model = engine.model
        fast = ", ".join(engine.fast.names()) or "none"
        self.setup = f"smolsight engine, {engine.dtype}, {engine.attn} attention, fast paths: {fast}, vision on {engine.vision.name}"

    def answer(self, inputs: Inputs, tokens: int) -> tuple[float, int, int]:
        start = time.perf_counter()
        self.engine.vision_cache.clear()
        requests = [
            self.engine.request(
                image, inputs.prompt, max_new_tokens=tokens, min_new_tokens=tokens, loop_guard=False,
                image_size=inputs.image_size,
            )  # fmt: skip
            for image in inputs.images
        ]
        before_stream = time.perf_counter() - start
        results = self.engine.ask_batch(requests)
        return before_stream + results[0].ttft_s, results[0].input_tokens, min(r.output_tokens for r in results)


class PhaseClock:
    """Seconds spent in each phase, from the callables a path's work goes through (its seams).

    A seam's time is its own: a seam running inside another (the seed path's vision encoder inside
    its prefill forward) is taken out of the outer one, so the phases add up to the time they
    cover. On CUDA the device is synchronised before each clock reading, so a phase is charged
    for the kernels it queued, not the next one; torch's CPU work is synchronous."""

    def __init__(self, device: str) -> None:
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.seconds: dict[str, float] = defaultdict(float)
        self.inner: list[float] = []  # per open seam: time spent in seams nested in it

    def timed(self, phase: str | Callable[[tuple, dict], str], function: Callable) -> Callable:
        """`function`, timed under `phase` (or the phase that `phase(args, kwargs)` names)."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if torch.compiler.is_compiling():  # traced into a compiled step: that step is timed from outside
                return function(*args, **kwargs)
            name = phase(args, kwargs) if callable(phase) else phase
            self.sync()
            start = time.perf_counter()
            self.inner.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                self.sync()
                elapsed = time.perf_counter() - start
                self.seconds[name] += elapsed - self.inner.pop()
                if self.inner:
                    self.inner[-1] += elapsed

        return wrapper

    @contextmanager
    def watching(self, seams: list[tuple]) -> Iterator["PhaseClock"]:
        """Time the (phase, object, attribute name) seams for the duration of the block."""
        with ExitStack() as stack:
            for phase, owner, name in seams:
                stack.enter_context(replaced(owner, name, self.timed(phase, getattr(owner, name))))
            yield self


@contextmanager
def replaced(owner: object, name: str, value: object) -> Iterator[None]:
    """Set `owner.name` on the instance for the block, then restore what was there."""
    had_own = name in vars(owner)
    before = vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if had_own:
            setattr(owner, name, before)
        else:
            delattr(owner, name)


def forward_phase(args: tuple, kwargs: dict) -> str:
    """A model forward over more than one new token per row is prefill; over one, a decode step."""
    tokens = kwargs.get("input_ids")
    if tokens is None:
        tokens = kwargs.get("inputs_embeds", args[0] if args else None)
    return "prefill" if tokens is not None and tokens.shape[1] > 1 else "decode"


def seams_of(path) -> list[tuple]:
    """What `PhaseClock` times for a path: an engine's `process` (the processor), `image_features`
    (vision, whatever backend computes it), model forward and decode step (which may be a compiled
    copy of the forward); or, for a path on a transformers model and processor, the processor's
    chat template call, the model's `get_image_features` and its forward. Prefill and decode are
    told apart by the forward's input length."""
    engine = getattr(path, "engine", None)
    if engine is not None:
        return [("preprocess", engine, "process"), ("vision", engine, "image_features"), (forward_phase, engine.model, "forward"),
                ("decode", engine, "decode_forward")]  # fmt: skip
    return [("preprocess", path.processor, "apply_chat_template"), ("vision", path.model.model, "get_image_features"),
            (forward_phase, path.model, "forward")]  # fmt: skip


def timed_run(path, inputs: Inputs, tokens: int, device: str) -> TimedRun:
    load = round(os.getloadavg()[0], 2)
    with peak_memory(device) as peak, PhaseClock(device).watching(seams_of(path)) as clock:
        start = time.perf_counter()
        ttft, input_tokens, output_tokens = path.answer(inputs, tokens)
        total = time.perf_counter() - start
    if output_tokens != tokens:
        raise SmolsightError(f"{path.setup}: generated {output_tokens} tokens instead of the forced {tokens}")
    return TimedRun(ttft, total, output_tokens, input_tokens, peak(), dict(clock.seconds), load)


@contextmanager
def peak_memory(device: str) -> Iterator[Callable[[], float]]:
    """Peak memory above the level at the start, in GB: CUDA's allocator counters; on Linux the
    kernel's high-water mark of the process's resident size, reset at the start (both paths share
    one process, so only the growth during a run belongs to that run). It is exact and costs
    nothing while the run goes on: the 5 ms sampling thread it replaces slowed decode steps by 8 %
    on two cores. Elsewhere the resident size is sampled every 5 ms."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield lambda: (torch.cuda.max_memory_allocated() - base) / 1e9
        return
    base = resident_bytes()
    if reset_high_water_mark():
        yield lambda: (high_water_mark() - base) / 1e9
        return
    highest = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            highest[0] = max(highest[0], resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: (highest[0] - base) / 1e9
    finally:
        done.set()
        sampler.join()
        highest[0] = max(highest[0], resident_bytes())


def reset_high_water_mark() -> bool:
    """Reset the kernel's peak resident size of this process (Linux 4.0+); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return high_water_mark() > 0
    except (OSError, ValueError):
        return False


def high_water_mark() -> int:
    """The process's peak resident size since the last reset, in bytes (VmHWM in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmHWM in /proc/self/status")


def resident_bytes() -> int:
    import resource

    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def weights_gb(model: torch.nn.Module, decode_step=None) -> float:
    """Bytes of parameters and buffers, plus copies held outside them: int8 copies (the int8 fast
    path) and the lean decode step's fused weights (`decode_step.extra_bytes`)."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    total += sum(m.int8_bytes() for m in model.modules() if isinstance(m, Int8DecodeLinear))
    total += getattr(decode_step, "extra_bytes", 0)
    return total / 1e9


def bench_image() -> Image.Image:
    """A deterministic 800×600 scene (13 tiles with tiling on, as in the baselines)."""
    image = Image.new("RGB", (800, 600), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 420, 800, 600], fill=(70, 120, 60))
    draw.rectangle([180, 250, 420, 460], fill=(200, 60, 40))
    draw.polygon([(160, 250), (300, 150), (440, 250)], fill=(120, 40, 30))
    draw.ellipse([600, 60, 720, 180], fill=(250, 230, 90))
    draw.line([(0, 520), (800, 470)], fill=(40, 40, 40), width=18)
    return image


def run_bench(
    model: str,
    device: str | None,
    dtype: str | None,
    attn: str | None,
    adapter: str | None,
    fast: str | None,
    image: str | None,
    prompt: str,
    batch: int,
    tokens: int,
    image_size: int | str | None,
    repeats: int,
    quiet: bool = False,
    ocr: bool = False,
    size: tuple[int, int] | None = None,
    vision_backends: bool = False,
) -> dict:
    """Load both paths, warm each up, run them interleaved `repeats` times; return the report.
    With `ocr`, also time the OCR model reading the picture (uncached), `repeats` times; with
    `vision_backends`, the vision encoder alone on each backend (`vision_cost`)."""
    if batch < 1 or tokens < 2 or repeats < 1:
        raise SmolsightError("--batch and --repeats must be at least 1 and --tokens at least 2")
    fast = fastpaths.parse_fast_paths(fast, device or ("cuda" if torch.cuda.is_available() else "cpu"))  # before the seed path loads
    if vision_backends:
        from .engine import vision

        vision.check("openvino-int8", device or "cpu")  # a missing extra fails here, before minutes of timing
    if ocr:
        from .engine.ocr import engine_name, reader

        reader(engine_name())  # a missing OCR extra fails here, before minutes of timing
    load_before = [round(x, 2) for x in os.getloadavg()]
    source = resolve_model(model)
    picture = bench_picture(image, size)
    inputs = Inputs(distinct_copies(picture, batch), prompt, tokens, image_size)
    read_files(source)
    log("Loading the seed path…", quiet)
    start = time.perf_counter()
    seed = SeedPath(source, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_load = time.perf_counter() - start
    log("Loading smolsight…", quiet)
    start = time.perf_counter()
    engine = Engine.load(model, device, dtype, attn, adapter, quiet=quiet, fast=fast)  # shows a first OpenVINO conversion
    smol = SmolsightPath(engine)
    reports = {
        SEED: (seed, PathReport(SEED, seed.setup, seed_load, weights_gb(seed.model))),
        SMOLSIGHT: (smol, PathReport(SMOLSIGHT, smol.setup, time.perf_counter() - start, weights_gb(engine.model, engine.decode_forward))),
    }
    for name, (path, _) in reports.items():
        log(f"Warming up {name} (2 tokens)…", quiet)
        path.answer(inputs, 2)
    for repeat in range(repeats):
        order = list(reports) if repeat % 2 == 0 else list(reversed(reports))
        for name in order:
            path, report = reports[name]
            run = timed_run(path, inputs, tokens, engine.device)
            report.runs.append(run)
            log(f"[{repeat + 1}/{repeats}] {name}: first token {run.ttft_s:.2f} s, "
                     f"{run.decode_tokens_per_s():.1f} tokens/s, {run.total_s:.2f} s end to end", quiet)  # fmt: skip
    report = make_report(inputs, engine, [report for _, report in reports.values()], repeats)
    if ocr:
        report["ocr"] = ocr_cost(picture, repeats, quiet)
    if vision_backends:
        report["vision"] = vision_cost(engine, picture, image_size, repeats, quiet)
    report["machine"]["load_average_before"] = load_before  # 1, 5, 15 minutes; "load_average" is after
    return report


SWEEP_SIZES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise SmolsightError(f"invalid --size {text!r}: use WIDTHxHEIGHT in pixels, e.g. 640x480")
    return int(width), int(height)


def bench_picture(image: str | None, size: tuple[int, int] | None) -> Image.Image:
    """The image given (or the generated scene), resized to `size` when one is asked for."""
    picture = load_image(image) if image else bench_image()
    return picture.resize(size, Image.Resampling.LANCZOS) if size and size != picture.size else picture


def run_image_cost(
    model: str, device: str | None, dtype: str | None, attn: str | None, adapter: str | None, fast: str | None,
    image: str | None, prompt: str, sizes: list[tuple[int, int]], image_size: int | str, tokens: int, repeats: int, quiet: bool = False,
) -> dict:  # fmt: skip
    """smolsight's input tokens and time split for the picture at each size, under the model's own
    image size and under `image_size` (e.g. native), all cases interleaved (the order reverses every
    repeat), medians of `repeats`. The seed path is not run: the question is what a policy costs."""
    if tokens < 2 or repeats < 1:
        raise SmolsightError("--repeats must be at least 1 and --tokens at least 2")
    load_before = [round(x, 2) for x in os.getloadavg()]
    log("Loading smolsight…", quiet)
    start = time.perf_counter()
    engine = Engine.load(model, device, dtype, attn, adapter, quiet=True, fast=fast)
    path = SmolsightPath(engine)
    load_s = time.perf_counter() - start
    cases = {(size, policy): (Inputs([bench_picture(image, size)], prompt, tokens, policy),
                              PathReport(f"{size[0]}x{size[1]}", path.setup, load_s, weights_gb(engine.model)))
             for size in sizes for policy in (None, image_size)}  # fmt: skip
    log("Warming up (2 tokens)…", quiet)
    path.answer(next(iter(cases.values()))[0], 2)
    for repeat in range(repeats):
        order = list(cases) if repeat % 2 == 0 else list(reversed(cases))
        for size, policy in order:
            inputs, report = cases[size, policy]
            run = timed_run(path, inputs, tokens, engine.device)
            report.runs.append(run)
            log(f"[{repeat + 1}/{repeats}] {report.name}, image size {policy or 'model'}: {run.input_tokens} input tokens, "
                f"first token {run.ttft_s:.2f} s", quiet)  # fmt: skip
    rows = [{"image": report.name, "image_size": policy or "model's", **report.summary(1), "runs": [asdict(r) for r in report.runs]}
            for (_, policy), (_, report) in cases.items()]  # fmt: skip
    machine_info = machine(engine.device)
    machine_info["load_average_before"] = load_before
    return {"date": date.today().isoformat(), "machine": machine_info, "setup": path.setup,
            "inputs": {"prompt": prompt, "tokens": tokens, "repeats": repeats, "model": engine.name, "image_size": image_size},
            "image_cost": rows}  # fmt: skip


COST_COLUMNS = [
    ("input tokens", "input_tokens", "{}"), ("first token (s)", "ttft_s", "{:.2f}"), ("preprocess (s)", "preprocess_s", "{:.3f}"),
    ("vision (s)", "vision_s", "{:.2f}"), ("prefill (s)", "prefill_s", "{:.2f}"), ("decode (ms/token)", "decode_ms_per_token", "{:.1f}"),
]  # fmt: skip


def format_image_cost(report: dict) -> str:
    inputs = report["inputs"]
    rows = [[row["image"], str(row["image_size"]), *(fmt.format(row[key]) for _, key, fmt in COST_COLUMNS)] for row in report["image_cost"]]
    return "\n".join([
        f"{inputs['model']} on {report['machine']['device']} ({report['machine']['cpu']}), {inputs['tokens']} new tokens, "
        f"medians of {inputs['repeats']}; {report['setup']}",
        machine_line(report["machine"]),
        "",
        format_table(["image", "image size", *(label for label, _, _ in COST_COLUMNS)], rows, right=tuple(range(2, 2 + len(COST_COLUMNS)))),
    ])  # fmt: skip


def ocr_cost(picture: Image.Image, repeats: int, quiet: bool) -> dict:
    """Seconds the OCR model takes to read the picture, uncached: the cost `--ocr` adds per image
    (after one warm-up read that loads the model)."""
    from .engine import ocr

    engine = ocr.engine_name()
    log(f"Timing OCR ({engine})…", quiet)
    lines = ocr.read_image(picture, engine, cached=False)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        ocr.read_image(picture, engine, cached=False)
        runs.append(round(time.perf_counter() - start, 4))
    return {"engine": engine, "seconds_per_image": round(statistics.median(runs), 4), "runs": runs, "lines": len(lines)}


VISION_BASES = ("torch", "torch one call")  # what `vision_cost` gives each backend's speed against


def versus(base: str) -> str:
    """The report's key for a backend's speed-up over `base`: "vs_torch", "vs_torch_one_call"."""
    return f"vs_{base.replace(' ', '_')}"


def vision_cost(engine: Engine, picture: Image.Image, image_size: int | None, repeats: int, quiet: bool) -> dict:
    """The vision encoder + connector alone on the picture's tiles: torch (the engine's dtype),
    OpenVINO at the CPU's float precision and OpenVINO int8, interleaved, medians of `repeats`
    after a warm-up each; and each one's feature error against float32 torch on the same weights.
    On CPU also torch over all tiles in one call, the path issue 17's vision target was set
    against (torch now encodes tiles in groups: `torch_vision.tiles_per_group`)."""
    from .engine import openvino_vision
    from .engine.torch_vision import TorchVision, real_tiles

    inputs = engine.process(engine.request(picture, "?", image_size=image_size))
    pixels, mask = inputs["pixel_values"], inputs.get("pixel_attention_mask")
    tiles = len(real_tiles(pixels, mask, engine.model.config.vision_config.patch_size)[0])
    backends = {"torch": TorchVision(engine.model, engine.device)}
    if (backends["torch"].group or tiles) < tiles:
        backends["torch one call"] = TorchVision(engine.model, engine.device)
        backends["torch one call"].group = None
    for precision in (openvino_vision.float_precision(engine.dtype), "int8"):
        backends[f"openvino {precision}"] = openvino_vision.load(engine.model, engine.processor, precision, quiet)
    runs: dict[str, list[float]] = {name: [] for name in backends}
    errors = openvino_vision.feature_errors(backends, engine.model, [(pixels, mask)], quiet=True)  # each backend's warm-up too
    with torch.inference_mode():
        for repeat in range(repeats):
            for name in list(backends) if repeat % 2 == 0 else list(reversed(backends)):
                start = time.perf_counter()
                backends[name](pixels, mask)
                runs[name].append(round(time.perf_counter() - start, 4))
                log(f"[{repeat + 1}/{repeats}] vision on {name}: {runs[name][-1]:.2f} s", quiet)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    ratios = lambda name: {versus(base): round(medians[base] / medians[name], 2) for base in VISION_BASES if base in medians}  # noqa: E731
    return {
        "tiles": tiles,
        "reference": "float32 torch on the same weights",
        "int8_calibrated_on": openvino_vision.calibrated_on(backends["openvino int8"].path),
        "backends": {name: {"seconds": medians[name], **ratios(name), "max_diff": round(errors[name][0], 4), "mean_diff": round(errors[name][1], 5),
                            "runs": times} for name, times in runs.items()},  # fmt: skip
    }


def read_files(source: str) -> None:
    """Read the checkpoint and import the model's code once, so that neither path's load time
    includes the first read from disk or the first import (whichever path loaded first would pay)."""
    import transformers.models.smolvlm.modeling_smolvlm  # noqa: F401
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(source)
    path = Path(source)
    if path.is_dir():
        for item in path.iterdir():
            if item.is_file():
                with item.open("rb") as handle:
                    while handle.read(1 << 24):
                        pass


def make_report(inputs: Inputs, engine: Engine, reports: list[PathReport], repeats: int) -> dict:
    seed, smol = (report.summary(inputs.batch) for report in reports)
    faster = lambda key: round(seed[key] / smol[key], 2) if smol[key] else None  # noqa: E731
    return {
        "date": date.today().isoformat(),
        "machine": machine(engine.device),
        "inputs": {
            "image": f"{inputs.images[0].width}x{inputs.images[0].height}",
            "prompt": inputs.prompt,
            "batch": inputs.batch,
            "tokens": inputs.tokens,
            "image_size": inputs.image_size,
            "repeats": repeats,
            "model": engine.name,
        },
        "paths": {report.name: {"setup": report.setup, **summary, "runs": [asdict(r) for r in report.runs]}
                  for report, summary in zip(reports, (seed, smol), strict=True)},  # fmt: skip
        "speedup": {
            "load": faster("load_s"),
            "ttft": faster("ttft_s"),
            "decode": round(smol["decode_tokens_per_s"] / seed["decode_tokens_per_s"], 2) if seed["decode_tokens_per_s"] else None,
            "end_to_end": faster("end_to_end_s"),
            "images_per_s": round(smol["images_per_s"] / seed["images_per_s"], 2),
            "end_to_end_per_round": [round(a.total_s / b.total_s, 2) for a, b in zip(reports[0].runs, reports[1].runs, strict=True)],
        },
    }


def machine(device: str) -> dict:
    import transformers

    probe = this_cpu()
    info = {
        "device": device,
        "cpu": probe.model,
        "cpu_flags": list(probe.flags),  # the probed ones that decide the defaults (smolsight.engine.cpu)
        "cpu_kind": probe.kind,
        "bf16_speedup": probe.bf16_speedup,
        "bf16_attention_speedup": probe.bf16_attention_speedup,
        "bf16_prefill_attention_speedup": probe.bf16_prefill_attention_speedup,
        "cpu_defaults": cpu_defaults(probe).why,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP default"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_name() -> str:
    return this_cpu().model


ROWS = [
    ("load (s)", "load_s", "{:.2f}"),
    ("time to first token (s)", "ttft_s", "{:.2f}"),
    ("  preprocess (s)", "preprocess_s", "{:.3f}"),
    ("  vision: encoder + connector (s)", "vision_s", "{:.3f}"),
    ("  prefill: decoder over the prompt (s)", "prefill_s", "{:.3f}"),
    ("  other (s)", "other_s", "{:.3f}"),
    ("decode (ms per token)", "decode_ms_per_token", "{:.1f}"),
    ("decode (tokens/s per answer)", "decode_tokens_per_s", "{:.1f}"),
    ("end to end (s per batch)", "end_to_end_s", "{:.2f}"),
    ("images/s", "images_per_s", "{:.3f}"),
    ("weights (GB)", "weights_gb", "{:.2f}"),
    ("peak memory during a run (+GB)", "peak_extra_gb", "{:.2f}"),
]
SPEEDUP_OF = {"load_s": "load", "ttft_s": "ttft", "decode_tokens_per_s": "decode", "end_to_end_s": "end_to_end", "images_per_s": "images_per_s"}


def format_report(report: dict) -> str:
    """The table, then the headline ratio."""
    seed, smol = report["paths"][SEED], report["paths"][SMOLSIGHT]
    inputs = report["inputs"]
    lines = [
        f"{inputs['model']} on {report['machine']['device']} ({report['machine']['cpu']}), image {inputs['image']}, "
        f"{seed['input_tokens']} input tokens, {inputs['tokens']} new tokens, batch {inputs['batch']}, "
        f"medians of {inputs['repeats']}",
        machine_line(report["machine"]),
        f"  seed path: {seed['setup']}",
        f"  smolsight: {smol['setup']}",
        "",
    ]
    rows = []
    for label, key, fmt in ROWS:
        ratio = report["speedup"].get(SPEEDUP_OF.get(key, ""))
        rows.append([label, fmt.format(seed[key]), fmt.format(smol[key]), relative(ratio) if ratio else ""])
    lines.append(format_table(["", "seed path", "smolsight", "smolsight vs seed"], rows, right=(1, 2, 3)))
    speedup = report["speedup"]
    lines += ["", f"smolsight vs the seed path: {relative(speedup['end_to_end'])} end to end, "
                  f"{relative(speedup['ttft'])} to the first token, {relative(speedup['decode'])} decoding",
              f"end to end, round by round (each smolsight run against the seed path's run beside it): "
              f"{', '.join(f'{ratio:.2f}x' for ratio in speedup['end_to_end_per_round'])}"]  # fmt: skip
    if "vision" in report:
        cost = report["vision"]
        bases = [base for base in VISION_BASES if base in cost["backends"]]
        rows = [[name, f"{b['seconds']:.2f}", *(relative(b[versus(base)]) if name != base else "" for base in bases),
                 f"{b['max_diff']:.4f}", f"{b['mean_diff']:.5f}"] for name, b in cost["backends"].items()]  # fmt: skip
        lines += ["", f"Vision encoder + connector alone, {cost['tiles']} tiles, medians of {inputs['repeats']} (error: against {cost['reference']}):",
                  format_table(["backend", "seconds", *(f"vs {base}" for base in bases), "max diff", "mean diff"], rows,
                               right=tuple(range(1, len(bases) + 4))),
                  f"(int8 calibrated on {cost['int8_calibrated_on']})"]  # fmt: skip
    if "ocr" in report:
        cost = report["ocr"]
        lines.append(f"OCR ({cost['engine']}): {cost['seconds_per_image']:.2f} s per image, median of {len(cost['runs'])}, {cost['lines']} lines read")
    return "\n".join(lines)


def machine_line(machine: dict) -> str:
    """The CPU's probed flags and the load average, which every figure must be read with."""
    flags = " ".join(machine.get("cpu_flags", [])) or "none of the probed ones"
    return f"  CPU flags: {flags}; load average {machine.get('load_average_before', ['?'])[0]} before, {machine['load_average'][0]} after"


def relative(ratio: float) -> str:
    """A speed ratio (seed time / smolsight time) in words: "2.80x faster" or "1.25x slower"."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def write_report(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
