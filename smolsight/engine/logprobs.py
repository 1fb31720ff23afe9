"""Token log probabilities: what the model thought of each token it generated, in OpenAI's shape.

Which distribution: the model's own, the log-softmax of its raw logits, before `logit_bias`,
penalties, temperature and top-k/top-p (as vLLM reports by default). So the numbers say what
the model believes, whatever the sampling settings; the chosen token is the top alternative
under plain greedy decoding, and need not be when a penalty, a bias or sampling chose another.

Which tokens: those the answer's text was made from. The engine may trim the generated text
(a stop string, a loop cut, sentence de-duplication, whitespace at the ends); the entries are
the generated tokens up to where the answer's raw text ends (the end-of-utterance token and
tokens after a stop string's start are left out; a token that straddles the stop string's start
is kept), so their `bytes` joined and decoded are the raw text the answer was cleaned from,
and equal the answer when nothing was trimmed. Sentences that de-duplication dropped keep
their tokens' entries: the tokens were generated. In a stream, a token's entry goes out with
the chunk that settles its text (returned or dropped), never before the text it belongs to.

`token` is the token's text; a token holding part of a multi-byte character reads as U+FFFD
there, and `bytes` (its exact UTF-8 bytes) joins with its neighbours into the character. A
special token (SmolVLM2's `<row_1_col_2>` tile markers, say), which the answer's text leaves out
as the tokenizer's `skip_special_tokens` does, shows its name with `bytes` null (OpenAI's "no
bytes representation"), so the entries' bytes still join into the raw text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TopLogprob:
    token: str
    bytes: list[int] | None  # None for a special token, which the answer's text leaves out
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log probability and the likeliest alternatives at its position."""

    token: str
    bytes: list[int] | None  # None for a special token, which the answer's text leaves out
    logprob: float
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class Pick:
    """What the token chooser saw for one row at one step, as ids and numbers (texts come later,
    only for the tokens that are handed out)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, log probability), likeliest first


def picks(log_probs: torch.Tensor, tokens: torch.Tensor, k: int) -> list[Pick]:
    """log_probs [B, V], tokens [B] -> one `Pick` per row with the k likeliest alternatives."""
    chosen = log_probs.gather(1, tokens[:, None]).squeeze(1).tolist()
    top = log_probs.topk(k) if k else None
    ids = top.indices.tolist() if top is not None else [[] for _ in chosen]
    values = top.values.tolist() if top is not None else [[] for _ in chosen]
    return [Pick(token, logprob, tuple(zip(i, v, strict=True)))
            for token, logprob, i, v in zip(tokens.tolist(), chosen, ids, values, strict=True)]  # fmt: skip


class TokenTexts:
    """Each token id's text and exact bytes, looked up once (byte-level BPE tokens map their
    characters back to bytes; other tokens are decoded; special tokens have no bytes)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @functools.cached_property
    def byte_of(self) -> dict[str, int]:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        return {char: byte for byte, char in bytes_to_unicode().items()}

    @functools.cached_property
    def special(self) -> set[int]:
        """The ids that decoding with `skip_special_tokens` leaves out."""
        added = getattr(self.tokenizer, "added_tokens_decoder", {})
        return {token for token, info in added.items() if getattr(info, "special", False)} | set(self.tokenizer.all_special_ids)

    def entry(self, pick: Pick) -> TokenLogprob:
        top = [TopLogprob(*self.text(token), logprob) for token, logprob in pick.top]
        return TokenLogprob(*self.text(pick.token), pick.logprob, top)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per engine, kept for its life
    def text(self, token: int) -> tuple[str, list[int] | None]:
        """(text, UTF-8 bytes) of one token; a special token's name and None."""
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if token in self.special:
            return piece, None
        if piece is not None and all(char in self.byte_of for char in piece):
            data = bytes(self.byte_of[char] for char in piece)
        else:
            data = self.tokenizer.decode([token]).encode()
        return data.decode("utf-8", errors="replace"), list(data)


class LogprobTrail:
    """One row's picks with the raw-text span of each token, handed out as the text settles."""

    def __init__(self) -> None:
        self.picks: list[tuple[Pick, int, int]] = []  # (pick, start, end) in the row's raw text
        self.sent = 0
        self.end: int | None = None  # where the answer's raw text ends, once known
        self.entries: list[TokenLogprob] = []  # every entry handed out: the answer's, once the row is done

    def add(self, pick: Pick, start: int, end: int) -> None:
        self.picks.append((pick, start, end))

    def cut(self, end: int) -> None:
        """The answer's raw text ends at character `end`: tokens starting at or after it are not the answer's."""
        self.end = end

    def release(self, settled: int | None, texts: TokenTexts) -> list[TokenLogprob]:
        """Entries not handed out yet whose text ends within the first `settled` raw characters;
        with `settled` None (the row is done), every remaining one that begins before the cut."""
        if settled is None:
            kept = [p for p, start, _ in self.picks[self.sent :] if self.end is None or start < self.end]
            self.sent = len(self.picks)
        else:
            ready = self.sent
            while ready < len(self.picks) and self.picks[ready][2] <= settled:
                ready += 1
            kept = [p for p, _, _ in self.picks[self.sent : ready]]
            self.sent = ready
        entries = [texts.entry(pick) for pick in kept]
        self.entries += entries
        return entries
