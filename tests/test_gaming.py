"""Gaming the scores: fixed answers that never look at the image, run over the synthetic suite,
must not pass more than chance; looped answers fail and say so in results.json."""

from __future__ import annotations

import itertools
import json

import pytest
from helpers import ScriptedBackend, truth

from smolsight.evals.results import LOOPS_FAIL, LOOPS_SCORED
from smolsight.evals.runner import run_suite, write_run
from smolsight.evals.scoring import DIRECTIONS, score
from smolsight.evals.suite import Case, case_prompt, load_suite
from smolsight.evals.synth import write_synthetic_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The synthetic suite of the issue: 22 cases, seed 0."""
    return load_suite(write_synthetic_suite(tmp_path_factory.mktemp("gaming"), seed=0))


def passed(suite, answers: list[str]) -> set[str]:
    """The cases the scorers pass, answer i answering case i (the loop rule left out: these
    check the scorers themselves)."""
    return {c.id for c, answer in zip(suite, answers) if score(answer, c).passed}


def values(suite) -> str:
    """Every value the suite's text questions ask for, as a gamer who knows the suite writes them."""
    return " ".join(v for c in suite if c.id.endswith("-qa") and any(ch.isdigit() for ch in c.expected[0]) for v in c.expected)


def test_negated_keyword_dump(suite):
    """The issue's dump passed 9 cases: it denies every object, so it passes none of them. It
    keeps only the question whose value it quotes with no rival value (the pump's number)."""
    for dump in (f"没有天空、树、房子，也没有火和烟… {values(suite)}",
                 f"No sky, no trees, no house, neither fire nor smoke. {values(suite)}"):  # fmt: skip
        assert passed(suite, [dump] * len(suite)) == {"text-02-qa"}
        run = run_suite(ScriptedBackend([dump] * len(suite)), suite, progress=False)  # the same, end to end
        assert {c.id for c in run.cases if c.passed} == {"text-02-qa"}


def test_every_plate_quoted(suite):
    """Quoting every plate passed all 6 text cases. Now the reading cases judge all the quotes
    together and the value questions see rival values; only the question about iNeuOS, whose
    answer is the same on every nameplate the suite draws, is left."""
    plates = " ".join(f"“{c.expected[0]}”" for c in suite if c.id.endswith("-read"))
    assert passed(suite, [plates] * len(suite)) == {"text-00-qa"}
    assert passed(suite, [plates.replace("“", "").replace("”", "\n")] * len(suite)) == {"text-00-qa"}


@pytest.mark.parametrize(
    "answer",
    [", ".join(str(n) for n in range(201)), "、".join(f"{n}只" for n in range(1, 201)),
     " ".join(f"{n / 10:g} cm" for n in range(50, 200)), "3-200", "两三百", "几个到几百个", "I don't know.", "我不知道。",
     "", "无法判断。"],
    ids=["0-200", "1只-200只", "5-20cm", "3-200", "两三百", "几个到几百个", "idk", "不知道", "empty", "无法判断"],
)  # fmt: skip
def test_lists_of_numbers_and_non_answers_pass_nothing(suite, answer):
    assert passed(suite, [answer] * len(suite)) == set()


def test_the_prompt_echoed_passes_nothing(suite):
    for style in ("short", "raw"):
        assert passed(suite, [case_prompt(c, style) for c in suite]) == set()


