"""The frame-difference gate: which frames changed enough to be worth a model's look.

A frame is compared, as a small grey thumbnail, with the last frame that passed (the
reference), so slow drift still adds up to a change. Frames that did not change are not sent
to the model for on-change rules; scheduled questions about them are asked about the reference
itself, whose pixels are then identical to a frame already seen, so the engine's vision cache
answers for the vision encoder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMBNAIL = (64, 36)


def thumbnail(image: Image.Image) -> np.ndarray:
    """Grey levels 0..1 of a small copy: cheap to compare, blind to sensor noise."""
    return np.asarray(image.convert("L").resize(THUMBNAIL, Image.Resampling.BOX), dtype=np.float32) / 255.0


class ChangeGate:
    """Keeps the reference frame and says whether a new frame differs from it by `threshold`
    or more (mean absolute difference of grey levels, 0..1)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.reference: Image.Image | None = None
        self.reference_thumb: np.ndarray | None = None
        self.last_difference = 0.0

    def check(self, image: Image.Image) -> bool:
        """True (and `image` becomes the reference) when the frame changed."""
        thumb = thumbnail(image)
        if self.reference_thumb is not None and thumb.shape == self.reference_thumb.shape:
            self.last_difference = float(np.abs(thumb - self.reference_thumb).mean())
            if self.last_difference < self.threshold:
                return False
        else:
            self.last_difference = 1.0
        self.reference, self.reference_thumb = image, thumb
        return True
