"""The vision encoder (SigLIP) and the pixel-shuffle connector run by torch: the model's own modules,
fed the way its `get_image_features` feeds them, on CPU a few tiles at a time. `VisionTower` and
`real_tiles` are also what `openvino_vision` converts and feeds."""

from __future__ import annotations

import torch
from torch import nn

MMAP_THRESHOLD = 32 << 20  # glibc's largest: every bigger allocation is mapped afresh and faulted in page by page


class VisionTower(nn.Module):
    """SigLIP and the connector: what the model's `get_image_features` computes once padding images
    are dropped (`real_tiles`), with the inputs that OpenVINO's traced graph keeps."""

    def __init__(self, vision_model: nn.Module, connector: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.connector = connector

    def forward(self, pixel_values: torch.Tensor, patch_attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_model(pixel_values=pixel_values, patch_attention_mask=patch_attention_mask).last_hidden_state
        return self.connector(hidden)  # [N, tokens per tile, text hidden]


def image_tiles(pixels: torch.Tensor, pixel_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tiles [N, 3, S, S] of a processor's pixel values [batch, images, 3, S, S] without the
    all-zero images that pad a batch, with their pixel masks [N, S, S] (None when there are none)."""
    tiles = pixels.flatten(0, 1)  # [batch * images, 3, S, S]
    real = (tiles != 0).flatten(1).any(dim=1)
    real[0] |= ~real.any()  # no image at all: keep one, as transformers does
    return tiles[real], None if pixel_mask is None else pixel_mask.flatten(0, 1)[real]


def real_tiles(pixels: torch.Tensor, pixel_mask: torch.Tensor | None, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What transformers' `get_image_features` gives the encoder: the tiles [N, 3, S, S] (`image_tiles`)
    and for each tile which patches hold pixels [N, S/p, S/p] (a tile that is only partly image attends
    to its image patches only)."""
    tiles, mask = image_tiles(pixels, pixel_mask)
    if mask is None:
        mask = torch.ones(tiles.shape[0], tiles.shape[2], tiles.shape[3], dtype=torch.bool, device=tiles.device)
    patches = mask.unfold(1, patch_size, patch_size).unfold(2, patch_size, patch_size)
    return tiles, patches.sum(dim=(-1, -2)) > 0


def tiles_per_group(vision_config, dtype: torch.dtype) -> int:
    """How many tiles a CPU encodes at once: as many as keep the widest activation (a tile's patches
    times the MLP's width) under `MMAP_THRESHOLD`. Above it, glibc maps each such tensor afresh,
    and faulting its pages in cost a 13-tile call 0.6-1.8 s of system time, up to a third of the
    call, on the 2-core Xeon (docs/performance.md)."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    widest = max(vision_config.intermediate_size, vision_config.hidden_size)
    return max(1, MMAP_THRESHOLD // (patches * widest * dtype.itemsize))


class TorchVision:
    """The model's own vision encoder and connector, run by torch; on CPU in groups of tiles
    (`tiles_per_group`)."""

    name = "torch"

    def __init__(self, model, device: str) -> None:
        self.model = model
        self.device = device
        self.tower = VisionTower(model.model.vision_model, model.model.connector)
        self.group = tiles_per_group(model.config.vision_config, model.dtype) if device.startswith("cpu") else None

    def __call__(self, pixels: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
        """Features of every real tile, [tiles * tokens per tile, hidden]."""
        mask = None if pixel_mask is None else pixel_mask.to(self.device)
        tiles, masks = real_tiles(pixels.to(self.device), mask, self.model.config.vision_config.patch_size)
        size = self.group or len(tiles)
        tiles = tiles.to(self.model.dtype)
        groups = zip(tiles.split(size), masks.split(size))
        return torch.cat([self.tower(group, group_masks).flatten(0, 1) for group, group_masks in groups])
