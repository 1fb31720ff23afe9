"""Scorers on hand-written answers, including the field report's real ones; prompt stability."""

from __future__ import annotations

import pytest

from smolsight.evals.scoring import (
    SCORERS,
    anls,
    canonical_direction,
    chinese_number,
    english_number,
    find_numbers,
    read_direction,
    read_number,
    score,
)
from smolsight.tasks import TASK_PROMPTS, task_prompt


# --- number -----------------------------------------------------------------------------------


def test_report_shrimp_answer_is_1000_hedged(case):
    c = case("number", 1000, task="count", prompt="这是虾苗养殖图像，请分析虾苗数量？")
    reading = read_number("虾苗数量为1000多个。", c)
    assert reading.value == 1000 and reading.hedge == "多" and reading.unit == "个"
    result = score("虾苗数量为1000多个。", c)
    assert result.passed and result.value == 1.0 and "hedged" in result.detail


def test_report_pencil_answer_fails_at_ten_percent(case):
    c = case("number", 14.7, task="measure", unit="cm", tolerance={"rel": 0.1}, prompt="图像上的铅笔有多长？")
    result = score("铅笔的长度是约10厘米。", c)
    assert result.passed is False
    assert "hedged (约)" in result.detail and "read 10 cm" in result.detail
    assert result.value == pytest.approx(1 - 4.7 / 14.7)
    assert score("铅笔长约14.5厘米", c).passed


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("大约十二个", 12),
        ("one hundred and twenty", 120),
        ("There are 1,234 fry.", 1234),
        ("共有两百只", 200),
        ("三千五百条", 3500),
        ("零点五", 0.5),
        ("1.5万尾", 15000),
        ("twenty-five shrimp", 25),
        ("I count a dozen.", 12),
        ("这是一张虾苗图像，里面有37只虾苗。", 37),  # 一张 is an article, not the answer
        ("图中只有一只虾苗", 1),
        ("第一排有5只", 5),  # 第一 is an ordinal
        ("图像十分清晰，共有12只", 12),  # 十分 means "very"
        ("-3", -3),
    ],
)
def test_number_forms(case, answer, expected):
    assert read_number(answer, case("number", expected)).value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answer", "hedge"),
    [("约10厘米", "约"), ("about 10 cm", "about"), ("more than 30", "more than"), ("10厘米左右", "左右"),
     ("大约是30个", "大约"), ("十几个", "几"), ("10+ items", "+"), ("exactly 10", None)],
)
def test_hedges_are_flagged(case, answer, hedge):
    assert read_number(answer, case("number", 10)).hedge == hedge


def test_units_convert_to_the_case_unit(case):
    c = case("number", 0.35, unit="cm", tolerance={"abs": 0.01})
    assert read_number("3.5 mm", c).value == pytest.approx(0.35)
    assert read_number("0.147米", c).value == pytest.approx(14.7)
    assert read_number("14.7", c).value == pytest.approx(14.7)  # a bare number is in the case's unit
    assert score("3.5 mm", c).passed


def test_length_unit_number_preferred_over_earlier_bare_number(case):
    c = case("number", 14.7, unit="cm")
    assert read_number("尺子从0到20，铅笔长14.7厘米", c).value == pytest.approx(14.7)


def test_prompt_echo_is_not_read_as_the_answer(case):
    c = case("number", 7, task="count", prompt="图中有多少个螺母？只回答一个数字。")
    assert read_number("只回答一个数字。7", c).value == 7
    plain = case("number", 7, task="count", subject="螺母")  # no prompt: every style's prompt is stripped
    assert read_number("图像中有多少螺母？只回答一个数字。 七", plain).value == 7


def test_counts_are_exact_by_default(case):
    c = case("number", 12)
    assert score("12", c).passed and not score("13", c).passed
    assert score("no idea", c) .passed is False


def test_numeral_parsers():
    assert [chinese_number(t) for t in ("十", "十二", "一百二十", "一百零五", "两百五", "一万五", "二〇二五")] == [
        10, 12, 120, 105, 250, 15000, 2025]
    assert english_number("two thousand three hundred and four") == 2304
    assert english_number("one point five") == 1.5
    assert [r.value for r in find_numbers("3 apples, 4.5 m and seven")] == [3, 4.5, 7]


# --- text, keywords, choice -------------------------------------------------------------------


def test_text_normalises_case_width_space_punctuation(case):
    c = case("text", "iNeuOS 工业互联网操作系统")
    assert score("ＩＮＥＵＯＳ　工业互联网操作系统。", c).passed
    assert score("图像上的文字是：“iNeuOS工业互联网操作系统”", c).passed
    assert not score("iNeuOS", c).passed


def test_contains_all_with_synonyms(case):
    c = case("contains_all", ["fire", "smoke"], synonyms={"fire": ["火", "flames"], "smoke": ["烟"]})
    assert score("一个大型熔炉发生火灾，浓烟滚滚。", c).passed
    assert score("Flames and thick smoke rise from the tank.", c).passed
    partial = score("A furnace on fire.", c)
    assert partial.passed is False and partial.value == 0.5 and "missing: smoke" in partial.detail


