"""The KV cache of continuous batching: one slot per running row, rows joining and leaving between steps.

Every layer keeps one preallocated buffer `[max rows, kv heads, columns, head dim]` for keys and one
for values. Rows are left-padded so that all of them end at the same column: a decode step writes
every row's new token at column `end` and attends over the window `[start, end]`. So:

- a row joins by copying its prefilled keys and values into the next free slot, ending at `end`
  (the window widens to the left if its prompt is longer than the rows already there);
- a row leaves by moving the last slot's row into its place (one row's copy, not the batch's);
- the window narrows from the left once the longest row has left, so attention stops paying for
  padding nobody needs;
- columns grow in blocks of 256 (`cache_length`), never once per token.

The attention mask lives in the same layout (`[max rows, columns]`, 1 where a row has a token), and
each layer answers `get_seq_length` with the window's width, which is what transformers' mask code
reads. Layers are transformers' own `DynamicLayer` otherwise, so any forward that calls
`cache.layers[i].update(keys, values)` works with it.
"""

from __future__ import annotations

import torch

from .fastpaths import cache_length


class Window:
    """The columns in use, shared by every layer: rows occupy `[start, end)`, the next token goes at `end`."""

    def __init__(self) -> None:
        self.rows = 0
        self.start = 0
        self.end = 0


def slot_layer_class():
    """`SlotLayer`, defined on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """One decoder layer's keys and values for the rows in slots `[0, window.rows)`."""

        def __init__(self, window: Window) -> None:
            super().__init__()
            self.window = window
            self.key_buffer: torch.Tensor | None = None
            self.value_buffer: torch.Tensor | None = None

        def get_seq_length(self) -> int:
            return self.window.end - self.window.start

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            """A decode step's one new column for every row: written at `end`, the window returned."""
            w = self.window
            self.key_buffer[: w.rows, :, w.end] = key_states[:, :, -1]
            self.value_buffer[: w.rows, :, w.end] = value_states[:, :, -1]
            self.keys = self.key_buffer[: w.rows, :, w.start : w.end + 1]
            self.values = self.value_buffer[: w.rows, :, w.start : w.end + 1]
            return self.keys, self.values

    return SlotLayer


class SlotCache:
    """A transformers cache for continuous batching (see the module docstring), with its attention mask."""

    def __init__(self, config, max_rows: int) -> None:
        from transformers import DynamicCache

        self.max_rows = max_rows
        self.window = Window()
        self.cache = DynamicCache(config=config)
        self.cache.layers = [slot_layer_class()(self.window) for _ in self.cache.layers]
        self.mask: torch.Tensor | None = None  # [max rows, columns] long: 1 where a slot's row has a token

    @property
    def rows(self) -> int:
        return self.window.rows

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def join(self, prefilled) -> None:
        """Copy a row's prefill cache (a transformers cache of a batch of one) into the next free slot."""
        w = self.window
        slot, length = w.rows, prefilled.layers[0].keys.shape[-2]
        if slot >= self.max_rows:
            raise ValueError(f"all {self.max_rows} slots are taken")
        if slot == 0:
            w.start = w.end = 0
            self.reserve(length + 1, prefilled)
            w.start = w.end = length
        elif w.end < length:  # longer than the columns left of the window's end: move the window right
            self.reserve(length + 1, prefilled)
            self.shift(length - w.end)
        self.reserve(w.end + 1, prefilled)
        w.start = min(w.start, w.end - length)
        for layer, source in zip(self.cache.layers, prefilled.layers, strict=True):
            layer.key_buffer[slot, :, w.end - length : w.end] = source.keys[0]
            layer.value_buffer[slot, :, w.end - length : w.end] = source.values[0]
        self.mask[slot] = 0
        self.mask[slot, w.end - length : w.end] = 1
        w.rows += 1

    def step_mask(self) -> torch.Tensor:
        """The attention mask for the next decode step, which adds one column to every row."""
        w = self.window
        self.reserve(w.end + 1)
        self.mask[: w.rows, w.end] = 1
        return self.mask[: w.rows, w.start : w.end + 1]

    def advance(self) -> None:
        """After a decode step: every row holds one more token."""
        self.window.end += 1

    def remove(self, slot: int) -> None:
        """Free `slot`; the row in the last slot moves into it."""
        w = self.window
        last = w.rows - 1
        if slot != last:
            for layer in self.cache.layers:
                layer.key_buffer[slot, :, w.start : w.end] = layer.key_buffer[last, :, w.start : w.end]
                layer.value_buffer[slot, :, w.start : w.end] = layer.value_buffer[last, :, w.start : w.end]
            self.mask[slot] = self.mask[last]
        w.rows -= 1
        if w.rows:  # no attention over columns that only rows now gone had used: start at the first one a row holds
            w.start += int(self.mask[: w.rows, w.start : w.end].any(dim=0).int().argmax())

    def reserve(self, columns: int, like=None) -> None:
        """Make room for column index `columns - 1`: allocate (shaped `like` a prefill cache), move the
        window back to column 0 when that leaves room, or else grow by blocks."""
        w = self.window
        if self.mask is None:
            self.allocate(cache_length(columns), like)
        elif columns > self.columns:
            if w.start > 0 and columns - w.start <= self.columns // 2:
                self.shift(-w.start)
            else:
                self.grow(cache_length(columns + (w.end - w.start) // 2))

    def allocate(self, size: int, like) -> None:
        for layer, source in zip(self.cache.layers, like.layers, strict=True):
            heads, dim = source.keys.shape[1], source.keys.shape[3]
            layer.key_buffer = source.keys.new_zeros(self.max_rows, heads, size, dim)
            layer.value_buffer = source.values.new_zeros(self.max_rows, heads, size, dim)
        self.mask = torch.zeros(self.max_rows, size, dtype=torch.long, device=like.layers[0].keys.device)

    def grow(self, size: int) -> None:
        """Bigger buffers, the window's columns copied to the same place."""
        w = self.window
        for layer in self.cache.layers:
            for name in ("key_buffer", "value_buffer"):
                old = getattr(layer, name)
                new = old.new_zeros(old.shape[0], old.shape[1], size, old.shape[3])
                new[:, :, w.start : w.end] = old[:, :, w.start : w.end]
                setattr(layer, name, new)
        mask = self.mask.new_zeros(self.max_rows, size)
        mask[:, w.start : w.end] = self.mask[:, w.start : w.end]
        self.mask = mask

    def shift(self, by: int) -> None:
        """Move the window's columns `by` places (right if positive); the caller made room."""
        w = self.window
        for layer in self.cache.layers:
            for buffer in (layer.key_buffer, layer.value_buffer):
                buffer[:, :, w.start + by : w.end + by] = buffer[:, :, w.start : w.end].clone()
        self.mask[:, w.start + by : w.end + by] = self.mask[:, w.start : w.end].clone()
        w.start += by
        w.end += by
        self.mask[:, : w.start] = 0  # columns left behind hold no one's tokens (the window may widen over them)
