"""Answers that must not earn a score, and true answers that must keep theirs, for every scorer:
negation, the number that answers, ranges and approximations, units, token boundaries, several
candidates, echoes, empty and "I don't know" answers."""

from __future__ import annotations

import pytest

from smolsight.evals.scoring import find_numbers, negation_scopes, read_number, score

SHRIMP = {"task": "count", "subject": "虾苗", "scenario": "counting"}
SHRIMP_EN = {"task": "count", "subject": "shrimp fry", "lang": "en", "scenario": "counting"}
PENCIL = {"task": "measure", "subject": "铅笔", "unit": "cm", "tolerance": {"rel": 0.1}, "scenario": "measurement"}
FIRE = {"task": "accident", "synonyms": {"fire": ["火", "flames", "燃烧"], "smoke": ["烟", "smoky"]}}
SCENE = {"synonyms": {"sky": ["天空"], "tree": ["树"], "house": ["房", "building"]}}
VALVE = {"choices": ["开", "关"], "prompt": "阀门是开还是关？", "task": "qa"}
NOTHING = ["", "   ", "I don't know.", "我不知道。", "无法判断。", "Sorry, I cannot tell from this image."]


def verdict(case, answer_type, expected, answer, **fields) -> bool:
    return score(answer, case(answer_type, expected, **fields)).passed


# --- negation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "denied"),
    [
        ("现场没有火", ["火"]),
        ("no fire visible", [" fire visible"]),
        ("没有火，但有浓烟", ["火"]),
        ("没有天空、树、房子，也没有火和烟", ["天空、树、房子", "火和烟"]),
        ("There are no clouds in the sky.", [" clouds "]),
        ("The house isn't on fire.", [" on fire"]),
        ("neither fire nor smoke", [" fire nor smoke", " smoke"]),
    ],
)
def test_negation_reaches_the_end_of_its_clause(text, denied):
    assert [text[s.start : s.end] for s in negation_scopes(text)] == denied


@pytest.mark.parametrize("text", ["浓烟不断冒出", "不少树", "不远处有房子", "差不多有十棵树", "无数棵树", "非常大的火",
                                  "毫无疑问这是火灾", "不到30只", "no more than 30", "not only fire but smoke",
                                  "房子被淹没", "未来"])  # fmt: skip
def test_words_that_only_look_negative_deny_nothing(text):
    assert negation_scopes(text) == []


# --- contains_all / contains_none -------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "现场没有火。", "No fire visible.", "没有天空、树、房子，也没有火和烟…", "There is no fire and no smoke.",
        "Neither fire nor smoke can be seen.", "未见明火，无烟。", "这不是火，也不是烟。", "The truck is not on fire and is not smoky.",
        "看不到火和烟。", "A quiet street at night.",  # "street" is no "tree", nor anything here
    ],
)  # fmt: skip
def test_contains_all_denied_keywords_fail(case, answer):
    result = score(answer, case("contains_all", ["fire", "smoke"], **FIRE))
    assert result.passed is False and result.value == 0.0, result.detail


@pytest.mark.parametrize(
    "answer",
    ["一辆卡车着火了，冒出浓烟。", "Flames and thick smoke rise from the tank.", "熔炉正在燃烧，浓烟滚滚，但没有人员受伤。",
     "There is a fire, and smoke is rising.", "大火不断燃烧，浓烟不断上升。", "火、烟"],
)  # fmt: skip
def test_contains_all_paraphrases_pass(case, answer):
    assert verdict(case, "contains_all", ["fire", "smoke"], answer, **FIRE)


def test_negation_is_scoped_to_its_clause(case):
    c = case("contains_all", ["fire", "smoke"], **FIRE)
    result = score("没有火，但有浓烟。", c)
    assert result.passed is False and result.value == 0.5 and "fire (negated: '火')" in result.detail
    assert score("No fire, but smoke.", c).value == 0.5
    scene = case("contains_all", ["sky", "tree", "house"], **SCENE)
    assert score("There are no clouds in the sky; trees stand by a house.", scene).passed


@pytest.mark.parametrize(
    ("answer", "passed"),
    [("现场没有火", True), ("no fire visible", True), ("There is no fire or smoke.", True), ("A calm valley.", True),
     ("远处有火光", False), ("Something is burning: flames everywhere.", False), ("没有烟，但是有火", False)],
)  # fmt: skip
def test_contains_none_reads_denials_as_absence(case, answer, passed):
    assert verdict(case, "contains_none", ["fire"], answer, synonyms={"fire": ["火", "flames", "burning"]}) is passed


