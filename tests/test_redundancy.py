"""Text-level redundancy: hand-written answers in the shapes SmolVLM2 produces."""

from __future__ import annotations

import random
import time

import pytest

from smolsight.engine.redundancy import (
    RepetitionMetrics,
    SentenceFilter,
    remove_repeated_sentences,
    repetition_metrics,
    split_sentences,
)

SCENERY = (
    "图中是一枝开满红白花朵的树枝，上面覆盖着白雪。这使得花朵显得更加美丽。"
    "树枝在蓝天的映衬下格外醒目，这使得花朵显得更加美丽。"
)
# The seed report's failure: the gist, then one clause recurring in sentence after sentence.
SCENERY_PADDED = "图中是一枝开满红白花朵的树枝，上面覆盖着白雪。" + "".join(
    f"{lead}，这使得花朵显得更加美丽。"
    for lead in ["树枝在蓝天的映衬下格外醒目", "白雪覆盖着树枝", "红色的花朵盛开", "白色的花朵点缀其间", "阳光照在雪上"]
)
TABLE = (
    "| Object | Color | Count |\n"
    "| --- | --- | --- |\n"
    "| car | red | 2 |\n"
    "| car | blue | 3 |\n"
    "| bike | red, blue | 1 |\n"
)
NUMBERED = (
    "Things in the picture:\n"
    "1. A red car parked on the street.\n"
    "2. A blue car parked near the tree.\n"
    "3. A man walking his dog.\n"
)
RULES = "Intro text here.\n\n---\n\nBody text is here.\n\n---\n\nThe end of the story.\n"
PROSE = (
    "The image shows a busy street at dusk. Several cars wait at a red light, "
    "and a cyclist in a yellow jacket crosses in front of them. Shop windows glow "
    "on the left side, while the right side is mostly dark apartment blocks."
)
SURVIVORS = [PROSE, TABLE, NUMBERED, RULES, "ha ha ha"]


# --- split_sentences ----------------------------------------------------------------------------


def test_split_keeps_punctuation_and_rejoins_exactly():
    assert split_sentences(SCENERY) == [
        "图中是一枝开满红白花朵的树枝，",
        "上面覆盖着白雪。",
        "这使得花朵显得更加美丽。",
        "树枝在蓝天的映衬下格外醒目，",
        "这使得花朵显得更加美丽。",
    ]


@pytest.mark.parametrize("text", [*SURVIVORS, SCENERY, "", "\n\nx", "Dr. Smith paid $3.50 for 1,000 items.\n"])
def test_split_is_a_partition(text):
    assert "".join(split_sentences(text)) == text


def test_split_leaves_numbers_and_abbreviated_decimals_whole():
    assert split_sentences("It costs 3.50 for 1,000 items. Next") == ["It costs 3.50 for 1,000 items. ", "Next"]


def test_split_keeps_table_rows_and_list_items_whole():
    assert split_sentences(TABLE) == TABLE.splitlines(keepends=True)
    assert split_sentences(NUMBERED)[1] == "1. A red car parked on the street.\n"


# --- remove_repeated_sentences ------------------------------------------------------------------


def test_chinese_repeated_clause_is_dropped_and_the_comma_becomes_a_full_stop():
    cleaned, removed = remove_repeated_sentences(SCENERY)
    assert cleaned == (
        "图中是一枝开满红白花朵的树枝，上面覆盖着白雪。这使得花朵显得更加美丽。树枝在蓝天的映衬下格外醒目。"
    )
    assert removed == len(SCENERY) - len(cleaned) == 12


def test_recurring_clause_is_kept_once():
    cleaned, _ = remove_repeated_sentences(SCENERY_PADDED)
    assert cleaned.count("这使得花朵显得更加美丽") == 1
    assert "白色的花朵点缀其间。" in cleaned


def test_english_near_repeat_is_dropped():
    text = (
        "The photo shows a small brown dog running across a grassy park. The dog looks happy. "
        "The photo shows a small brown dog running across the grassy park."
    )
    assert remove_repeated_sentences(text)[0] == (
        "The photo shows a small brown dog running across a grassy park. The dog looks happy."
    )


def test_similarity_threshold_is_honoured_where_few_content_words_decide():
    """Pieces with under MIN_CONTENT content words are judged by word similarity alone."""
    text = "It is what it is and so it was. It is what it is and so it was then."
    assert remove_repeated_sentences(text, similarity=0.95)[1] == 0
    assert remove_repeated_sentences(text, similarity=0.9)[1] > 0


def test_paraphrase_adding_no_content_word_is_dropped_at_any_similarity():
    text = "A tall man walks a big dog in the park today. The tall man walks a big dog in the park today."
    assert remove_repeated_sentences(text, similarity=1.0)[0] == "A tall man walks a big dog in the park today."


