"""Late fusion and validation: the fusion weights, and each model part's metrics.

On validation users only (``phdcli.training.fit.fit_fused`` holds them
out of every other fit): ``fit_fusion`` picks omega and omega_t by the
pairwise ranking accuracy they give; ``evaluate_samples`` gives mAP, nMSD
and R@5 on the users' test segments, for the fused model and each part
alone (``part_models``).

Every part shares the fused model's terms, so ``read_terms`` reads each
user once and keeps only the unweighted terms ``[h_fnn, h_svm, h_time]``
of its segments (and the test protocol's counts); ``fusion_weights`` and
``part_metrics`` then work from those, with the numbers ``fit_fusion`` and
``evaluate_samples`` give from the users themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from phdcli.ranking.model import FusedModel, fuse
from phdcli.training import metrics
from phdcli.training.evaluate import VideoCase, case_metrics, random_scores
from phdcli.training.labels import NEGATIVE, POSITIVE
from phdcli.training.samples import SampleSet, UserSample, as_sample_set

Samples = SampleSet | Sequence[UserSample]


def _terms(model: FusedModel, sample: UserSample, which: str) -> np.ndarray:
    """(n, 3) unweighted [h_fnn, h_svm, h_time] of the sample's training or eval segments."""
    feats, bounds = ((sample.segments, sample.bounds_s) if which == "train"
                     else sample.eval_segments())
    # Weights of 1 leave each term as score() computes it (1.0 * x is x, exactly).
    unit = FusedModel(model.spec, model.k, model.svm_w, model.svm_b, 1.0, 1.0, model.fnn,
                      model.prior, model.centre)
    t = unit.score(feats, sample.history, bounds[:, 0], bounds[:, 1], sample.duration_s)
    return np.stack([t.fnn, t.svm, t.time], axis=1)


@dataclass
class UserTerms:
    """What fusion and metrics need of one user, from one read of the user."""

    labels: np.ndarray  # (n,) of the training segments
    train: np.ndarray | None  # (n, 3) unweighted terms of the training segments (None: not asked)
    case: VideoCase | None  # the test protocol's counts (None: no GIF inside the video)
    eval: np.ndarray | None  # (t, 3) unweighted terms of the eval segments (None: no case)


def read_terms(model: FusedModel, samples: Samples, train: bool = True) -> list[UserTerms]:
    """Each user read once: the terms of its segments under ``model``'s content parts."""
    users = as_sample_set(samples)
    out = []
    for i, labels in enumerate(users.labels()):
        sample = users.sample(i)
        train_terms = _terms(model, sample, "train") if train else None
        case = sample_case(sample)
        eval_terms = None
        if case is not None:
            # No test segments: the metrics score the training ones, already done.
            same = train_terms is not None and sample.eval_segments()[0] is sample.segments
            eval_terms = train_terms if same else _terms(model, sample, "eval")
        out.append(UserTerms(labels, train_terms, case, eval_terms))
    return out