@pytest.mark.parametrize("answer", ["94.95", "94, 9 sensors", "…93 94 95…", "194.9", "94.9 or 95.1", "94.9 P-284",
                                    "“出口温度 94.9 °C” “额定功率 11 kW”"])  # fmt: skip
def test_value_keywords_match_whole_and_alone(case, answer):
    assert not verdict(case, "contains_all", ["94.9"], answer)


@pytest.mark.parametrize("answer", ["94.9", "出口温度为94.9°C。", "The meter shows 94.9 °C.", "94.9℃", "温度是94.9度，不是95度。"])
def test_value_keywords_pass_when_stated(case, answer):
    assert verdict(case, "contains_all", ["94.9"], answer)


def test_code_keywords(case):
    def passes(answer: str) -> bool:
        return verdict(case, "contains_all", ["P-284"], answer, synonyms={"P-284": ["P284"]})

    assert passes("设备编号是P-284。") and passes("No. P284, rated 11 kW") and passes("编号 P 284")
    assert not passes("P-2845") and not passes("NEU-505 or P-284") and not passes("编号不是P-284")


# --- number -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected", "fields"),
    [
        ("图中有1张图像，虾苗约37只", 37, SHRIMP),
        ("图中有1张图像，虾苗约37只", 37, {"task": "count"}),  # without a subject: 1 counts the image
        ("这是1张虾苗图像。", 1, SHRIMP),
        ("第3个零件有缺陷, 共7个", 7, {"task": "count", "subject": "零件"}),
        ("There are 3 tanks with 37 shrimp fry.", 37, SHRIMP_EN),
        ("I count 37.", 37, SHRIMP_EN),
        ("虾苗有37只，其中5只在左边。", 37, SHRIMP),
        ("图中有三只虾苗，一只在左边，两只在右边。", 3, SHRIMP),
        ("There are 37 shrimp fry. Some of them, about 10, are near the top.", 37, SHRIMP_EN),
        ("Of the 37 shrimp fry, 10 are near the top and 27 at the bottom.", 37, SHRIMP_EN),
        ("共有三十七只虾苗。", 37, SHRIMP),
        ("37 shrimp fry in total", 37, SHRIMP_EN),
        ("零个", 0, SHRIMP),
        ("No shrimp.", 0, SHRIMP_EN),
        ("There are no shrimp fry in the tank.", 0, SHRIMP_EN),
        ("图中没有虾苗。", 0, SHRIMP),
        ("一只都没有", 0, SHRIMP),
        ("None.", 0, SHRIMP_EN),
        ("不是37只，是38只", 38, SHRIMP),
        ("温度从30°C升到80°C", 80, {"task": "qa", "prompt": "温度升到多少？", "unit": "°C"}),
        ("The temperature rose from 30 to 80 degrees.", 80, {"task": "qa", "prompt": "How hot?", "unit": "°C"}),
        ("铅笔长14.7厘米，尺子长20厘米。", 14.7, PENCIL),
        ("长14.7厘米，宽0.8厘米", 14.7, PENCIL),
        ("The pencil is about 147 mm long.", 14.7, PENCIL),
        ("0.147米", 14.7, PENCIL),
        ("铅笔长约4.4寸", 14.7, PENCIL),  # 寸 is the Chinese inch, 3.33 cm
        ("5.8英寸", 14.7, PENCIL),  # 英寸 is the inch, 2.54 cm
        ("about 5.8 inches", 14.7, PENCIL),
        ("14.7厘米（147毫米）", 14.7, PENCIL),
        ("十四点七厘米", 14.7, PENCIL),
        ("两百只左右", 200, SHRIMP),
        ("1000多个", 1000, SHRIMP),
        ("about a dozen", 12, SHRIMP_EN),
        ("twenty-five shrimp fry", 25, SHRIMP_EN),
    ],
)
def test_the_number_that_answers(case, answer, expected, fields):
    result = score(answer, case("number", expected, **fields))
    assert result.passed, result.detail