def test_different_numbers_are_never_near_repeats():
    text = "The temperature at the left edge is 35 degrees. The temperature at the left edge is 36 degrees."
    assert remove_repeated_sentences(text) == (text, 0)


def test_numbered_steps_with_the_same_words_stay():
    text = "Step 1. Open the front door of the house slowly.\nStep 2. Open the front door of the house slowly.\n"
    assert remove_repeated_sentences(text) == (text, 0)


def test_repeated_list_item_is_dropped_with_its_marker():
    text = "1. A red car parked on the street.\n2. A man walking his dog.\n3. A red car parked on the street.\n"
    assert remove_repeated_sentences(text)[0] == "1. A red car parked on the street.\n2. A man walking his dog.\n"


def test_verbatim_loop_collapses_to_one_sentence():
    text = "The tree is covered with snow and flowers. " * 10
    assert remove_repeated_sentences(text) == ("The tree is covered with snow and flowers. ", len(text) - 43)


def test_repeated_line_is_dropped_with_its_line_break():
    text = "A red car is parked outside.\nA man is walking his dog.\nA red car is parked outside.\nThe sky is grey."
    assert remove_repeated_sentences(text)[0] == (
        "A red car is parked outside.\nA man is walking his dog.\nThe sky is grey."
    )


def test_identical_table_rows_collapse_but_differing_ones_stay():
    row = "| front door | open | 2 people |\n"
    assert remove_repeated_sentences(TABLE + row + row)[0] == TABLE + row


@pytest.mark.parametrize("text", [*SURVIVORS, "Yes. Yes. Yes.", "However, it rains. However, it shines."])
def test_text_without_repeats_is_byte_identical(text):
    assert remove_repeated_sentences(text) == (text, 0)


def test_repeated_rules_survive():
    text = "---\n" * 5 + "| a | b |\n|---|---|\n" * 3
    assert remove_repeated_sentences(text) == (text, 0)


# --- repetition_metrics -------------------------------------------------------------------------


def test_distinct_n_by_hand_on_words():
    # units: the cat saw the cat .
    m = repetition_metrics("The cat saw the cat.")
    assert m.distinct_1 == pytest.approx(4 / 6)  # the, cat, saw, .
    assert m.distinct_2 == pytest.approx(4 / 5)  # (the cat) twice
    assert m.distinct_3 == 1.0
    assert m.distinct_4 == 1.0
    assert m.repeated_ngram_ratio == 0.0


def test_distinct_n_by_hand_on_chinese_characters():
    # units: 猫 看 猫 看 猫 看 。
    m = repetition_metrics("猫看猫看猫看。")
    assert (m.distinct_1, m.distinct_2) == (pytest.approx(3 / 7), pytest.approx(3 / 6))
    assert m.distinct_4 == pytest.approx(3 / 4)  # 猫看猫看 comes back at position 2
    assert m.repeated_ngram_ratio == pytest.approx(1 / 4)


def test_tokens_replace_text_units():
    m = repetition_metrics("whatever", tokens=[5, 6, 5, 6, 5, 6])
    assert m.distinct_1 == pytest.approx(2 / 6)
    assert m.distinct_2 == pytest.approx(2 / 5)
    assert m.repeated_ngram_ratio == pytest.approx(1 / 3)  # (5 6 5 6) comes back at position 2


def test_longest_repeat_share_allows_overlap():
    assert repetition_metrics("abcabc").longest_repeat_share == pytest.approx(3 / 6)
    assert repetition_metrics("aaaa").longest_repeat_share == pytest.approx(3 / 4)
    assert repetition_metrics("abcd").longest_repeat_share == 0.0


def test_empty_text_scores_zero():
    m = repetition_metrics("")
    assert m == RepetitionMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    assert m.to_dict()["looped"] is False


def test_to_dict_has_every_field():
    assert set(repetition_metrics(PROSE).to_dict()) == {
        "distinct_1", "distinct_2", "distinct_3", "distinct_4",
        "repeated_ngram_ratio", "longest_repeat_share", "repeated_clause_share", "looped",
    }


@pytest.mark.parametrize("text", [*SURVIVORS, SCENERY, "---\n" * 5])
def test_ordinary_answers_are_not_looped(text):
    assert not repetition_metrics(text).looped


@pytest.mark.parametrize(
    "text",
    [
        "::::::::::::::::::::" * 200,
        ":::::::::::::::::::: " * 200,
        "The tree is covered with snow and flowers. " * 10,
        "这使得花朵显得更加美丽。" * 10,
        SCENERY_PADDED,
        PROSE + " Loop unit!" * 20 + " Loop",  # truncated mid-copy, as a token limit leaves it
    ],
)
def test_loops_are_looped(text):
    assert repetition_metrics(text).looped


