"""Fine-tuning on the tiny checkpoint: data checks, loss masking, training that visibly learns,
adapters that save, load, resume and merge to the same answers, and the commands around them."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from helpers import cli as smolsight
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from smolsight.train.dataset import IGNORE, DataError, collate, encode, load_examples
from smolsight.engine import Engine
from smolsight.errors import SmolsightError
from smolsight.train.finetune import TRAINER_STATE, TrainConfig, add_lora, finetune, latest_checkpoint

QUESTION = "How many dots? Answer with a number only."  # the short style's own wording, so eval sends it as is
# Settings under which the tiny random model memorises 20 pictures in a few seconds of CPU.
FAST = dict(rank=16, alpha=64, dropout=0.0, learning_rate=3e-3, batch_size=4, split=False)




def dots_picture(count: int, seed: int) -> Image.Image:
    """`count` dots on a background; colours vary by seed so pictures differ beyond the count."""
    rng = random.Random(seed)
    colour = lambda: (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))  # noqa: E731
    image = Image.new("RGB", (128, 128), colour())
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        x, y = rng.randint(4, 112), rng.randint(4, 112)
        draw.ellipse([x, y, x + 12, y + 12], fill=colour())
    return image


def write_lines(path: Path, entries: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are too small to gain from threads, and on a busy 2-core machine
    threads waiting on each other made training twenty times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dots(tmp_path_factory) -> Path:
    """20 counting pictures (1 to 20 dots) as a conversations file and as a suite."""
    root = tmp_path_factory.mktemp("dots")
    conversations, cases = [], []
    for count in range(1, 21):
        dots_picture(count, count).save(root / f"dots{count}.png")
        turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": str(count)}]
        conversations.append({"id": f"dots-{count}", "media": f"dots{count}.png", "messages": turns})
        cases.append({"id": f"dots-{count}", "scenario": "counting", "media": [f"dots{count}.png"], "prompt": QUESTION,
                      "lang": "en", "answer_type": "number", "expected": count})  # fmt: skip
    write_lines(root / "data.jsonl", conversations)
    write_lines(root / "suite.jsonl", cases)
    return root


@pytest.fixture(scope="module")
def trained(dots, tiny_checkpoint, tmp_path_factory):
    """One training run on the suite, evaluated on it before and after."""
    out = tmp_path_factory.mktemp("adapter")
    config = TrainConfig(epochs=30, **FAST)
    suite = dots / "suite.jsonl"
    return finetune(suite, tiny_checkpoint, out, config, device="cpu", dtype="float32", eval_suite=suite, eval_max_new_tokens=16, progress=False, quiet=True)


def labels_of(encoded: dict) -> list[int]:
    return [t for t in encoded["labels"].tolist() if t != IGNORE]


# ---------------------------------------------------------------------------------------------
# Data and masking


def test_labels_cover_the_answer_only_and_match_the_inference_format(engine, dots):
    example = load_examples(dots / "data.jsonl").examples[6]
    encoded = encode(example, engine, {"split": False})
    ids, labels = encoded["input_ids"], encoded["labels"]
    answer = engine.tokenizer(" 7<end_of_utterance>", add_special_tokens=False)["input_ids"]
    assert labels_of(encoded) == answer
    assert labels[-len(answer) :].tolist() == ids[-len(answer) :].tolist() == answer
    assert (labels[: -len(answer)] == IGNORE).all()
    assert (ids == engine.model.config.image_token_id).sum() > 0  # the picture is in, and out of the loss
    assert (labels[ids == engine.model.config.image_token_id] == IGNORE).all()
    # The whole sequence is what the chat template renders for the finished conversation.
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "7"}]}]  # fmt: skip
    rendered = engine.processor.apply_chat_template(conversation)
    assert rendered.endswith("Assistant: 7<end_of_utterance>\n")
    whole = engine.processor(text=[rendered.removesuffix("\n")], images=[[Image.open(example.media[0]).convert("RGB")]], do_image_splitting=False, return_tensors="pt")
    assert whole["input_ids"][0].tolist() == ids.tolist()
    assert torch.equal(whole["pixel_values"][0], encoded["pixel_values"])


def test_every_assistant_turn_is_trained_and_no_user_turn(engine, dots, tmp_path):
    turns = [{"role": "system", "content": "Count carefully."}, {"role": "user", "content": QUESTION},
             {"role": "assistant", "content": "3"}, {"role": "user", "content": "And doubled?"},
             {"role": "assistant", "content": "6"}]  # fmt: skip
    data = write_lines(tmp_path / "multi.jsonl", [{"media": str(dots / "dots3.png"), "messages": turns}])
    encoded = encode(load_examples(data).examples[0], engine, {"split": False})
    expected = engine.tokenizer(" 3<end_of_utterance> 6<end_of_utterance>", add_special_tokens=False)["input_ids"]
    assert labels_of(encoded) == expected
    text = engine.tokenizer.decode(encoded["input_ids"])
    assert text.endswith("Assistant: 3<end_of_utterance>\nUser: And doubled?<end_of_utterance>\nAssistant: 6<end_of_utterance>")


def test_collate_pads_tokens_and_pictures(engine, dots, tmp_path):
    one = {"media": str(dots / "dots1.png"), "messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "1"}]}
    two = {"media": [str(dots / "dots2.png"), str(dots / "dots3.png")],
           "messages": [{"role": "user", "content": "How many dots in both pictures?"}, {"role": "assistant", "content": "5"}]}  # fmt: skip
    examples = load_examples(write_lines(tmp_path / "d.jsonl", [one, two])).examples
    encoded = [encode(e, engine, {"split": False}) for e in examples]
    batch = collate(encoded, engine.pad_id)
    short, long = (len(e["input_ids"]) for e in encoded)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, long)
    assert batch["input_ids"][0, short:].eq(engine.pad_id).all() and batch["labels"][0, short:].eq(IGNORE).all()
    assert batch["attention_mask"].sum(1).tolist() == [short, long]
    assert batch["pixel_values"].shape[:2] == (2, 2) and batch["pixel_values"][0, 1].eq(0).all()
    assert batch["pixel_attention_mask"][0, 1].eq(0).all() and batch["pixel_attention_mask"][1].all()


def test_a_suite_is_training_data(tmp_path, dots):
    (tmp_path / "p.png").write_bytes((dots / "dots1.png").read_bytes())
    cases = [
        {"id": "n", "scenario": "counting", "media": ["p.png"], "answer_type": "number", "expected": 37},
        {"id": "x", "scenario": "measurement", "media": ["p.png"], "answer_type": "number", "expected": 14.7, "unit": "cm"},
        {"id": "t", "scenario": "text", "media": ["p.png"], "answer_type": "text", "expected": ["NEU-505", "NEU 505"]},
        {"id": "c", "scenario": "any", "media": ["p.png"], "prompt": "Open?", "answer_type": "choice", "choices": ["open", "shut"], "expected": "shut"},
        {"id": "h", "scenario": "simulation", "media": ["p.png"], "lang": "en", "answer_type": "trend", "expected": "left_hotter"},
        {"id": "k", "scenario": "accident", "media": ["p.png"], "answer_type": "contains_all", "expected": ["火", "烟"]},
        {"id": "f", "scenario": "scenery", "media": ["p.png"], "answer_type": "free"},
    ]  # fmt: skip
    data = load_examples(write_lines(tmp_path / "suite.jsonl", cases))
    answers = {e.id: e.turns[-1].text for e in data.examples}
    assert answers == {"n": "37", "x": "14.7", "t": "NEU-505", "c": "shut", "h": "The left side is hotter.", "k": "火、烟"}
    assert [line.split(": ")[1] for line in data.skipped] == ["case 'f'"]
    from smolsight.evals.suite import case_prompt
    from smolsight.evals.scoring import score

    for example in data.examples:  # each trained answer is one its own scorer accepts, asked as eval asks
        assert score(example.turns[-1].text, example.case).passed, example.id
        assert example.turns[0].text == case_prompt(example.case, "short")


GOOD = {"media": "dots1.png", "messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "1"}]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ({**GOOD, "media": None}, "missing media"),
        ({**GOOD, "media": "nowhere.png"}, "media file not found"),
        ({**GOOD, "media": "notes.txt"}, "unknown media type '.txt'"),
        ({**GOOD, "messages": [GOOD["messages"][0], {"role": "assistant", "content": "  "}]}, "empty answer in message 2"),
        ({**GOOD, "messages": GOOD["messages"][:1]}, "the last message must be the assistant's answer"),
        ({**GOOD, "messages": GOOD["messages"][::-1]}, "message 1 is 'assistant' where 'user' was expected"),
        ({**GOOD, "image": "dots1.png"}, "unknown key(s) image"),
    ],
)
def test_bad_lines_are_named(dots, tmp_path, line, message):
    (tmp_path / "dots1.png").write_bytes((dots / "dots1.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not a picture")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(DataError, match=f"data.jsonl:2: .*{re.escape(message)}"):
        load_examples(path)


def test_a_first_line_without_messages_is_named_as_such(tmp_path):
    """Not read as a suite (whose errors would name suite fields the user never meant)."""
    path = write_lines(tmp_path / "data.jsonl", [{"media": "dots1.png", "conversation": []}, GOOD])
    with pytest.raises(DataError) as raised:
        load_examples(path)
    assert str(raised.value) == (f"{path}:1: neither a conversation (needs 'messages') nor a suite case "
                                 "(needs 'scenario' and 'answer_type'); the line has conversation, media")  # fmt: skip


def test_bad_data_fails_the_command_in_one_line(dots, tmp_path, tiny_checkpoint):
    path = write_lines(tmp_path / "data.jsonl", [{**GOOD, "media": str(dots / "dots1.png")}, {**GOOD, "media": "gone.jpg"}])
    run = smolsight("finetune", str(path), "--model", tiny_checkpoint, "--out", str(tmp_path / "a"))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"error: {path}:2: media file not found: {tmp_path / 'gone.jpg'}"]


# ---------------------------------------------------------------------------------------------
# What gets trained


def test_lora_goes_on_the_text_decoder_only(tiny_checkpoint):
    network = Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True, fast="none").model
    peft_model = add_lora(network, TrainConfig(), None)
    trained = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trained and all(".text_model.layers." in name and ".lora_" in name for name in trained)
    projections = {name.split(".lora_")[0].rsplit(".", 1)[1] for name in trained}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lora" in name for name, _ in network.model.vision_model.named_parameters())


@pytest.mark.parametrize(("option", "whole"), [("train_connector", {"connector"}), ("train_vision", {"connector", "vision_model"})])
def test_connector_and_encoder_train_only_when_asked(tiny_checkpoint, option, whole):
    network = Engine.load(tiny_checkpoint, device="cpu", dtype="float32", quiet=True, fast="none").model
    peft_model = add_lora(network, TrainConfig(**{option: True}), None)
    full = {name.split(".model.model.")[1].split(".")[0] for name, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in name}
    assert full == whole


# ---------------------------------------------------------------------------------------------
# Training


def test_training_learns_the_counts(trained, dots):
    from smolsight.evals.results import load_run

    losses = trained.epoch_losses
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    assert trained.step_losses[-1] < trained.step_losses[0]
    before, after = (load_run(trained.adapter_dir / "eval" / name) for name in ("before", "after"))
    assert sum(c.passed for c in before.cases) <= 2  # a random model does not count
    assert [c.answer for c in after.cases] == [str(n) for n in range(1, 21)]
    assert "20/20 100%" in trained.comparison
    assert (trained.adapter_dir / "eval" / "compare.html").is_file() and (trained.adapter_dir / "eval" / "compare.json").is_file()
    checkpoints = sorted((trained.adapter_dir / "checkpoints").iterdir())
    assert len(checkpoints) == 30 and all((c / "adapter_model.safetensors").is_file() for c in checkpoints)
    assert [c.name for c in checkpoints if (c / TRAINER_STATE).is_file()] == ["epoch-30"] == [latest_checkpoint(trained.adapter_dir).name]
    assert json.loads((trained.adapter_dir / "training.json").read_text())["epoch_losses"] == losses


def test_adapter_loads_and_merges_to_identical_outputs(trained, dots, tiny_checkpoint, tmp_path):
    from transformers import AutoModelForImageTextToText

    adapted = Engine.load(tiny_checkpoint, device="cpu", dtype="float32", adapter=str(trained.adapter_dir), quiet=True, fast="none")
    pictures = [str(dots / f"dots{n}.png") for n in range(1, 21)]
    requests = [adapted.request(p, QUESTION, split=False) for p in pictures]
    assert [r.text for r in adapted.ask_batch(requests)] == [str(n) for n in range(1, 21)]

    merged_dir = tmp_path / "merged"
    run = smolsight("merge-adapter", "--model", tiny_checkpoint, "--adapter", str(trained.adapter_dir), "--out", str(merged_dir), "--dtype", "float32", "-q")
    assert run.returncode == 0, run.stderr
    merged = Engine.load(str(merged_dir), device="cpu", dtype="float32", quiet=True, fast="none")
    assert [r.text for r in merged.ask_batch([merged.request(p, QUESTION, split=False) for p in pictures])] == [str(n) for n in range(1, 21)]

    batch = collate([encode(e, adapted, {"split": False}) for e in load_examples(dots / "data.jsonl").examples[:4]], adapted.pad_id)
    batch.pop("labels")
    plain = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = adapted.model(**batch).logits
        assert torch.allclose(merged.model(**batch).logits, expected, atol=1e-5)
        assert torch.allclose(plain(**batch).logits, expected, atol=1e-5)


def test_ask_takes_the_adapter(trained, dots, tiny_checkpoint):
    run = smolsight("ask", "-q", "--json", "--model", tiny_checkpoint, "--adapter", str(trained.adapter_dir), "--no-split",
                    str(dots / "dots7.png"), QUESTION)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["text"] == "7"


def test_resume_continues_exactly_where_it_stopped(dots, tiny_checkpoint, tmp_path):
    data = dots / "data.jsonl"

    def run(out: str, epochs: int, resume: bool = False, **changes):
        config = TrainConfig(epochs=epochs, **{**FAST, "dropout": 0.1, **changes})  # dropout: its seeding is resumed too
        return finetune(data, tiny_checkpoint, tmp_path / out, config, device="cpu", dtype="float32", resume=resume, progress=False, quiet=True)

    straight = run("straight", 2)
    run("stopped", 1)
    resumed = run("stopped", 2, resume=True)
    assert resumed.epoch_losses == straight.epoch_losses
    a, b = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("straight", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(SmolsightError, match="already holds checkpoints; pass --resume"):
        run("stopped", 3)
    with pytest.raises(SmolsightError, match="rank was 16 in the checkpoint but is 8 now"):
        run("stopped", 3, resume=True, rank=8)
    with pytest.raises(SmolsightError, match="no epoch checkpoint"):
        run("fresh", 2, resume=True)


def test_gradient_accumulation_steps_once_per_group_of_batches(dots, tiny_checkpoint, tmp_path):
    config = TrainConfig(epochs=1, **{**FAST, "grad_accum": 2})  # 20 examples: 5 batches of 4, so steps after 2, 4 and 5
    result = finetune(dots / "data.jsonl", tiny_checkpoint, tmp_path / "a", config, device="cpu", dtype="float32", progress=False, quiet=True)
    assert len(result.step_losses) == 3


def test_held_out_split_is_evaluated_before_and_after(dots, tiny_checkpoint, tmp_path):
    from smolsight.evals.results import load_run

    config = TrainConfig(epochs=1, eval_split=0.25, **FAST)
    result = finetune(dots / "data.jsonl", tiny_checkpoint, tmp_path / "a", config, device="cpu", dtype="float32", eval_max_new_tokens=8, progress=False, quiet=True)
    before, after = (load_run(tmp_path / "a" / "eval" / name) for name in ("before", "after"))
    assert len(before.cases) == len(after.cases) == 5 and {c.answer_type for c in after.cases} == {"anls"}
    assert [c.id for c in before.cases] == [c.id for c in after.cases]
    assert "before" in result.comparison and "after (a)" in result.comparison


def test_half_precision_trains_the_connector_under_autocast(dots, tiny_checkpoint, tmp_path):
    config = TrainConfig(epochs=1, train_connector=True, **FAST)
    result = finetune(dots / "data.jsonl", tiny_checkpoint, tmp_path / "a", config, device="cpu", dtype="bfloat16", progress=False, quiet=True)
    assert result.runtime["dtype"] == "bfloat16" and all(torch.isfinite(torch.tensor(result.step_losses)))
    saved = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert any("connector" in name for name in saved)
    Engine.load(tiny_checkpoint, device="cpu", dtype="bfloat16", adapter=str(tmp_path / "a"), quiet=True).ask(str(dots / "dots1.png"), QUESTION, split=False, max_new_tokens=4)


def test_qlora_says_what_it_needs(dots, tiny_checkpoint, tmp_path):
    with pytest.raises(SmolsightError, match="--qlora needs (bitsandbytes|a CUDA GPU)"):
        finetune(dots / "data.jsonl", tiny_checkpoint, tmp_path / "a", TrainConfig(qlora=True), quiet=True)