@pytest.mark.parametrize(
    ("answer", "expected", "fields"),
    [
        ("37个，38个，…50个", 37, SHRIMP),
        ("37个，38个，…50个", 50, SHRIMP),
        ("虾苗：37只，38只，39只", 37, SHRIMP),
        ("37 shrimp, 38 shrimp, 39 shrimp", 39, SHRIMP_EN),
        (", ".join(str(n) for n in range(1, 201)), 37, SHRIMP),
        ("37 or 38", 37, SHRIMP_EN),
        ("3-5个", 5, SHRIMP),
        ("3-5个", 3, SHRIMP),
        ("12 to 15", 15, SHRIMP_EN),
        ("两三百只", 300, SHRIMP),
        ("十几个", 10, SHRIMP),
        ("上千只", 1000, SHRIMP),
        ("几百只", 500, SHRIMP),
        ("dozens of shrimp fry", 36, SHRIMP_EN),
        ("1-1000", 500, {**SHRIMP, "tolerance": {"rel": 0.5}}),
        ("第37个零件", 37, {"task": "count"}),  # an ordinal, and 零件 is "part", not zero
        ("零件", 0, {"task": "count"}),
        ("5寸", 5, PENCIL),  # 5 Chinese inches are 16.7 cm, not 5
        ("铅笔长约10厘米", 14.7, PENCIL),
        ("额定功率 11 kW", 11, PENCIL),  # no length in it
        ("不是37只", 37, SHRIMP),
        ("There are no 37 shrimp fry here.", 37, SHRIMP_EN),
        ("虾苗约37只，另外还有40只", 40, SHRIMP),
        ("37只在左边，38只在右边，39只在中间", 37, SHRIMP),
        ("P-284", 284, SHRIMP),
        ("No. 37", 37, SHRIMP_EN),
        ("图像中有多少虾苗？只回答一个数字。", 1, SHRIMP),  # the prompt echoed: 一 is not an answer
    ],
)
def test_numbers_that_do_not_answer(case, answer, expected, fields):
    result = score(answer, case("number", expected, **fields))
    assert result.passed is False, result.detail


@pytest.mark.parametrize(
    ("answer", "low", "high"),
    [("3-5个", 3, 5), ("3~5只", 3, 5), ("三到五个", 3, 5), ("12 to 15", 12, 15), ("between 12 and 15", 12, 15),
     ("3或4个", 3, 4), ("七八个", 7, 8), ("两三百", 200, 300), ("三四十条", 30, 40), ("十七八只", 17, 18),
     ("十几个", 11, 19), ("二十几只", 21, 29), ("几十只", 20, 90), ("几百只", 200, 900), ("上千只", 1000, 9999),
     ("上百条", 100, 999), ("成千上万", 1000, 99999), ("几个", 2, 9), ("dozens", 24, 99), ("hundreds of fry", 200, 999)],
)  # fmt: skip
def test_ranges_and_approximations_are_intervals(answer, low, high):
    (reading,) = find_numbers(answer)
    assert (reading.low, reading.high) == (low, high)


def test_the_interval_rule(case):
    """An interval passes when all of it lies within the tolerance window around the truth."""
    assert verdict(case, "number", 4, "3-5个", **{**SHRIMP, "tolerance": {"abs": 1}})
    assert not verdict(case, "number", 5, "3-5个", **{**SHRIMP, "tolerance": {"abs": 1}})
    assert verdict(case, "number", 250, "两三百只", **{**SHRIMP, "tolerance": {"rel": 0.2}})
    assert not verdict(case, "number", 250, "两三百只", **{**SHRIMP, "tolerance": {"rel": 0.1}})
    assert verdict(case, "number", 15, "十几只", **{**SHRIMP, "tolerance": {"abs": 4}})
    result = score("12 to 15", case("number", 15, **SHRIMP_EN))
    assert "read 12 to 15" in result.detail and result.value == pytest.approx(0.8)


def test_several_values_are_named_in_the_detail(case):
    result = score("37个，38个，…50个", case("number", 37, **SHRIMP))
    assert result.detail.startswith("states several values (37, 38, 50)") and result.value == 0.0
    assert read_number("37个，38个", case("number", 37, **SHRIMP)) is None


def test_a_change_is_read_at_its_end(case):
    result = score("温度从30°C升到80°C", case("number", 30, task="qa", prompt="温度？", unit="°C"))
    assert result.passed is False and "read 80 °C" in result.detail and "changed from 30" in result.detail


# --- text and anls ----------------------------------------------------------------------------

PLATES = "“iNeuOS 工业互联网操作系统 型号 Model NEU-505” “出口温度 Outlet temperature 94.9 °C” “离心泵 Centrifugal pump 设备编号 No. P-284”"


@pytest.mark.parametrize("answer_type", ["text", "anls"])
def test_quoting_every_candidate_earns_nothing(case, answer_type):
    c = case(answer_type, ["出口温度 Outlet temperature 94.9 °C"], task="read")
    assert not score(PLATES, c).passed
    assert not score(PLATES.replace("“", "").replace("”", "\n"), c).passed
    assert score("“出口温度 Outlet temperature 94.9 °C”", c).passed
    assert score("图像上的文字是：出口温度 Outlet temperature 94.9 °C", c).passed