def test_looping_text_scores_worse_than_prose():
    loop, prose = repetition_metrics("The tree is covered with snow. " * 10), repetition_metrics(PROSE)
    assert loop.distinct_2 < 0.2 < 0.9 < prose.distinct_2
    assert loop.repeated_ngram_ratio > 0.8 > 0.1 > prose.repeated_ngram_ratio
    assert loop.longest_repeat_share > 0.8 > 0.1 > prose.longest_repeat_share
    assert loop.repeated_clause_share > 0.8 and prose.repeated_clause_share == 0.0


def test_report_style_padding_shows_in_clause_share_not_longest_repeat():
    m = repetition_metrics(SCENERY_PADDED)
    assert m.longest_repeat_share < 0.3 <= m.repeated_clause_share


# --- speed --------------------------------------------------------------------------------------


def _random_prose(chars: int) -> str:
    rng = random.Random(0)
    words = "the a dog cat car tree snow red blue walks sits near under bright dark old new".split()
    sentences = (" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) + "." for _ in range(chars))
    return " ".join(sentences)[:chars]


@pytest.mark.parametrize(
    "text", [_random_prose(20_000), "这使得花朵显得更加美丽。" * 1700, "::::::::::::::::::::" * 1000]
)
def test_twenty_thousand_characters_are_fast(text):
    start = time.perf_counter()
    repetition_metrics(text)
    remove_repeated_sentences(text)
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("similarity", [0.0, 1.5])
def test_similarity_outside_zero_one_is_refused(similarity):
    with pytest.raises(ValueError):
        remove_repeated_sentences(SCENERY, similarity=similarity)


# --- templated repetition and paraphrase, without losing distinct facts ---------------------------

QA_RAMBLE = (
    "The capital of France is Paris.\n"
    "Q: What is the capital of Germany? A: Berlin.\n"
    "Q: What is the capital of Italy? A: Rome.\n"
    "Q: What is the capital of Spain? A: Madrid.\n"
    "Q: What is the capital of Japan? A: Tokyo.\n"
)


def test_templated_ramble_is_cut_from_its_third_unit():
    cleaned, removed = remove_repeated_sentences(QA_RAMBLE)
    assert cleaned == "".join(QA_RAMBLE.splitlines(keepends=True)[:3])
    assert removed == len(QA_RAMBLE) - len(cleaned)


def test_paraphrased_clause_repeat_is_dropped():
    text = ("This makes the flowers look more beautiful. The branch stands out against the sky. "
            "The flowers look more beautiful because of this.")  # fmt: skip
    assert remove_repeated_sentences(text)[0] == "This makes the flowers look more beautiful. The branch stands out against the sky."


@pytest.mark.parametrize(
    "text",
    [
        # colours, objects, negation: one word apart, each a fact of its own
        "There is a red truck parked next to the gate. There is a blue truck parked next to the gate. "
        "There is a red car parked next to the gate.",
        "The gate is open to the yard today. The gate is not open to the yard today.",
        # a template over numbers is a list of readings
        "Tank 1 holds 35 fry in total. Tank 2 holds 40 fry in total. Tank 3 holds 38 fry in total. Tank 4 holds 41 fry.",
        "Row 1: the temperature is 35 °C.\nRow 2: the temperature is 36 °C.\nRow 3: the temperature is 37 °C.\n",
        # names with different objects are not one template
        "John Smith is the driver of the truck. Mary Jones is the driver of the van. Peter Brown is the driver of the bus.",
        "左边的温度是35度，中间的温度是36度，右边的温度是37度。",
    ],
)
def test_distinct_facts_survive(text):
    assert remove_repeated_sentences(text) == (text, 0)


REPEATED_ITEM = "1. A red car parked on the street.\n2. A man walking his dog.\nStep 3. A red car parked on the street.\n"


@pytest.mark.parametrize("text", [QA_RAMBLE, SCENERY_PADDED, TABLE, NUMBERED, REPEATED_ITEM, SCENERY, "a, b. c, d.\n\n1. x\n2. y"])
def test_filter_fed_in_pieces_gives_what_it_gives_fed_at_once(text):
    whole = remove_repeated_sentences(text)[0]
    rng = random.Random(len(text))
    for _ in range(10):
        cleaner, out, at = SentenceFilter(), "", 0
        while at < len(text):
            step = rng.randint(1, 7)
            out += cleaner.feed(text[at : at + step])
            at += step
        assert out + cleaner.close() == whole
