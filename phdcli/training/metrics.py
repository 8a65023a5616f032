"""The paper's three metrics (mAP, nMSD, Recall@5) for one video, in numpy.

The yardstick (docs/method.md, paper section 5) works on a fine time grid
(10 Hz) where every grid point takes its segment's score. All grid points of
one segment therefore tie, and every metric below depends on the grid only
through per-segment counts. So the functions take per-segment arrays:

- ``scores`` (n,): one score per segment,
- ``n_points`` (n,): grid points in the segment,
- ``n_pos`` (n,): grid points of the segment inside the ground truth,

which gives exactly the grid-level numbers at a fraction of the cost (438
users x 10 seeds evaluate in about a second). Passing ``n_points = 1`` and
0/1 ``n_pos`` turns them into plain per-item metrics.

Ties are deterministic:

- AP: tied items form one threshold step (as in sklearn's
  ``precision_recall_curve``, which the Video2GIF evaluation code uses), so
  the order inside a tie never helps or hurts.
- Recall@k: ties are broken by the earlier segment (lower index).
- nMSD: counts every grid point scoring at or above the threshold, so a tie
  at the threshold is counted in full.

All metrics return fractions in [0, 1]; the evaluation reports percent.
"""

from __future__ import annotations

import math

import numpy as np

GRID_HZ = 10.0


def grid_size(duration_s: float, hz: float = GRID_HZ) -> int:
    """Number of grid points ``i / hz`` (i = 0, 1, ...) inside ``[0, duration_s)``."""
    # The epsilon keeps 85.0 s at 850 points despite binary fractions.
    return max(1, math.ceil(duration_s * hz - 1e-6))


def segment_point_ranges(bounds_s: np.ndarray, n_grid: int, hz: float = GRID_HZ) -> np.ndarray:
    """Grid index range ``[a, b)`` of each segment; (n, 2) int.

    Segments must be contiguous from 0 (as fixed segmentation produces); a
    grid point at ``t`` belongs to the segment with ``start <= t < end`` and
    the last segment takes every point up to the end of the grid.
    """
    starts = np.ceil(np.asarray(bounds_s, dtype=float)[:, 0] * hz - 1e-6).astype(np.int64)
    starts = np.clip(starts, 0, n_grid)
    starts[0] = 0
    ends = np.r_[starts[1:], n_grid]
    return np.stack([starts, ends], axis=1)


def gif_point_ranges(gifs_s: np.ndarray, n_grid: int, hz: float = GRID_HZ) -> np.ndarray:
    """Grid index range ``[a, b)`` of each GIF ``(start_s, end_s)``; (m, 2) int.

    Like the Video2GIF code (``y[int(start):int(end)] = 1`` on frames) the
    bounds are floored, clipped to the video, and a GIF that starts inside
    the video keeps at least one point. A GIF starting after the video's end
    gets an empty range (callers drop it).
    """
    gifs_s = np.asarray(gifs_s, dtype=float).reshape(-1, 2)
    a = np.floor(gifs_s[:, 0] * hz + 1e-6).astype(np.int64)
    b = np.floor(gifs_s[:, 1] * hz + 1e-6).astype(np.int64)
    a = np.clip(a, 0, n_grid)
    b = np.clip(np.maximum(b, a + 1), 0, n_grid)
    return np.stack([a, b], axis=1)


def overlap_counts(ranges: np.ndarray, seg_ranges: np.ndarray) -> np.ndarray:
    """Points shared by each range and each segment; (m, n) int."""
    lo = np.maximum(ranges[:, None, 0], seg_ranges[None, :, 0])
    hi = np.minimum(ranges[:, None, 1], seg_ranges[None, :, 1])
    return np.maximum(hi - lo, 0)


def union_counts(ranges: np.ndarray, seg_ranges: np.ndarray, n_grid: int) -> np.ndarray:
    """Points of each segment inside the union of ``ranges``; (n,) int."""
    mask = np.zeros(n_grid + 1, dtype=np.int64)
    # Difference array: +1 at each start, -1 at each end, then cumsum > 0.
    np.add.at(mask, ranges[:, 0], 1)
    np.add.at(mask, ranges[:, 1], -1)
    inside = np.cumsum(mask[:-1]) > 0
    csum = np.r_[0, np.cumsum(inside)]
    return csum[seg_ranges[:, 1]] - csum[seg_ranges[:, 0]]


def _ranked(scores: np.ndarray) -> np.ndarray:
    # Stable sort on -score: best first, ties by lower index.
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def average_precision(
    scores: np.ndarray, n_pos: np.ndarray, n_points: np.ndarray | None = None
) -> float:
    """AP with interpolated precision at every recall change (Video2GIF).

    Thresholds are the distinct scores, best first; at each threshold the
    precision is (positive points scoring >= it) / (points scoring >= it),
    interpolated as the best precision at this or any lower threshold; AP is
    the plain mean of the interpolated precision over the thresholds where
    recall grows. Raises ValueError if there is no positive point.
    """
    scores = np.asarray(scores, dtype=float)
    n_pos = np.asarray(n_pos, dtype=float)
    n_points = np.ones_like(n_pos) if n_points is None else np.asarray(n_points, dtype=float)
    if n_pos.sum() <= 0:
        raise ValueError("average precision needs at least one positive point")
    order = _ranked(scores)
    s = scores[order]
    # Last item of each tie group: the only places a threshold can sit.
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]
    tp = np.cumsum(n_pos[order])[last]
    seen = np.cumsum(n_points[order])[last]
    precision = tp / np.maximum(seen, 1.0)
    interpolated = np.maximum.accumulate(precision[::-1])[::-1]
    recall_grows = np.diff(np.r_[0.0, tp]) > 0
    return float(interpolated[recall_grows].mean())


def normalized_msd(scores: np.ndarray, n_points: np.ndarray, gif_counts: np.ndarray) -> float:
    """Mean nMSD over a video's GIFs (lower is better).

    ``gif_counts`` (m, n): each GIF's grid points per segment. Per GIF the
    threshold is the 50th percentile of its own grid scores (numpy's default
    linear interpolation, as in the Video2GIF code), MSD the number of grid
    points scoring at or above it, and
    ``nMSD = (MSD - 0.5 |gif|) / (|video| - 0.5 |gif|)``.
    """
    scores = np.asarray(scores, dtype=float)
    n_points = np.asarray(n_points, dtype=np.int64)
    gif_counts = np.atleast_2d(np.asarray(gif_counts, dtype=np.int64))
    n_video = float(n_points.sum())
    values = []
    for counts in gif_counts:
        n_gif = float(counts.sum())
        if n_gif <= 0:
            continue
        threshold = np.percentile(np.repeat(scores, counts), 50)
        msd = float(n_points[scores >= threshold].sum())
        values.append((msd - 0.5 * n_gif) / (n_video - 0.5 * n_gif))
    if not values:
        raise ValueError("nMSD needs at least one GIF with grid points")
    return float(np.mean(values))


def recall_at_k(scores: np.ndarray, n_pos: np.ndarray, k: int = 5) -> float:
    """Fraction of positive points inside the k top-ranked segments.

    Ties are broken by the earlier segment; with fewer than k segments all
    of them count (recall 1).
    """
    n_pos = np.asarray(n_pos, dtype=float)
    total = n_pos.sum()
    if total <= 0:
        raise ValueError("recall needs at least one positive point")
    top = _ranked(scores)[:k]
    return float(n_pos[top].sum() / total)