def pair_accuracy(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Mean over users of the share of (positive, negative) pairs ordered right (ties: half)."""
    accs = []
    for s, lab in zip(scores, labels, strict=True):
        pos, neg = s[lab == POSITIVE], s[lab == NEGATIVE]
        if len(pos) and len(neg):
            d = pos[:, None] - neg[None, :]
            accs.append(float((d > 0).mean() + 0.5 * (d == 0).mean()))
    return float(np.mean(accs)) if accs else float("nan")


def fit_fusion(model: FusedModel, samples: Samples) -> tuple[float, float, float]:
    """(omega, omega_t, accuracy): the grid point with the best validation pair accuracy.

    The grid is relative to each term's spread, so it fits any scale; ties
    go to the most balanced weights (omega nearest the spread ratio), which
    matters when a few validation users cannot tell the options apart.
    """
    return fusion_weights(read_terms(model, samples), model.prior is not None)


def fusion_weights(users: Sequence[UserTerms], has_prior: bool) -> tuple[float, float, float]:
    """``fit_fusion`` on terms already read (``read_terms`` with ``train=True``)."""
    terms = [u.train for u in users if u.train is not None]
    if len(terms) != len(users):
        raise ValueError("fusion_weights needs the training segments' terms of every user")
    labels = [u.labels for u in users]
    spread = np.array([np.concatenate([t[:, j] - t[:, j].mean() for t in terms]).std()
                       for j in range(3)])
    ratios = np.r_[0.0, np.logspace(-2, 2, 25)]
    rel_t = np.r_[0.0, np.logspace(-2, 1, 13)] if has_prior else np.r_[0.0]

    def unit(j: int) -> float:
        return spread[0] / spread[j] if spread[j] > 1e-12 and spread[0] > 1e-12 else 1.0

    best: tuple[float, float, float, float] | None = None  # (-acc, imbalance, omega, omega_t)
    for r in ratios:
        for rt in rel_t:
            omega, omega_t = r * unit(1), rt * unit(2)
            acc = pair_accuracy([fuse(t[:, 0], t[:, 1], t[:, 2], omega, omega_t)
                                 for t in terms], labels)
            if math.isnan(acc):
                acc = 0.0
            imbalance = abs(math.log(r)) if r > 0 else math.inf
            cand = (-acc, imbalance, omega, omega_t)
            if best is None or cand[:2] < best[:2]:
                best = cand
    assert best is not None
    return best[2], best[3], -best[0]


def sample_case(sample: UserSample) -> VideoCase | None:
    """The test protocol's counts for a sample's eval segments (evaluate.video_case's twin)."""
    bounds = sample.eval_segments()[1]
    n_grid = metrics.grid_size(sample.duration_s)
    seg_ranges = metrics.segment_point_ranges(bounds, n_grid)
    ranges = metrics.gif_point_ranges(np.asarray(sample.ground_truth_s(), dtype=float), n_grid)
    ranges = ranges[ranges[:, 1] > ranges[:, 0]]
    if len(ranges) == 0:
        return None
    return VideoCase(sample.user_id, sample.duration_s, bounds,
                     seg_ranges[:, 1] - seg_ranges[:, 0],
                     metrics.union_counts(ranges, seg_ranges, n_grid),
                     metrics.overlap_counts(ranges, seg_ranges))


def part_models(model: FusedModel) -> dict[str, FusedModel | None]:
    """The fused model and each part alone (None: random scores)."""
    def variant(**kw: Any) -> FusedModel:
        base = dict(spec=model.spec, k=model.k, svm_w=model.svm_w, svm_b=model.svm_b,
                    omega=model.omega, omega_t=model.omega_t, fnn=model.fnn, prior=model.prior,
                    centre=model.centre)
        return FusedModel(**{**base, **kw})  # type: ignore[arg-type]

    parts: dict[str, FusedModel | None] = {
        "fused": model,
        "fnn": variant(omega=0.0, omega_t=0.0),
        "svm": variant(fnn=None, omega=1.0, omega_t=0.0),
    }
    if model.prior is not None:
        parts["prior"] = variant(fnn=None, omega=0.0, omega_t=1.0)
    parts["random"] = None
    return parts


def evaluate_samples(
    model: FusedModel | None, samples: Samples, seed: int = 0
) -> dict[str, float]:
    """mAP / nMSD / R@5 in percent over the samples' eval segments (None: random scores)."""
    users = as_sample_set(samples)
    rows = []
    for i in range(len(users)):
        sample = users.sample(i)
        case = sample_case(sample)
        if case is None:
            continue
        if model is None:
            scores = random_scores(case, seed)
        else:
            feats, bounds = sample.eval_segments()
            scores = model.score(feats, sample.history, bounds[:, 0], bounds[:, 1],
                                 sample.duration_s).total
        rows.append(case_metrics(case, scores))
    return _mean_metrics(rows)


def _mean_metrics(rows: Sequence[tuple[float, float, float]]) -> dict[str, float]:
    if not rows:
        return {"map": float("nan"), "nmsd": float("nan"), "recall5": float("nan"), "n_videos": 0}
    ap, nmsd, r5 = (100.0 * float(v) for v in np.mean(rows, axis=0))
    return {"map": ap, "nmsd": nmsd, "recall5": r5, "n_videos": len(rows)}


def part_scores(part: FusedModel, model: FusedModel, terms: np.ndarray) -> np.ndarray:
    """``part.score(...).total`` from ``model``'s unweighted terms (n, 3), the same floats.

    ``part`` must share ``model``'s content (as ``part_models`` makes them):
    its FNN, SVM-D and prior are ``model``'s or absent.
    """
    same_svm = (part.k, part.centre, part.svm_b) == (model.k, model.centre, model.svm_b) and (
        np.array_equal(part.svm_w, model.svm_w))
    own = all(mine is None or mine is theirs
              for mine, theirs in ((part.fnn, model.fnn), (part.prior, model.prior)))
    if not (own and same_svm):
        raise ValueError("part_scores: the part does not share the model's terms")
    n = len(terms)
    fnn = terms[:, 0] if part.fnn is not None else np.zeros(n)
    time = terms[:, 2] if part.prior is not None else np.zeros(n)
    return fuse(fnn, terms[:, 1], time, part.omega, part.omega_t)


def part_metrics(model: FusedModel, parts: Mapping[str, FusedModel | None],
                 users: Sequence[UserTerms], seed: int = 0) -> dict[str, dict[str, float]]:
    """``evaluate_samples(part, users, seed)`` for every part, from terms read once."""
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in parts}
    for user in users:
        if user.case is None or user.eval is None:
            continue
        for name, part in parts.items():
            scores = (random_scores(user.case, seed) if part is None
                      else part_scores(part, model, user.eval))
            rows[name].append(case_metrics(user.case, scores))
    return {name: _mean_metrics(r) for name, r in rows.items()}
