"""Labels and spans from PHD^2 annotations: pure arithmetic on [start, end] seconds.

A training segment is labelled against the user's GIFs on the video
(``segment_labels``); a history video contributes the union of the user's
GIFs on it (``history_spans``, the paper's G). Which history videos count is
``history_videos``: all of them by default, as in the paper, or the most
recent ``cap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phdcli.training.annotations import User, UserVideo

POSITIVE, NEGATIVE, AMBIGUOUS = 1, 0, -1
LABEL_RULE = (
    "positive: more than 50% of the segment lies in the union of the user's GIFs on the video, "
    "or more than 50% of one GIF lies in the segment; negative: overlaps no GIF; "
    "otherwise ambiguous (-1, left out of training pairs)"
)
# Under 0.1 s is a GIF that lies past the end of the file we have.
MIN_SPAN_S = 0.1


def merge_spans(spans: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Union of [start, end] intervals, sorted and non-overlapping; (g, 2) -> (u, 2)."""
    spans = np.asarray(spans, dtype=float).reshape(-1, 2)
    spans = spans[spans[:, 1] > spans[:, 0]]
    if len(spans) == 0:
        return spans
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.asarray(merged)


def _overlap(bounds: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(n, g) overlap in seconds between each segment and each span."""
    lo = np.maximum(bounds[:, None, 0], spans[None, :, 0])
    hi = np.minimum(bounds[:, None, 1], spans[None, :, 1])
    return np.clip(hi - lo, 0.0, None)


def segment_labels(bounds_s: np.ndarray, gifs_s: np.ndarray) -> np.ndarray:
    """Labels (n,) int8 of segments against the user's GIFs on the video; see LABEL_RULE.

    Why both fractions: a 3 s GIF inside a 15 s shot covers 20% of the shot,
    yet the shot is what the user picked; a long GIF over several short
    shots makes each of them mostly GIF.
    """
    bounds = np.asarray(bounds_s, dtype=float).reshape(-1, 2)
    gifs = np.asarray(gifs_s, dtype=float).reshape(-1, 2)
    labels = np.full(len(bounds), NEGATIVE, dtype=np.int8)
    if len(gifs) == 0 or len(bounds) == 0:
        return labels
    union = merge_spans(gifs)
    seg_len = np.maximum(bounds[:, 1] - bounds[:, 0], 1e-9)
    in_union = _overlap(bounds, union).sum(axis=1) / seg_len
    per_gif = _overlap(bounds, gifs)
    gif_share = per_gif / np.maximum(gifs[:, 1] - gifs[:, 0], 1e-9)[None, :]
    touches = per_gif.max(axis=1) > 0
    positive = (in_union > 0.5) | (gif_share > 0.5).any(axis=1)
    labels[touches] = AMBIGUOUS
    labels[positive] = POSITIVE
    return labels


def has_pairs(labels: np.ndarray) -> bool:
    """Whether the labels hold both a positive and a negative segment (a training pair)."""
    return bool((labels == POSITIVE).any() and (labels == NEGATIVE).any())


def gif_array(video: UserVideo) -> np.ndarray:
    """(g, 2) [start, end] of a user's GIFs on a video."""
    return np.array([(g.start_s, g.end_s) for g in video.gifs], dtype=float).reshape(-1, 2)


def history_spans(gifs: UserVideo | np.ndarray, duration_s: float) -> np.ndarray:
    """The union of a history video's GIFs, clipped to the file's duration; (u, 2)."""
    raw = gif_array(gifs) if isinstance(gifs, UserVideo) else np.asarray(gifs, float)
    clipped = np.clip(raw.reshape(-1, 2), 0.0, duration_s)
    return merge_spans(clipped[clipped[:, 1] - clipped[:, 0] >= MIN_SPAN_S])


def history_videos(user: User, cap: int | None = None) -> list[UserVideo]:
    """The user's history videos: all of them (``cap`` None, the paper's G), or the first ``cap``.

    PHD^2 files carry no timestamps; their rows are newest first (every
    user's is_last video comes first), and the annotations keep file order,
    so the first ``cap`` history videos are the most recent.
    """
    return list(user.history) if cap is None else user.history[: max(cap, 0)]
