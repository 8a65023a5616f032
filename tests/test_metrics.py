from __future__ import annotations

import numpy as np
import pytest

from phdcli.training import metrics


def test_ap_perfect_ranking_is_one() -> None:
    assert metrics.average_precision([4, 3, 2, 1], [1, 1, 0, 0]) == pytest.approx(1.0)


def test_ap_inverted_ranking() -> None:
    # Ranked neg, neg, pos, pos: precision 1/3 then 2/4; interpolation lifts 1/3 to 1/2.
    assert metrics.average_precision([0, 1, 2, 3], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert metrics.average_precision([0, 1, 2], [1, 0, 0]) == pytest.approx(1 / 3)


def test_ap_hand_computed_mixed_ranking() -> None:
    # pos, neg, pos, neg: precision 1 and 2/3 at the two recall steps.
    assert metrics.average_precision([4, 3, 2, 1], [1, 0, 1, 0]) == pytest.approx(5 / 6)


def test_ap_tie_is_one_threshold_step() -> None:
    # A tie never helps: pos and neg tied -> precision 1/2 whatever the order.
    assert metrics.average_precision([1, 1], [1, 0]) == pytest.approx(0.5)
    assert metrics.average_precision([1, 1], [0, 1]) == pytest.approx(0.5)
    # Tied pair after a positive: steps at {pos} (1.0) and {pos, pos, neg} (2/3).
    assert metrics.average_precision([2, 1, 1], [1, 0, 1]) == pytest.approx(5 / 6)
    assert metrics.average_precision([2, 1, 1], [1, 1, 0]) == pytest.approx(5 / 6)


def test_ap_segment_counts_equal_grid_level() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 12))
        scores = rng.integers(0, 4, n).astype(float)  # small range: many ties
        n_points = rng.integers(1, 6, n)
        n_pos = np.minimum(rng.integers(0, 4, n), n_points)
        if n_pos.sum() == 0:
            n_pos[0] = 1
        grid_scores = np.repeat(scores, n_points)
        grid_true = np.concatenate(
            [np.r_[np.ones(p), np.zeros(t - p)] for p, t in zip(n_pos, n_points, strict=True)]
        )
        seg = metrics.average_precision(scores, n_pos, n_points)
        assert seg == pytest.approx(metrics.average_precision(grid_scores, grid_true))


def test_ap_needs_a_positive() -> None:
    with pytest.raises(ValueError):
        metrics.average_precision([1, 2], [0, 0])


POINTS = np.array([10, 10, 10, 10])


def test_nmsd_perfect_and_worst() -> None:
    gif = np.array([[0, 0, 10, 0]])
    # MSD = 10 of 40 points: (10 - 5) / (40 - 5).
    assert metrics.normalized_msd([0.1, 0.2, 0.9, 0.3], POINTS, gif) == pytest.approx(5 / 35)
    assert metrics.normalized_msd([0.5, 0.6, 0.1, 0.7], POINTS, gif) == pytest.approx(1.0)


def test_nmsd_known_cases() -> None:
    scores = [0.1, 0.9, 0.5, 0.3]
    # 4 points at 0.1, 6 at 0.9: median 0.9, MSD 10.
    assert metrics.normalized_msd(scores, POINTS, [[4, 6, 0, 0]]) == pytest.approx(5 / 35)
    # 5 and 5: linear median 0.5, MSD = points >= 0.5 = 20.
    assert metrics.normalized_msd(scores, POINTS, [[5, 5, 0, 0]]) == pytest.approx(15 / 35)
    # Two GIFs: mean of their nMSDs.
    two = [[4, 6, 0, 0], [5, 5, 0, 0]]
    assert metrics.normalized_msd(scores, POINTS, two) == pytest.approx(10 / 35)


def test_nmsd_tie_at_threshold_counts_in_full() -> None:
    # All segments tied: every point scores >= the threshold.
    assert metrics.normalized_msd([1, 1, 1, 1], POINTS, [[0, 10, 0, 0]]) == pytest.approx(1.0)


def test_recall_at_5() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6])
    n_pos = np.array([0, 10, 5, 0, 0, 0, 5])
    # Top 5: segments 0, 2, 4, 6, 5 -> 10 of 20 positive points.
    assert metrics.recall_at_k(scores, n_pos) == pytest.approx(0.5)


def test_recall_with_fewer_than_5_segments_is_one() -> None:
    assert metrics.recall_at_k([0.1, 0.2, 0.3], [0, 3, 1]) == pytest.approx(1.0)


def test_recall_ties_prefer_earlier_segments() -> None:
    flat = np.zeros(7)
    assert metrics.recall_at_k(flat, [0, 0, 0, 0, 0, 0, 4]) == pytest.approx(0.0)
    assert metrics.recall_at_k(flat, [4, 0, 0, 0, 0, 0, 0]) == pytest.approx(1.0)


def test_grid_helpers() -> None:
    assert metrics.grid_size(85.0) == 850
    bounds = np.array([[0, 5], [5, 10], [10, 11]], dtype=float)
    seg = metrics.segment_point_ranges(bounds, metrics.grid_size(11.0))
    assert seg.tolist() == [[0, 50], [50, 100], [100, 110]]
    gifs = metrics.gif_point_ranges(np.array([[3.0, 7.0], [6.0, 8.0], [10.55, 10.6]]), 110)
    assert gifs.tolist() == [[30, 70], [60, 80], [105, 106]]  # a sliver keeps one point
    assert metrics.union_counts(gifs, seg, 110).tolist() == [20, 30, 1]
    assert metrics.overlap_counts(gifs, seg).tolist() == [[20, 20, 0], [0, 20, 0], [0, 0, 1]]
