"""Token choice keeps transformers' definitions while doing less work per token: the repetition
penalty touches only each row's seen tokens, and greedy choice on CPU goes through numpy."""

from __future__ import annotations

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from smolsight.engine.decoding import TokenChooser, greedy_tokens
from smolsight.engine.options import resolve_options

VOCAB = 500


@pytest.mark.parametrize("penalize_prompt", [True, False])
def test_repetition_penalty_is_transformers_on_each_padded_row(penalize_prompt):
    torch.manual_seed(0)
    options = resolve_options("precise", repetition_penalty=1.3, penalize_prompt=penalize_prompt)
    prompts = [[5, 9, 9, 17], [42, 5], [7]]
    padded = torch.tensor([[-1] * (4 - len(p)) + p for p in prompts])  # -1: left padding
    chooser = TokenChooser(options, padded, VOCAB)
    for step in range(3):
        chooser.record(torch.randint(0, VOCAB, (3,)))
    logits = torch.randn(3, VOCAB) * 5
    got = chooser.penalise_seen(logits)
    processor = RepetitionPenaltyLogitsProcessor(1.3)
    for row, prompt in enumerate(prompts):
        seen = (prompt if penalize_prompt else []) + chooser.generated[row]
        want = processor(torch.tensor([seen]), logits[row : row + 1].clone())
        assert torch.equal(got[row : row + 1], want)


def test_greedy_choice_is_the_first_maximum_like_torch():
    logits = torch.randn(4, 49280)
    logits[1, [7, 300]] = 100.0  # a tie: the first wins, as with torch.argmax
    logits[2, :] = 0.0
    assert torch.equal(greedy_tokens(logits), logits.argmax(-1))
    assert greedy_tokens(logits)[1] == 7 and greedy_tokens(logits).dtype == torch.long
