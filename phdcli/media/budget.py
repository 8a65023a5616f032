"""The pixel budget: hostile files are refused from their headers, before a frame is decoded.

Pillow's MAX_IMAGE_PIXELS idea, for moving pictures. 36 MP holds 8K UHD
(33.2 MP); an 85-byte GIF declaring a 16000x16000 canvas (256 MP, 1 GB per
decoded frame) is refused from its header. A GIF decodes every frame on its
whole canvas: at most 60 full frames' worth by default (2.2 gigapixels: 4700
frames of 480x960). A video may hold 120000 (two hours of 4K at 60 fps).
``--max-megapixels`` scales all three.

The budget in force is set for a block of work with :func:`using_pixel_budget`
(decode threads included) and read by every open (``phdcli.media.probe``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from phdcli.errors import InputError

DEFAULT_MAX_MEGAPIXELS = 36.0
GIF_FRAMES_OF_BUDGET = 60
VIDEO_FRAMES_OF_BUDGET = 120_000


@dataclass(frozen=True)
class PixelBudget:
    max_frame_pixels: int = int(DEFAULT_MAX_MEGAPIXELS * 1e6)

    @classmethod
    def from_megapixels(cls, megapixels: float) -> PixelBudget:
        return cls(max_frame_pixels=int(megapixels * 1e6))

    def total_pixels(self, is_gif: bool) -> int:
        return self.max_frame_pixels * (GIF_FRAMES_OF_BUDGET if is_gif else VIDEO_FRAMES_OF_BUDGET)


_budget = PixelBudget()


def current_budget() -> PixelBudget:
    """The budget every open checks now."""
    return _budget


@contextmanager
def using_pixel_budget(budget: PixelBudget) -> Iterator[None]:
    """Every open inside the body (decode threads included) checks ``budget``."""
    global _budget
    previous, _budget = _budget, budget
    try:
        yield
    finally:
        _budget = previous


def check_pixels(path: Path, width: int, height: int, n_frames: int | None,
                 budget: PixelBudget, is_gif: bool) -> None:
    """Raise a one-line InputError when a frame, or all frames together, break ``budget``."""
    area = width * height
    hint = "--max-megapixels raises it"
    if area > budget.max_frame_pixels:
        what = "GIF canvas" if is_gif else "frame size"
        raise InputError(
            f"{path}: {what} {width}x{height} ({area / 1e6:.3g} megapixels) is over the "
            f"pixel budget of {budget.max_frame_pixels / 1e6:g} megapixels ({hint})"
        )
    total = area * (n_frames or 0)
    if total > budget.total_pixels(is_gif):
        raise InputError(
            f"{path}: {n_frames} frames of {width}x{height} ({total / 1e9:.1f} gigapixels) are "
            f"over the pixel budget of {budget.total_pixels(is_gif) / 1e9:.1f} gigapixels "
            f"({hint})"
        )
