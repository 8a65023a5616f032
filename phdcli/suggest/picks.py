"""From a ranking to the picks: each one's span, score and why it ranks there.

Pure numpy. A pick's span is its segment, or with ``--gif-length`` a window
of that length centred on the segment's best clip (the one closest to the
history GIF that made the segment rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phdcli.errors import InputError
from phdcli.features.clips import SegmentFeatures
from phdcli.features.spec import FeatureSpec
from phdcli.media.gifs import centred_window
from phdcli.ranking.rank import Ranking
from phdcli.suggest.results import Explanation, Suggestion


def check_finite_scores(item: str, total: np.ndarray) -> None:
    """The last line of defence: a NaN or Inf score never reaches the output."""
    bad = ~np.isfinite(total)
    if bad.any():
        raise InputError(
            f"{item}: the model gave {int(bad.sum())} of {len(bad)} segments a non-finite "
            "score (NaN or Inf: damaged weights, features or model file?); nothing written"
        )


def make_picks(
    ranking: Ranking, total: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray,
    history_names: Sequence[str], history: np.ndarray, spec: FeatureSpec,
    replay: np.ndarray | None, heat_term: np.ndarray,
    gif_length_s: float | None, duration_s: float,
) -> list[Suggestion]:
    """The ranked segments as Suggestions, rank 1 first, each with its Explanation.

    ``total`` is what the picks are scored by (the model's total plus the
    heatmap term ``heat_term``; ``replay`` is the heatmap's value per segment,
    None when the source has no heatmap).
    """
    terms, feats = ranking.terms, ranking.feats
    picks = []
    for rank, idx in enumerate(ranking.order.tolist(), start=1):
        near = int(terms.nearest_index[idx])
        start_s, end_s = float(starts_s[idx]), float(ends_s[idx])
        if gif_length_s is not None:
            start_s, end_s = gif_window(feats, history, idx, near, (start_s, end_s),
                                        spec, gif_length_s, duration_s)
        explanation = Explanation(
            fnn=float(terms.fnn[idx]),
            svm=float(terms.svm[idx]),
            time=float(terms.time[idx]),
            nearest_gif=history_names[near] if near >= 0 else None,
            similarity=float(terms.nearest_similarity[idx]) if near >= 0 else None,
            heatmap_value=None if replay is None else float(replay[idx]),
            heatmap_term=None if replay is None else float(heat_term[idx]),
        )
        picks.append(Suggestion(rank, start_s, end_s, float(starts_s[idx]), float(ends_s[idx]),
                                float(total[idx]), explanation))
    return picks


def gif_window(
    feats: SegmentFeatures, history: np.ndarray, segment: int, nearest: int,
    segment_bounds_s: tuple[float, float], spec: FeatureSpec, length_s: float,
    duration_s: float,
) -> tuple[float, float]:
    """``length_s`` seconds centred on the segment's best clip.

    The best clip is the one closest to the history GIF that made the
    segment rank (the middle clip when the history is empty).
    """
    mine = np.flatnonzero(feats.clip_owner == segment)
    best = mine[len(mine) // 2]
    if nearest >= 0 and len(mine) > 1:
        best = mine[int(np.argmax(feats.clips[mine] @ history[nearest]))]
    centre_s = float(feats.clip_starts_s[best]) + spec.clip_s / 2
    return centred_window(*segment_bounds_s, centre_s, length_s, duration_s)
