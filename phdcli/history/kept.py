"""Kept spans: which of a video's segments the user already kept, and a span's feature.

Pure numpy. A segment and a kept span are "the same span" when they share
at least half of the shorter of the two; ``phd suggest`` leaves such
segments out (unless ``--include-kept``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from phdcli.features.clips import l2_normalise

if TYPE_CHECKING:
    from phdcli.features.clips import SegmentFeatures
    from phdcli.history.records import Provenance

# A segment and a kept span are "the same span" when they share at least
# this fraction of the shorter one.
SAME_SPAN_OVERLAP = 0.5


def span_feature(feats: SegmentFeatures, segment: int, start_s: float, end_s: float,
                 segment_bounds_s: tuple[float, float], clip_s: float) -> np.ndarray:
    """(D,) feature of [start_s, end_s] from the segment and clip rows of the cache.

    The whole segment gives its own row (what the ranking used); a shorter
    ``--gif-length`` window gives the mean of the clips that lie inside it
    (the clip nearest its centre when none does).
    """
    if abs(start_s - segment_bounds_s[0]) < 1e-3 and abs(end_s - segment_bounds_s[1]) < 1e-3:
        return np.asarray(feats.segments[segment], dtype=np.float32)
    clip_starts = np.asarray(feats.clip_starts_s, dtype=np.float64)
    inside = (clip_starts >= start_s - 1e-3) & (clip_starts + clip_s <= end_s + 1e-3)
    if not inside.any():
        centre = (start_s + end_s) / 2
        inside = np.zeros(len(clip_starts), dtype=bool)
        inside[int(np.argmin(np.abs(clip_starts + clip_s / 2 - centre)))] = True
    return l2_normalise(feats.clips[inside].mean(axis=0)).astype(np.float32)


def kept_spans(provenances: Iterable[Provenance | None], video_sha256: str,
               video: str) -> list[tuple[float, float]]:
    """Spans already kept from this video (same content, or the same URL)."""
    same_url = "://" in video  # a URL downloaded again may differ in bytes, not in content
    return sorted(
        (p.start_s, p.end_s) for p in provenances
        if p is not None and (p.video_sha256 == video_sha256 or (same_url and p.video == video))
    )


def same_span(starts_s: Sequence[float] | np.ndarray, ends_s: Sequence[float] | np.ndarray,
              spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """(n,) bool: the segment is one of ``spans`` (overlap >= half the shorter)."""
    starts = np.asarray(starts_s, dtype=np.float64)[:, None]
    ends = np.asarray(ends_s, dtype=np.float64)[:, None]
    if not spans:
        return np.zeros(len(starts), dtype=bool)
    kept = np.asarray(spans, dtype=np.float64)
    overlap = np.clip(np.minimum(ends, kept[:, 1]) - np.maximum(starts, kept[:, 0]), 0.0, None)
    shorter = np.minimum(ends - starts, kept[:, 1] - kept[:, 0])
    return (overlap >= SAME_SPAN_OVERLAP * shorter - 1e-9).any(axis=1)