def test_latin_keywords_match_at_word_starts(case):
    c = case("contains_all", ["tree"])
    assert score("Two trees stand by a house.", c).passed
    assert not score("A street at night.", c).passed


def test_contains_none(case):
    c = case("contains_none", ["fire"], synonyms={"fire": ["火"]})
    assert score("A quiet valley with trees.", c).passed
    result = score("远处有火光", c)
    assert result.passed is False and result.value == 0.0


def test_choice(case):
    c = case("choice", "关", choices=["开", "关"])
    assert score("关", c).passed and score("阀门是关着的", c).passed and not score("开", c).passed
    letters = case("choice", "B", choices=["A", "B", "C"])
    assert score("The answer is B.", letters).passed  # the article "a" is not choice A
    assert score("no option fits", letters).passed is False


# --- trend ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "direction"),
    [
        ("右侧温度更高。", "right_hotter"),
        ("温度从左到右逐渐升高。", "right_hotter"),
        ("从左到右，温度逐渐降低", "left_hotter"),
        ("The right side is hotter than the left.", "right_hotter"),
        ("Temperature increases from left to right.", "right_hotter"),
        ("左侧温度较低，右侧较高", "right_hotter"),
        ("右侧温度比左侧高", "right_hotter"),
        ("左高右低", "left_hotter"),
        ("The top is red and the bottom is blue.", "top_hotter"),
        ("温度自上而下逐渐升高", "bottom_hotter"),
        ("It is warmer at the bottom.", "bottom_hotter"),
        ("温度分布很均匀。", None),
        ("左侧更热，右侧更热", None),  # a tie is no answer
    ],
)
def test_read_temperature_direction(answer, direction):
    assert read_direction(answer, "hotter")[0] == direction


@pytest.mark.parametrize(
    ("answer", "direction"),
    [("圆点从左向右移动。", "moves_right"), ("The dot moves from left to right.", "moves_right"),
     ("它一直向上移动", "moves_top"), ("The red dot is moving to the left.", "moves_left"),
     ("It drifts downwards.", "moves_bottom")],
)
def test_read_motion_direction(answer, direction):
    assert read_direction(answer, "moves")[0] == direction


def test_trend_scorer_accepts_aliases(case):
    c = case("trend", "left_to_right_rising", task="trend")
    result = score("这是温度场仿真，温度从左到右逐渐升高，右侧温度最高。", c)
    assert result.passed and "right_hotter" in result.detail
    assert canonical_direction("left_colder") == "right_hotter"
    with pytest.raises(ValueError, match="unknown direction"):
        canonical_direction("diagonal")


# --- anls, free -------------------------------------------------------------------------------


def test_anls():
    assert anls("iNeuOS", ["ineuos"]) == 1.0
    assert anls("iNeu0S", ["iNeuOS"]) == pytest.approx(5 / 6)
    assert anls("NeuOS", ["iNeuOS 工业互联网操作系统"]) == 0.0  # beyond the 0.5 threshold
    assert anls("x", ["y", "x"]) == 1.0


def test_anls_scorer_reads_the_answer_part(case):
    c = case("anls", ["iNeuOS 工业互联网操作系统"], task="read")
    result = score("图像上的文字是：iNeuOS 工业互联网操作系统", c)
    assert result.passed and result.value == 1.0
    assert not score("The report lists iNeuOS, OS, NeuOS.", c).passed


def test_free_is_recorded_not_scored(case):
    result = score("anything", case("free"))
    assert result.passed is None and result.value is None


def test_every_answer_type_has_a_scorer():
    assert set(SCORERS) == {"number", "text", "contains_all", "contains_none", "choice", "trend", "anls", "free"}


# --- prompt stability -------------------------------------------------------------------------

REPORT_PROMPTS = {
    "describe": "请描述这张图像？",
    "accident": "请描述这个事故现场？",
    "trend": "这是温度场仿真，请描述温度变化趋势？",
    "count": "这是虾苗养殖图像，请分析虾苗数量？",
    "qa": "结合图像上的内容，请问简单iNeuOS是什么？",
    "read": "图像上的文字是什么？",
    "measure": "图像上的铅笔有多长？",
}


@pytest.mark.parametrize("task", sorted(REPORT_PROMPTS))
def test_raw_prompts_are_the_reports(task):
    assert task_prompt(task, "zh", "raw") == REPORT_PROMPTS[task]


def test_prompt_snapshot():
    """Pins every prompt: a change here changes what models are asked, so results stop comparing."""
    assert task_prompt("count", "en", "raw") == "This is a shrimp fry farming image, please analyse the number of shrimp fry?"
    assert task_prompt("measure", "en", "raw") == "How long is the pencil in the image?"
    assert task_prompt("count", "zh") == "图像中有多少虾苗？只回答一个数字。"
    assert task_prompt("count", "en", subject="bolts") == "How many bolts are in the image? Answer with a number only."
    assert task_prompt("measure", "zh") == "参照图中的尺子，铅笔有多长？只回答一个以厘米为单位的数字。"
    for style in TASK_PROMPTS.values():
        for prompts in style.values():
            assert set(prompts) == {"zh", "en"} and all(p.strip() == p and p for p in prompts.values())
