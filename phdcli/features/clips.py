"""Clips and segments, in numbers: which clips a request needs, one video's table of
clip features, and segment features as the normalised mean of their clips.

Pure numpy. A segment is represented by ``clips_per_segment`` clips placed
inside it (``phdcli.media.segments.clip_starts``); a clip is named by its
start on a 0.1 ms grid (``TICKS_PER_S``), so that any segmentation, or the
coarse and fine passes of ``phdcli.ranking.rank``, ask for the same clip by
the same name and a clip is computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from phdcli.features.spec import FeatureSpec
from phdcli.media.segments import Segment, clip_starts

# progress(done, total) for clips; the CLI turns it into a bar.
ClipProgress = Callable[[int, int], None]

# Clip starts are cached on a 0.1 ms grid (and decoded at the grid point, so
# a cached clip is exactly the clip it stands for); frames are >= 1 ms apart.
TICKS_PER_S = 10_000


@dataclass
class SegmentFeatures:
    """Features of a video's segments and of the clips they were averaged from.

    segments: (n, D) float32, L2-normalised rows; clips: (c, D) float32,
    L2-normalised; clip_starts_s: (c,); clip_owner: (c,) segment index.
    The clip rows let ``phd suggest`` centre a GIF on a segment's best clip.
    """

    segments: np.ndarray
    clips: np.ndarray
    clip_starts_s: np.ndarray
    clip_owner: np.ndarray


@dataclass
class ClipTable:
    """Raw C3D features of one video's clips, one row per clip start.

    ticks: (c,) int64, ascending and unique (start * TICKS_PER_S); feats:
    (c, D) float32 as C3D gave them (not normalised, so that segment means
    are exact); int8: (c,) bool, rows computed by the int8 network.
    """

    ticks: np.ndarray
    feats: np.ndarray
    int8: np.ndarray

    def rows(self, ticks: np.ndarray, accept_int8: bool) -> np.ndarray:
        """Row index of each tick, -1 where there is none (or only an int8 one
        and int8 is not acceptable)."""
        if len(self.ticks) == 0:
            return np.full(len(ticks), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ticks, ticks), len(self.ticks) - 1)
        found = self.ticks[pos] == ticks
        if not accept_int8:
            found &= ~self.int8[pos]
        return np.where(found, pos, -1)

    def merged(self, new: ClipTable) -> ClipTable:
        """Rows of both; where both have a tick, ``new``'s row wins unless it is
        int8 and the old one is not (a float row is never replaced by int8)."""
        ticks = np.concatenate([self.ticks, new.ticks])
        feats = np.concatenate([self.feats, new.feats])
        int8 = np.concatenate([self.int8, new.int8])
        # Sort by tick, the preferred row of each tick first: float before
        # int8, then the newer before the older.
        order = np.lexsort((-np.arange(len(ticks)), int8, ticks))
        ticks, feats, int8 = ticks[order], feats[order], int8[order]
        first = np.ones(len(ticks), bool)
        first[1:] = ticks[1:] != ticks[:-1]
        return ClipTable(ticks[first], feats[first], int8[first])


def plan_clips(
    spec: FeatureSpec, duration_s: float, segments: Sequence[Segment],
    full: Sequence[bool] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(owner segment, start tick) of every clip a request needs, sorted by start.

    ``full`` (one flag per segment; None: all) says which segments get the
    full spec (``clips_per_segment`` clips); the others get one clip, the
    first of theirs, so that refining a segment later costs only its
    remaining clips.
    """
    if full is not None and len(full) != len(segments):
        raise ValueError(f"full has {len(full)} flags for {len(segments)} segments")
    owners: list[int] = []
    starts: list[float] = []
    for index, segment in enumerate(segments):
        mine = clip_starts(segment, duration_s, spec.clip_fps, spec.clips_per_segment,
                           spec.clip_frames)
        if full is not None and not full[index]:
            mine = mine[:1]
        owners.extend([index] * len(mine))
        starts.extend(mine)
    ticks = np.round(np.asarray(starts, dtype=np.float64) * TICKS_PER_S).astype(np.int64)
    order = np.argsort(ticks, kind="stable")
    return np.asarray(owners, dtype=np.int64)[order], ticks[order]


def assemble(
    table: ClipTable, rows: np.ndarray, owners: np.ndarray, ticks: np.ndarray, n_segments: int
) -> SegmentFeatures:
    """Segment means of raw clip features, L2-normalised (the request's clips only)."""
    clip_feats = table.feats[rows]
    return SegmentFeatures(
        segments=pool_segments(clip_feats, owners, n_segments),
        clips=l2_normalise(clip_feats).astype(np.float32),
        clip_starts_s=ticks.astype(np.float64) / TICKS_PER_S,
        clip_owner=owners,
    )


def pool_segments(clip_feats: np.ndarray, owner: np.ndarray, n_segments: int) -> np.ndarray:
    """Segment features (n, D) float32: the L2-normalised mean of each segment's clip rows."""
    sums = np.zeros((n_segments, clip_feats.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, clip_feats)
    counts = np.bincount(owner, minlength=n_segments)
    return l2_normalise(sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)
