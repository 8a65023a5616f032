"""What ``phd suggest`` is asked to do: one frozen config, checked before any work.

Every number is finite and in a sane range, or a one-line UsageError: the
CLI (and any library caller) learns of a bad flag before a frame is decoded.
The ranges are those the later stages can honour (a GIF holds 1 to 100
frames a second, ffmpeg scales to at least 16 px, a --gif-length holds one
frame), so a value that passes here never fails after C3D. The ``--name``
template is parsed here too (``phdcli.suggest.names``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from phdcli import defaults
from phdcli.cluster.address import check_engine_options
from phdcli.errors import UsageError
from phdcli.media.budget import DEFAULT_MAX_MEGAPIXELS
from phdcli.media.gifs import GifOptions
from phdcli.sources.options import DownloadOptions
from phdcli.suggest.names import NameTemplate

SEGMENT_MODES = ("fixed", "shots")
# Shorter segments hold less than two 16-frame clips (and 1e-9 s segments
# would be billions of them); GIF delays are centiseconds, so more than 100
# frames a second is only a bigger file.
MIN_SEGMENT_S = 1.0
MAX_FPS = 100.0
MIN_FPS = 1.0  # fewer frames than one a second is a slide show, not a GIF
MIN_WIDTH, MAX_WIDTH = 16, 8192  # (ffmpeg's scaler and palette need a few pixels)
MAX_K = 10_000
MAX_SECONDS = 86_400.0  # --length, --gif-length, --min-gap: a day is past any use
MAX_MEGAPIXELS = 1000.0  # a 31623 x 31623 frame; int(1e308 * 1e6) is an OverflowError
MAX_HEATMAP_WEIGHT = 1000.0  # the replay term is in [0, 1]; scores stay far inside 1e9


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
    engine: str = "local"  # where the features are computed: here, or "ray" (a cluster)
    address: str | None = None  # the Ray cluster to join (None: RAY_ADDRESS, else start one)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise UsageError(f"-k must be from 1 to {MAX_K}, got {self.k}")
        if self.segments not in SEGMENT_MODES:
            raise UsageError(f"--segments must be one of {', '.join(SEGMENT_MODES)}")
        _seconds("--length", self.length_s, MIN_SEGMENT_S)
        if not MIN_FPS <= self.gif.fps <= MAX_FPS:  # False for NaN too
            raise UsageError(f"--fps must be from {MIN_FPS:g} to {MAX_FPS:g}, got {self.gif.fps}")
        if self.gif_length_s is not None:  # a GIF holds at least one frame
            _seconds("--gif-length", self.gif_length_s, 1.0 / self.gif.fps,
                     f" (one frame at --fps {self.gif.fps:g})")
        if self.min_gap_s is not None:
            _seconds("--min-gap", self.min_gap_s, 0.0)
        if not MIN_WIDTH <= self.gif.width <= MAX_WIDTH:
            raise UsageError(f"--width must be from {MIN_WIDTH} to {MAX_WIDTH} px, "
                             f"got {self.gif.width}")
        if not 0 < self.max_megapixels <= MAX_MEGAPIXELS:
            raise UsageError(f"--max-megapixels must be positive and at most "
                             f"{MAX_MEGAPIXELS:g}, got {self.max_megapixels}")
        if not abs(self.heatmap_weight) <= MAX_HEATMAP_WEIGHT:
            raise UsageError(f"--heatmap-weight must be from -{MAX_HEATMAP_WEIGHT:g} to "
                             f"{MAX_HEATMAP_WEIGHT:g}, got {self.heatmap_weight}")
        if self.report and self.dry_run:
            raise UsageError("--report shows the written GIFs: it cannot go with --dry-run")
        check_engine_options(self.engine, self.address)
        _ = self.name  # parsed now: a bad template is a usage error before any work

    @cached_property
    def name(self) -> NameTemplate:
        """``--name``, parsed (``phdcli.suggest.names``)."""
        return NameTemplate.parse(self.name_template)

    @property
    def gap_s(self) -> float:
        """The least time between two picks (``--min-gap``; one segment by default)."""
        return self.length_s if self.min_gap_s is None else self.min_gap_s

    @property
    def offline(self) -> bool:
        """``--offline``: no download at all, URLs (``download.offline``) and C3D weights."""
        return self.download.offline


def _seconds(flag: str, value: float, least: float, why: str = "") -> None:
    """A number of seconds from ``least`` to MAX_SECONDS (NaN and inf never are)."""
    if not least <= value <= MAX_SECONDS:
        raise UsageError(f"{flag} must be from {least:g}{why} to {MAX_SECONDS:g} seconds, "
                         f"got {value}")
