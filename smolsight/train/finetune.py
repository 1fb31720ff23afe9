"""LoRA fine-tuning of SmolVLM2 on a site's own pictures, and merging the adapter back in.

LoRA (peft) goes on the Llama text decoder's attention and MLP projections only: the vision
encoder's layers share the names q/k/v_proj, so targets are a regex anchored on `text_model`.
The vision encoder and connector stay frozen unless asked for (`train_connector`,
`train_vision`); trained ones are saved whole inside the adapter (peft's modules_to_save), so an
adapter directory is all `Engine.load(adapter=...)` needs.

Training reads examples through `smolsight.train.dataset`, which builds prompts by the inference path;
the loss covers answer tokens only. Each epoch ends with a checkpoint under
ADAPTER_DIR/checkpoints/epoch-N (adapter, optimizer, losses), and `resume` continues from the
last one. Shuffling and dropout are seeded per epoch, so an interrupted and resumed run trains
exactly as an uninterrupted one. A held-out split or a given suite is evaluated before and after
with `smolsight.evals.runner`, and the comparison is written as `smolsight eval --compare` writes it.
"""

from __future__ import annotations

import functools
import json
import math
import random
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .dataset import IGNORE, Example, collate, encode, evaluation_suite, load_examples, split_examples
from ..console import log
from ..engine.options import image_size_setting
from ..errors import SmolsightError

TEXT_TARGETS = r".*text_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer.pt"
TRAINING_LOG = "training.json"
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run; stored with each checkpoint so `resume` can
    refuse to continue a run with different settings."""

    rank: int = 16
    alpha: float = 32
    dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4
    grad_accum: int = 1
    image_size: int | str | None = None  # a longest edge, or "native" (engine.options.image_size_setting)
    split: bool = True
    seed: int = 0
    train_connector: bool = False
    train_vision: bool = False
    qlora: bool = False
    eval_split: float | None = None
    prompt_style: str = "short"

    def __post_init__(self) -> None:
        image_size_setting(self.image_size)
        checks = [
            (self.rank >= 1, "rank must be at least 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning rate must be > 0"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.grad_accum >= 1, "gradient accumulation must be at least 1"),
            (self.eval_split is None or 0 < self.eval_split < 1, "eval split must be between 0 and 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SmolsightError(f"invalid finetune option: {message}")

    @property
    def settings(self) -> dict:
        """Request processing settings, shared by training and evaluation."""
        return {"image_size": self.image_size, "split": self.split}

    def modules_to_save(self) -> list[str]:
        """Modules trained whole: the connector, and with it the vision encoder."""
        return ["connector", "vision_model"] if self.train_vision else ["connector"] if self.train_connector else []


@dataclass
class FinetuneResult:
    adapter_dir: Path
    epoch_losses: list[float]  # mean training loss of each epoch, resumed epochs included
    step_losses: list[float] = field(default_factory=list)  # per optimizer step, this session only
    comparison: str = ""  # before/after table, empty without an evaluation set
    skipped: list[str] = field(default_factory=list)
    runtime: dict = field(default_factory=dict)  # model, device, dtype, attn trained on


# ---------------------------------------------------------------------------------------------
# Model set-up


def load_training_engine(model: str, device: str | None, dtype: str | None, attn: str | None, qlora: bool, quiet: bool):
    """An Engine whose model will be trained (device and dtype chosen as for inference), without
    inference fast paths: their int8 copies of layers are not trainable."""
    from ..engine import Engine

    if qlora:
        return quantized_engine(model, attn, quiet)
    return Engine.load(model, device=device, dtype=dtype, attn=attn, quiet=quiet, fast="none")


def quantized_engine(model: str, attn: str | None, quiet: bool):
    """QLoRA: the text decoder's weights in 4-bit NF4 (bitsandbytes), computing in bfloat16."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SmolsightError("--qlora needs bitsandbytes: pip install bitsandbytes") from None
    if not torch.cuda.is_available():
        raise SmolsightError("--qlora needs a CUDA GPU (bitsandbytes 4-bit weights); none is available")
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    from ..engine import Engine, choose_runtime
    from ..engine.loading import load_model

    device, dtype, attn = choose_runtime("cuda", "bfloat16", attn)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=["vision_model", "connector", "lm_head"],
    )  # fmt: skip
    network, processor = load_model(model, device, dtype, attn, quiet=quiet, quantization=quantization, note="; 4-bit")
    network = prepare_model_for_kbit_training(network, use_gradient_checkpointing=False)
    return Engine(network, processor, model, device, dtype, attn)