def test_looping_costs_accuracy_and_results_json_says_so(suite, tmp_path):
    """The truth said 60 times scored 19/22. It fails every case by default, marked looped with
    the rule applied; with loops_fail=False the rule is recorded and the text is scored."""
    looped = [(truth(c) + " ") * 60 for c in suite]
    run = run_suite(ScriptedBackend(looped), suite, progress=False)
    assert not [c.id for c in run.cases if c.passed]
    assert all(c.looped and c.loop_rule == LOOPS_FAIL and c.detail.startswith("looped answer: fails") for c in run.cases)
    write_run(run, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert data["meta"]["loops_fail"] is True
    assert all(c["looped"] is True and c["loop_rule"] == LOOPS_FAIL for c in data["cases"])
    assert data["summary"]["overall"]["looped"] == len(suite) and data["summary"]["overall"]["passed"] == 0
    scored = run_suite(ScriptedBackend(looped), suite, progress=False, loops_fail=False)
    assert all(c.looped and c.loop_rule == LOOPS_SCORED for c in scored.cases) and scored.meta["loops_fail"] is False
    assert sum(c.passed for c in scored.cases) > len(suite) // 2  # what the rule takes away
    truthful = run_suite(ScriptedBackend([truth(c) for c in suite]), suite, progress=False)
    assert all(c.passed and not c.looped and c.loop_rule == LOOPS_FAIL for c in truthful.cases)


# --- choice cases: balanced, so chance is known -----------------------------------------------

CHOICE_SETS = [(["开", "关"], "阀门是开还是关？", "zh"), (["open", "closed"], "Is the valve open or closed?", "en"),
               (["有", "没有"], "图中有火吗？", "zh"), (["yes", "no"], "Is there a fire?", "en"),
               (["A", "B", "C", "D"], "Which gauge is highest? A, B, C or D?", "en")]  # fmt: skip
NEGATIONS = ["{}", "不是{}", "没有{}", "not {}", "{}？不", "并非{}，", "It is not {}."]
FIXED = [
    "", "I don't know.", "无法判断。", "都不是。", "都有可能。", "开关", "左右上下都有可能。",
    "左侧更热，右侧更热，上侧更热，下侧更热。", "The left, right, top and bottom are all hotter.",
    "It moves left, right, up and down.", "向左、向右、向上、向下移动。", "温度没有变化，圆点没有移动。",
    "The right side is not hotter and the dot does not move left.",
]  # fmt: skip


def balanced_groups(suite) -> list[list[Case]]:
    """Each choice set with one case per choice as the truth, and each trend case of the suite
    once per direction of its family: a fixed answer can be right in one case of a group."""
    media = suite.cases[0].media
    groups = [[Case(id=f"{i}-{truth}", scenario="choice", media=media, prompt=prompt, lang=lang, task="qa",
                    answer_type="choice", choices=choices, expected=truth) for truth in choices]
              for i, (choices, prompt, lang) in enumerate(CHOICE_SETS)]  # fmt: skip
    for case in (c for c in suite if c.answer_type == "trend"):
        family = [d for d in DIRECTIONS if d.startswith("moves_") == case.expected.startswith("moves_")]
        groups.append([case.model_copy(update={"expected": d, "id": f"{case.id}-{d}"}) for d in family])
    return groups


def fixed_answers() -> list[str]:
    """Image-blind answers: every choice and direction word, alone, denied, and in hedged pairs."""
    words = [w for choices, _, _ in CHOICE_SETS for w in choices]
    words += ["左侧更热", "右侧更热", "the top is hotter", "the bottom is hotter", "向左移动", "moves right", "moves up", "向下"]
    answers = [pattern.format(w) for w in words for pattern in NEGATIONS]
    answers += [f"{a}或{b}" for a, b in itertools.permutations(words, 2)]
    answers += [f"{a}，{b}。" for a, b in itertools.permutations(words, 2)]
    answers += [f"不是{a}，是{b}" for a, b in itertools.permutations(words, 2)]
    return answers + FIXED


def test_no_fixed_answer_beats_chance_on_choice_cases(suite):
    groups = balanced_groups(suite)
    assert len(groups) == len(CHOICE_SETS) + 4 and all(len(g) in (2, 4) for g in groups)
    cases = [c for group in groups for c in group]
    chance = sum(1 for _ in groups)  # one right case per group
    for answer in fixed_answers():
        results = {c.id: score(answer, c).passed for c in cases}
        for group in groups:
            right = [c.id for c in group if results[c.id]]
            assert len(right) <= 1, (answer, right)
        assert sum(results.values()) <= chance
