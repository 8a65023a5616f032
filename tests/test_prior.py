from __future__ import annotations

import json

import numpy as np
import pytest

from phdcli.errors import WeightsError
from phdcli.ranking.prior import TemporalPrior, bernstein, fit_listwise, hats


def _prior() -> TemporalPrior:
    n = TemporalPrior(coef=np.zeros(2 * 4 + 2 * 3 + 1)).n_features
    return TemporalPrior(coef=np.linspace(-1, 1, n), logdur_center=5.0, logdur_scale=0.8)


def test_bases_are_partitions_of_unity() -> None:
    x = np.linspace(0, 1, 11)
    assert bernstein(x, 3).sum(axis=1) == pytest.approx(np.ones(11))
    assert hats(np.linspace(-1, 8, 10), np.log1p([0, 30, 900])).sum(axis=1) == pytest.approx(
        np.ones(10)
    )


def test_round_trip_keeps_scores() -> None:
    prior = _prior()
    d = json.loads(json.dumps(prior.to_dict()))
    again = TemporalPrior.from_dict(d)
    start = np.arange(0, 100, 5.0)
    assert np.array_equal(
        prior.score(start, start + 5, 100.0), again.score(start, start + 5, 100.0)
    )
    assert d["kind"] == "phd-temporal-prior" and d["version"] == 1
    assert len(d["coef"]) == len(d["basis"]["features"])


@pytest.mark.parametrize(
    "change",
    [{"kind": "c3d"}, {"version": 99}, {"coef": [1.0, 2.0]}, {"basis": None}, {"coef": "x"}],
)
def test_from_dict_refuses_bad_files(change: dict) -> None:
    d = {**_prior().to_dict(), **change}
    with pytest.raises(WeightsError):
        TemporalPrior.from_dict(d)


def test_fit_listwise_learns_an_early_preference() -> None:
    # Ten videos of 6 segments, all GIF frames in the first segment.
    prior = TemporalPrior(coef=np.zeros(15), logdur_center=np.log(30.0))
    start = np.arange(0, 30, 5.0)
    x = np.concatenate([prior.features(start, start + 5, 30.0)] * 10)
    target = np.tile([1.0, 0, 0, 0, 0, 0], 10)
    coef = fit_listwise(x, np.arange(0, 60, 6), target, np.full(10, 0.1), l2=1e-3)
    scores = TemporalPrior(coef=coef, logdur_center=np.log(30.0)).score(start, start + 5, 30.0)
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1:].max() + 1.0