def test_a_quote_under_negation_is_not_the_answer(case):
    c = case("text", ["开"], task="read")
    assert not score("不是“开”，是“关”", c).passed
    assert score("上面写着“开”", c).passed


def test_anls_reads_a_plate_split_over_quotes(case):
    c = case("anls", ["iNeuOS 工业互联网操作系统 型号 Model NEU-505"], task="read")
    assert score("图像上的文字是“iNeuOS 工业互联网操作系统”和“型号 Model NEU-505”。", c).passed


# --- choice -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "picked"),
    [("关", "关"), ("阀门是关着的。", "关"), ("不是开，是关", "关"), ("阀门没有打开", "关"), ("阀门并非开启状态", "关"),
     ("关。阀门处于关闭状态", "关"), ("开或关", None), ("开。关。开。关。", None), ("开，关", None), ("可能开，也可能关", None),
     ("阀门没有打开，也没有关上", None), ("我不知道", None), ("", None)],
)  # fmt: skip
def test_choice_reads_negation_and_refuses_hedges(case, answer, picked):
    result = score(answer, case("choice", "关", **VALVE))
    assert result.passed is (picked == "关"), result.detail
    if picked is None:
        assert result.detail.startswith("names")


def test_choice_mentions_inside_longer_choices_belong_to_them(case):
    c = case("choice", "没有", choices=["有", "没有"], prompt="有火吗？", task="qa")
    assert score("没有", c).passed and score("图中没有火。", c).passed and not score("有火。", c).passed
    yes_no = case("choice", "yes", choices=["yes", "no"], prompt="Is there fire?", task="qa", lang="en")
    assert score("Yes, there is no smoke though.", yes_no).passed
    assert not score("No, there is no fire.", yes_no).passed
    letters = case("choice", "B", choices=["A", "B", "C", "D"], prompt="Which one?", task="qa", lang="en")
    assert score("B. It is the highest.", letters).passed and not score("A, B, C or D", letters).passed


# --- trend ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "direction"),
    [("右侧不比左侧热", "right_hotter"), ("The right side is not hotter.", "right_hotter"),
     ("温度不是从左到右升高", "right_hotter"), ("左侧更热，右侧更热，上侧更热，下侧更热", "right_hotter"),
     ("The dot does not move left.", "moves_left"), ("圆点没有向右移动", "moves_right"),
     ("The dot moves left and right.", "moves_left")],
)  # fmt: skip
def test_trend_denials_and_hedges_fail(case, answer, direction):
    assert not verdict(case, "trend", direction, answer, task="trend")


@pytest.mark.parametrize(
    ("answer", "direction"),
    [("右侧温度较高，左侧不热", "right_hotter"), ("从左到右温度没有升高，而是降低", "left_hotter"),
     ("圆点没有向左移动，而是向右移动", "moves_right"), ("The dot does not move left; it moves right.", "moves_right"),
     ("温度从左到右逐渐升高，右侧最热。", "right_hotter")],
)  # fmt: skip
def test_trend_reads_past_denials(case, answer, direction):
    assert verdict(case, "trend", direction, answer, task="trend")


# --- every scorer: nothing, echoes ------------------------------------------------------------

EVERY = [
    ("number", 37, SHRIMP),
    ("number", 14.7, PENCIL),
    ("contains_all", ["fire", "smoke"], FIRE),
    ("contains_all", ["94.9"], {"task": "qa", "prompt": "仪表显示的出口温度是多少？"}),
    ("text", ["iNeuOS"], {"task": "read"}),
    ("anls", ["iNeuOS 工业互联网操作系统"], {"task": "read"}),
    ("choice", "关", VALVE),
    ("trend", "right_hotter", {"task": "trend"}),
    ("trend", "moves_right", {"task": "trend", "prompt": "视频中的红色圆点朝哪个方向移动？用一句话回答。"}),
]


@pytest.mark.parametrize(("answer_type", "expected", "fields"), EVERY)
def test_no_answer_earns_nothing(case, answer_type, expected, fields):
    c = case(answer_type, expected, **fields)
    for answer in NOTHING:
        assert score(answer, c).passed is False, (answer, score(answer, c).detail)


@pytest.mark.parametrize(("answer_type", "expected", "fields"), EVERY)
def test_the_prompt_echoed_earns_nothing(case, answer_type, expected, fields):
    from smolsight.evals.suite import case_prompt

    c = case(answer_type, expected, **fields)
    for style in ("short", "raw"):
        echo = case_prompt(c, style)
        assert score(echo, c).passed is False, (echo, score(echo, c).detail)
        assert score(f"{echo} {echo}", c).passed is False
