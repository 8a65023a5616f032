"""From a ranking to the picks: which segments, each one's span, score and why.

Pure numpy. A pick's span is its segment, or with ``--gif-length`` a window
of that length centred on the segment's best clip (the one closest to the
history GIF that made the segment rank). Picks are taken best first, skipping
a segment that lies within ``--min-gap`` of an earlier pick, and (the
one-shot rule) trimming each span to one shot, or dropping it when that
shot is too short: the caller finds the cuts, this module only does the
arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


# Shorter than this, a shot's piece of a pick is no GIF anyone keeps: the
# pick gives way to the next candidate. (A --gif-length below it lowers it.)
MIN_SHOT_S = 1.5
# Kept between a GIF's ends and a cut: a cut is timed to a frame, and a GIF
# frame sampled on that frame would flash the next shot.
CUT_MARGIN_S = 0.1


@dataclass(frozen=True)
class Chosen:
    """A segment taken as a pick, and the span its file will hold."""

    segment: int
    start_s: float
    end_s: float


# span(segment) -> the GIF's span before the shot rule; fit(start_s, end_s) ->
# the span inside one shot, or None when that shot is too short.
SpanOf = Callable[[int], tuple[float, float]]
FitShot = Callable[[float, float], "tuple[float, float] | None"]


def choose(candidates: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, k: int,
           min_gap_s: float, span_of: SpanOf, fit: FitShot | None = None) -> list[Chosen]:
    """Up to ``k`` picks, best first, each one's segment at least ``min_gap_s``
    from every earlier pick's, and (with a gap) no two GIF spans overlapping
    or touching; each span fitted inside one shot by ``fit`` (None: no shot
    rule). ``min_gap_s`` 0: neither gap rule (the ranking's own top k)."""
    chosen: list[Chosen] = []
    for idx in candidates.tolist():
        seg = (float(starts_s[idx]), float(ends_s[idx]))
        if min_gap_s > 0 and any(
                _apart(seg, (float(starts_s[c.segment]), float(ends_s[c.segment]))) < min_gap_s
                for c in chosen):
            continue
        span: tuple[float, float] | None = span_of(idx)
        if fit is not None:
            span = fit(*span)
            if span is None:
                continue
        if min_gap_s > 0 and any(_apart(span, (c.start_s, c.end_s)) <= 0 for c in chosen):
            continue
        chosen.append(Chosen(idx, *span))
        if len(chosen) == k:
            break
    return chosen


def _apart(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The time between two spans (negative when they overlap)."""
    return max(a[0], b[0]) - min(a[1], b[1])


def fit_in_shot(start_s: float, end_s: float, cuts_s: Sequence[float],
                min_s: float) -> tuple[float, float] | None:
    """[start_s, end_s] trimmed to its longest piece between ``cuts_s`` (less a
    margin at each cut); None when that piece is shorter than ``min_s``.

    Trimmed, never shifted past the span: the cuts are only known around it.
    """
    inner = sorted(c for c in cuts_s if start_s < c < end_s)
    if not inner:
        return start_s, end_s
    bounds = [start_s, *inner, end_s]
    pieces = [(a + (CUT_MARGIN_S if a in inner else 0.0), b - (CUT_MARGIN_S if b in inner else 0.0))
              for a, b in zip(bounds, bounds[1:], strict=False)]
    a, b = max(pieces, key=lambda piece: piece[1] - piece[0])  # the first of equals
    return (a, b) if b - a >= min_s else None


def make_picks(
    ranking: Ranking, chosen: Sequence[Chosen], total: np.ndarray, starts_s: np.ndarray,
    ends_s: np.ndarray, history_names: Sequence[str], replay: np.ndarray | None,
    heat_term: np.ndarray,
) -> list[Suggestion]:
    """The chosen segments as Suggestions, rank 1 first, each with its Explanation.

    ``total`` is what the picks are scored by (the model's total plus the
    heatmap term ``heat_term``; ``replay`` is the heatmap's value per segment,
    None when the source has no heatmap).
    """
    terms = ranking.terms
    picks = []
    for rank, pick in enumerate(chosen, start=1):
        idx = pick.segment
        near = int(terms.nearest_index[idx])
        start_s, end_s = pick.start_s, pick.end_s
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
                                float(total[idx]), explanation, segment=idx))
    return picks


def gif_window(
    feats: SegmentFeatures | None, history: np.ndarray, segment: int, nearest: int,
    segment_bounds_s: tuple[float, float], spec: FeatureSpec, length_s: float,
    duration_s: float,
) -> tuple[float, float]:
    """``length_s`` seconds centred on the segment's best clip.

    The best clip is the one closest to the history GIF that made the
    segment rank (the segment's middle when the history is empty or no
    features were computed).
    """
    centre_s = sum(segment_bounds_s) / 2
    if feats is not None:
        mine = np.flatnonzero(feats.clip_owner == segment)
        best = mine[len(mine) // 2]
        if nearest >= 0 and len(mine) > 1:
            best = mine[int(np.argmax(feats.clips[mine] @ history[nearest]))]
        centre_s = float(feats.clip_starts_s[best]) + spec.clip_s / 2
    return centred_window(*segment_bounds_s, centre_s, length_s, duration_s)
