"""Where each pick's GIF lies: the segment or a --gif-length window, kept inside one shot.

The arithmetic is in :mod:`phdcli.suggest.picks`; this module gives it the
two things it asks for, a pick's span and the cuts around it. Cuts are
searched only around the spans being picked (decoding a few seconds each),
not over the whole video, unless ``--segments shots`` found them already.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from phdcli.media.cutmemo import cuts_between
from phdcli.suggest.picks import MIN_SHOT_S, FitShot, SpanOf, fit_in_shot, gif_window

if TYPE_CHECKING:
    from phdcli.features.spec import FeatureSpec
    from phdcli.media.probe import VideoInfo
    from phdcli.ranking.rank import Ranking

log = logging.getLogger("phd")


def span_of(ranking: Ranking, starts_s: np.ndarray, ends_s: np.ndarray, history: np.ndarray,
            spec: FeatureSpec, duration_s: float, gif_length_s: float | None) -> SpanOf:
    """A segment's GIF span: the segment, or ``gif_length_s`` around its best clip."""

    def span(idx: int) -> tuple[float, float]:
        bounds = (float(starts_s[idx]), float(ends_s[idx]))
        if gif_length_s is None:
            return bounds
        near = int(ranking.terms.nearest_index[idx])
        return gif_window(ranking.feats, history, idx, near, bounds, spec, gif_length_s,
                          duration_s)
    return span


def shot_fit(info: VideoInfo, cuts: list[float] | None, wanted_s: float,
             video_sha256: str | None = None) -> FitShot:
    """The one-shot rule for this video: a span kept inside one shot, or None
    when that shot is shorter than MIN_SHOT_S (or ``wanted_s``, when less).
    ``cuts``: the whole video's, when already known; else they are searched
    around each span, and remembered by ``video_sha256`` for a rerun."""
    min_s = min(MIN_SHOT_S, wanted_s)
    # The detector needs frames before a cut to see it (a 15-frame minimum
    # shot, a 2-frame window): search 20 frames beyond the span.
    margin_s = max(0.5, 20 / info.fps) if info.fps > 0 else 1.0

    def fit(start_s: float, end_s: float) -> tuple[float, float] | None:
        lo, hi = max(0.0, start_s - margin_s), min(info.duration_s, end_s + margin_s)
        found = (cuts_between(info.path, video_sha256, lo, hi) if cuts is None
                 else [c for c in cuts if lo < c < hi])
        fitted = fit_in_shot(start_s, end_s, found, min_s)
        if fitted is None:
            log.info("%s: %.1f-%.1f s left out: its shot is too short for a GIF",
                     info.path.name, start_s, end_s)
        elif fitted != (start_s, end_s):
            log.info("%s: %.1f-%.1f s kept inside one shot: %.1f-%.1f s", info.path.name,
                     start_s, end_s, *fitted)
        return fitted
    return fit