def add_lora(network, config: TrainConfig, resume_from: Path | None):
    """Inject LoRA layers into `network` in place (the engine keeps using the same object) and
    return the PeftModel that saves them; trainable weights are kept in float32."""
    from peft import LoraConfig, PeftModel, get_peft_model

    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`; nothing to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        if resume_from is not None:
            peft_model = PeftModel.from_pretrained(network, str(resume_from), is_trainable=True)
        else:
            lora = LoraConfig(
                r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=TEXT_TARGETS,
                modules_to_save=config.modules_to_save() or None, task_type=None,
            )  # fmt: skip
            peft_model = get_peft_model(network, lora)
    for parameter in peft_model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return peft_model


def trainable_summary(peft_model) -> str:
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return f"training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)"


# ---------------------------------------------------------------------------------------------
# Checkpoints


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The highest-numbered complete epoch checkpoint."""
    done = [p for p in (out_dir / CHECKPOINTS).glob("epoch-*") if (p / TRAINER_STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(out_dir: Path, epoch: int, peft_model, optimizer, config: TrainConfig, history: dict) -> Path:
    """The adapter after `epoch`, and the trainer state (optimizer, losses, settings) that resuming
    needs. The trainer state is written last, so a checkpoint cut short by an interruption is never
    taken for a complete one, and only the newest keeps it: optimizer state is twice the size of
    what it trains, while earlier adapters stay small enough to keep for picking an epoch."""
    path = out_dir / CHECKPOINTS / f"epoch-{epoch}"
    peft_model.save_pretrained(str(path))
    torch.save({"epoch": epoch, "optimizer": optimizer.state_dict(), "config": asdict(config), "history": history}, path / TRAINER_STATE)
    (out_dir / CHECKPOINTS / f"epoch-{epoch - 1}" / TRAINER_STATE).unlink(missing_ok=True)
    return path


def check_resumable(saved: dict, config: TrainConfig) -> None:
    """Everything but the number of epochs must match the run being resumed."""
    for item in fields(TrainConfig):
        if item.name != "epochs" and saved.get(item.name) != getattr(config, item.name):
            raise SmolsightError(
                f"--resume: {item.name} was {saved.get(item.name)!r} in the checkpoint but is {getattr(config, item.name)!r} now; "
                "use the same options as the interrupted run, or a new --out directory"
            )


# ---------------------------------------------------------------------------------------------
# Training


def batches(examples: list[Example], config: TrainConfig, epoch: int) -> list[list[Example]]:
    """This epoch's shuffled batches; the order depends only on the seed and the epoch."""
    order = list(examples)
    random.Random(config.seed * 1000 + epoch).shuffle(order)
    return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def train_epoch(engine, peft_model, optimizer, examples: list[Example], config: TrainConfig, epoch: int, progress: bool) -> list[float]:
    """One pass over the examples; returns the loss of each optimizer step."""
    from tqdm import tqdm

    torch.manual_seed(config.seed * 1000 + epoch)  # dropout
    groups = batches(examples, config, epoch)
    steps = math.ceil(len(groups) / config.grad_accum)
    precision = autocast(engine)
    losses, pending = [], []
    peft_model.train()
    with tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="step", disable=not progress, file=sys.stderr) as bar:
        for index, group in enumerate(groups, start=1):
            batch = collate([encode(example, engine, config.settings) for example in group], engine.pad_id)
            batch = {key: value.to(engine.device) for key, value in batch.items()}
            with precision:
                loss = answer_loss(engine.model, batch)
            (loss / config.grad_accum).backward()
            pending.append(loss.item())
            if index % config.grad_accum == 0 or index == len(groups):
                torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], MAX_GRAD_NORM)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(sum(pending) / len(pending))
                pending = []
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    peft_model.eval()
    return losses


def answer_loss(network, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens; the vocabulary projection is computed
    only where there is a label, not over every prompt and image position."""
    labels = batch.pop("labels")
    hidden = network.model(**batch).last_hidden_state[:, :-1]  # [B, T-1, D]
    targets = labels[:, 1:]  # [B, T-1]: token t is predicted at position t-1
    trained = targets != IGNORE
    logits = network.lm_head(hidden[trained])  # [N, V]
    return torch.nn.functional.cross_entropy(logits.float(), targets[trained])


def autocast(engine):
    """Mixed precision where the base weights are half precision: trainable weights are float32,
    so matmuls need autocast to meet the frozen bfloat16/float16 ones."""
    if engine.dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=engine.device.split(":")[0], dtype=getattr(torch, engine.dtype))


def finetune(
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    device: str | None = None,
    dtype: str | None = None,
    attn: str | None = None,
    eval_suite: str | Path | None = None,
    eval_max_new_tokens: int | None = None,
    resume: bool = False,
    progress: bool = True,
    quiet: bool = False,
) -> FinetuneResult:
    """Train a LoRA adapter on DATA into OUT_DIR; evaluate before and after when there is an
    evaluation set (a held-out `config.eval_split`, or `eval_suite`), answering with the default
    preset, capped at `eval_max_new_tokens` when given."""
    say = functools.partial(log, quiet=quiet)
    out = Path(out_dir)
    train, suite, skipped = training_sets(data, config, eval_suite, say)
    checkpoint, state = resume_point(out, config, resume)
    history = state["history"] if state else {"epoch_losses": []}

    engine = load_training_engine(model, device, dtype, attn, config.qlora, quiet)
    limits = {"max_new_tokens": eval_max_new_tokens}
    before = evaluate(engine, suite, config, limits, out / "eval" / "before", "before", progress) if suite else None
    torch.manual_seed(config.seed)  # LoRA's initial weights
    peft_model = add_lora(engine.model, config, checkpoint)
    say(trainable_summary(peft_model))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=0.0)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        say(f"resuming after {checkpoint.name}")

    step_losses = []
    for epoch in range(len(history["epoch_losses"]) + 1, config.epochs + 1):
        losses = train_epoch(engine, peft_model, optimizer, train, config, epoch, progress)
        step_losses += losses
        history["epoch_losses"].append(sum(losses) / len(losses))
        save_checkpoint(out, epoch, peft_model, optimizer, config, history)
        say(f"epoch {epoch}: mean loss {history['epoch_losses'][-1]:.4f}")
    peft_model.save_pretrained(str(out))
    write_log(out, data, model, config, history)

    comparison = ""
    if suite:
        engine.vision_cache.clear()  # a trained connector or encoder changes image features
        after = evaluate(engine, suite, config, limits, out / "eval" / "after", f"after ({out.name})", progress)
        comparison = compare(before, after, out / "eval")
    return FinetuneResult(out, history["epoch_losses"], step_losses, comparison, skipped, engine.runtime)


def training_sets(data: str | Path, config: TrainConfig, eval_suite: str | Path | None, say: Callable[[str], None]):
    """(training examples, evaluation suite or None, skipped suite cases), checked before any
    model is loaded."""
    if eval_suite is not None and config.eval_split is not None:
        raise SmolsightError("give either --eval-split or --eval-suite, not both")
    dataset = load_examples(data, config.prompt_style)
    for line in dataset.skipped:
        say(f"skipped {line}")
    train, held = split_examples(dataset.examples, config.eval_split, config.seed) if config.eval_split else (dataset.examples, [])
    suite = evaluation_set(held, eval_suite, dataset.source)
    say(f"{len(train)} training examples from {dataset.source}" + (f", {len(suite)} evaluation cases" if suite else ""))
    return train, suite, dataset.skipped


def resume_point(out: Path, config: TrainConfig, resume: bool) -> tuple[Path | None, dict | None]:
    """(checkpoint to continue from, its trainer state); a fresh start has neither, and must not
    mix its checkpoints with an earlier run's."""
    checkpoint = latest_checkpoint(out)
    if not resume:
        if checkpoint is not None:
            raise SmolsightError(f"{out} already holds checkpoints; pass --resume to continue that run, or choose a new --out")
        return None, None
    if checkpoint is None:
        raise SmolsightError(f"--resume: no epoch checkpoint in {out / CHECKPOINTS}; start without --resume")
    state = torch.load(checkpoint / TRAINER_STATE, weights_only=True)
    check_resumable(state["config"], config)
    if state["epoch"] >= config.epochs:
        raise SmolsightError(f"--resume: {checkpoint.name} already completes {config.epochs} epoch(s); ask for more with --epochs")
    return checkpoint, state


def write_log(out: Path, data, model: str, config: TrainConfig, history: dict) -> None:
    record = {"data": str(data), "model": model, "config": asdict(config), **history}
    (out / TRAINING_LOG).write_text(json.dumps(record, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------
# Evaluation before and after


def evaluation_set(held: list[Example], eval_suite: str | Path | None, source: Path):
    """The held-out examples as a suite, the given suite, or None."""
    if held:
        return evaluation_suite(held, f"{source.stem} (held out)", source)
    if eval_suite is not None:
        from ..evals.suite import load_suite

        return load_suite(eval_suite)
    return None


def evaluate(engine, suite, config: TrainConfig, limits: dict, out_dir: Path, label: str, progress: bool):
    """Run the suite with the training's processing settings; keep an earlier `before` run
    when resuming, since the base model has not changed."""
    from ..evals.results import load_run
    from ..evals.runner import run_suite, write_run

    if label == "before" and (out_dir / "results.json").is_file():
        return load_run(out_dir)
    run = run_suite(engine, suite, prompt_style=config.prompt_style, progress=progress, adapter_label=label,
                    batch_size=config.batch_size, **limits, **config.settings)  # fmt: skip
    write_run(run, out_dir)
    return run


def compare(before, after, out_dir: Path) -> str:
    from ..evals.compare import compare_runs, write_comparison

    write_comparison([before, after], out_dir)
    return compare_runs([before, after])
