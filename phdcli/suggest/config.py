"""What ``phd suggest`` is asked to do: one frozen config, checked before any work.

Every number is finite and in range, or a one-line UsageError: the CLI (and
any library caller) learns of a bad flag before a frame is decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from phdcli import defaults
from phdcli.errors import UsageError
from phdcli.media.budget import DEFAULT_MAX_MEGAPIXELS
from phdcli.media.gifs import GifOptions
from phdcli.sources.options import DownloadOptions

SEGMENT_MODES = ("fixed", "shots")
# Shorter segments hold less than two 16-frame clips (and 1e-9 s segments
# would be billions of them); GIF delays are centiseconds, so more than 100
# frames a second is only a bigger file.
MIN_SEGMENT_S = 1.0
MAX_FPS = 100.0


@dataclass(frozen=True)
class SuggestConfig:
    k: int = defaults.K
    out_dir: Path = Path(".")
    segments: str = "fixed"
    length_s: float = defaults.SEGMENT_LENGTH_S
    gif: GifOptions = GifOptions()
    gif_length_s: float | None = None  # None: the GIF is the whole segment
    min_gap_s: float | None = None  # between picks; None: one segment length; 0: no gap rule
    one_shot: bool = True  # keep each GIF inside one shot (no cut in a GIF)
    name_template: str = defaults.NAME_TEMPLATE
    download: DownloadOptions = DownloadOptions()
    device: str = "auto"
    precision: str = "auto"
    c3d_weights: Path | None = None
    model_path: Path | None = None
    user: str = "default"
    history_dir: Path | None = None
    force: bool = False
    dry_run: bool = False
    exhaustive: bool = False  # full C3D spec for every segment (no coarse-to-fine pass)
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    report: bool = False  # --report: an HTML contact sheet in out_dir
    include_kept: bool = False  # suggest spans the profile already kept
    heatmap_weight: float = 0.0  # hand-set, unmeasured (phdcli.sources.heatmap)
    command: str = ""  # for the report: how to run this again ("{input}" for the video)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"-k must be at least 1, got {self.k}")
        if self.segments not in SEGMENT_MODES:
            raise UsageError(f"--segments must be one of {', '.join(SEGMENT_MODES)}")
        if not (math.isfinite(self.length_s) and self.length_s >= MIN_SEGMENT_S):
            raise UsageError(f"--length must be a number of seconds from {MIN_SEGMENT_S:g}, "
                             f"got {self.length_s}")
        if self.gif_length_s is not None and not (
                math.isfinite(self.gif_length_s) and self.gif_length_s > 0):
            raise UsageError(f"--gif-length must be a positive number of seconds, "
                             f"got {self.gif_length_s}")
        if self.min_gap_s is not None and not (
                math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise UsageError(f"--min-gap must be a number of seconds from 0, got {self.min_gap_s}")
        if not (math.isfinite(self.gif.fps) and self.gif.fps <= MAX_FPS):
            raise UsageError(f"--fps must be at most {MAX_FPS:g}, got {self.gif.fps}")
        if not (math.isfinite(self.max_megapixels) and self.max_megapixels > 0):
            raise UsageError(f"--max-megapixels must be positive, got {self.max_megapixels}")
        if not math.isfinite(self.heatmap_weight):
            raise UsageError(f"--heatmap-weight must be a finite number, got {self.heatmap_weight}")
        if self.report and self.dry_run:
            raise UsageError("--report shows the written GIFs: it cannot go with --dry-run")

    @property
    def gap_s(self) -> float:
        """The least time between two picks (``--min-gap``; one segment by default)."""
        return self.length_s if self.min_gap_s is None else self.min_gap_s

    @property
    def offline(self) -> bool:
        """``--offline``: no download at all, URLs (``download.offline``) and C3D weights."""
        return self.download.offline
