"""A content-free temporal prior: where in a video people make GIFs.

The score of a segment is linear in a handful of smooth features of its
position only:

- Bernstein polynomials of the relative position ``r`` (segment midpoint /
  video duration), degree ``rel_degree``: a smooth curve over the video;
- the same bases times ``z``, the standardised log duration, so the curve
  may bend differently for short and long videos;
- piecewise-linear "hat" bases over ``log1p(start_s)`` and over
  ``log1p(seconds left after the segment)``, knots at ``abs_knots_s``: the
  absolute "how far from the start / end" effects a relative axis blurs;
- ``log(segment length / 5 s)``: a shorter final segment holds fewer frames.

Why this form: about twenty coefficients on smooth bases cannot memorise
users or videos, the model is a single dot product (pure numpy, JSON
weights), and it is linear, so fitting it (``fit_listwise``) is a convex
problem that Newton's method solves exactly in a few steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phdcli.errors import WeightsError

KIND = "phd-temporal-prior"
VERSION = 1
_LENGTH_S = 5.0


def bernstein(x: np.ndarray, degree: int) -> np.ndarray:
    """Bernstein basis ``C(d,k) x^k (1-x)^(d-k)``, k = 0..d; (len(x), d+1)."""
    x = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)[:, None]
    k = np.arange(degree + 1)[None, :]
    binom = np.array([math.comb(degree, j) for j in range(degree + 1)], dtype=float)
    return binom * x**k * (1.0 - x) ** (degree - k)


def hats(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation bases at ``knots`` (constant beyond the ends); (len(x), k)."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(x, knots, eye[j]) for j in range(len(knots))], axis=1)


@dataclass
class TemporalPrior:
    """Linear scorer over smooth position features; see the module docstring.

    ``coef`` has one weight per name in ``feature_names()``; ``fit_info`` is
    free-form provenance (data, regularisation) carried through JSON.
    """

    coef: np.ndarray
    rel_degree: int = 3
    logdur_center: float = math.log(180.0)
    logdur_scale: float = 1.0
    abs_knots_s: tuple[float, ...] = (0.0, 30.0, 900.0)
    fit_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coef = np.asarray(self.coef, dtype=float).reshape(-1)
        self.abs_knots_s = tuple(float(k) for k in self.abs_knots_s)
        if len(self.abs_knots_s) < 2 or any(np.diff(self.abs_knots_s) <= 0):
            raise WeightsError("temporal prior knots must be at least two increasing values")
        if self.coef.shape != (self.n_features,):
            raise WeightsError(
                f"temporal prior has {self.coef.size} coefficients, expected {self.n_features}"
            )

    @property
    def n_features(self) -> int:
        return 2 * (self.rel_degree + 1) + 2 * len(self.abs_knots_s) + 1

    def feature_names(self) -> list[str]:
        rel = [f"bern{self.rel_degree}_{k}(rel)" for k in range(self.rel_degree + 1)]
        knots = [f"{k:g}s" for k in self.abs_knots_s]
        return [
            *rel,
            *(f"{n}*logdur" for n in rel),
            *(f"hat_start@{k}" for k in knots),
            *(f"hat_to_end@{k}" for k in knots),
            "log_len",
        ]

    def features(self, start_s: np.ndarray, end_s: np.ndarray, duration_s: float) -> np.ndarray:
        """Feature matrix (n, n_features) of segments ``[start_s, end_s)``."""
        start_s = np.asarray(start_s, dtype=float).reshape(-1)
        end_s = np.asarray(end_s, dtype=float).reshape(-1)
        duration_s = float(max(duration_s, end_s.max(initial=0.0), 1e-3))
        rel = bernstein(0.5 * (start_s + end_s) / duration_s, self.rel_degree)
        z = (math.log(duration_s) - self.logdur_center) / self.logdur_scale
        knots = np.log1p(np.asarray(self.abs_knots_s))
        from_start = hats(np.log1p(np.maximum(start_s, 0.0)), knots)
        to_end = hats(np.log1p(np.maximum(duration_s - end_s, 0.0)), knots)
        log_len = np.log(np.maximum(end_s - start_s, 0.1) / _LENGTH_S)[:, None]
        return np.concatenate([rel, rel * z, from_start, to_end, log_len], axis=1)

    def score(self, start_s: np.ndarray, end_s: np.ndarray, duration_s: float) -> np.ndarray:
        """Score per segment (n,); higher = more likely part of a GIF."""
        return self.features(start_s, end_s, duration_s) @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "basis": {
                "rel_degree": self.rel_degree,
                "logdur_center": self.logdur_center,
                "logdur_scale": self.logdur_scale,
                "abs_knots_s": list(self.abs_knots_s),
                "features": self.feature_names(),
            },
            "coef": [float(c) for c in self.coef],
            "fit": self.fit_info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TemporalPrior:
        if not isinstance(d, dict) or d.get("kind") != KIND:
            kind = d.get("kind") if isinstance(d, dict) else type(d).__name__
            raise WeightsError(f"not a temporal prior (kind {kind!r}, expected {KIND!r})")
        if d.get("version") != VERSION:
            raise WeightsError(
                f"temporal prior version {d.get('version')!r} is not supported "
                f"(this phd reads version {VERSION})"
            )
        try:
            basis = d["basis"]
            prior = cls(
                coef=np.asarray(d["coef"], dtype=float),
                rel_degree=int(basis["rel_degree"]),
                logdur_center=float(basis["logdur_center"]),
                logdur_scale=float(basis["logdur_scale"]),
                abs_knots_s=tuple(float(k) for k in basis["abs_knots_s"]),
                fit_info=dict(d.get("fit") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"temporal prior file is malformed ({exc})") from None
        if not np.all(np.isfinite(prior.coef)):
            raise WeightsError("temporal prior has non-finite coefficients")
        if basis.get("features", prior.feature_names()) != prior.feature_names():
            raise WeightsError("temporal prior's feature list does not match its basis")
        return prior


def fit_listwise(
    x: np.ndarray,
    group_starts: np.ndarray,
    target: np.ndarray,
    group_weight: np.ndarray,
    l2: float,
    max_iter: int = 50,
) -> np.ndarray:
    """Weights of a conditional-logit (softmax within each video) model.

    x (n, f): features of all segments, videos contiguous, video g starting
    at row ``group_starts[g]``; target (n,): per video a distribution over
    its segments (the share of the video's GIF frames in each segment);
    group_weight (G,): each video's weight. Minimises
    ``sum_g w_g * CE(target_g, softmax(x_g @ w)) + l2/2 |w|^2``.

    Why this loss: it is the likelihood of "a GIF frame of this video falls
    in segment i", so it ranks segments within a video (what all three
    metrics judge), ignores per-video offsets by construction, and is convex
    with an analytic Hessian: Newton converges in ~10 steps, no scipy needed.
    """
    n, f = x.shape
    seg_group = np.repeat(np.arange(len(group_starts)), np.diff(np.r_[group_starts, n]))
    row_w = group_weight[seg_group]
    w = np.zeros(f)

    def loss_and_p(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = x @ w
        s = s - np.maximum.reduceat(s, group_starts)[seg_group]
        e = np.exp(s)
        log_z = np.log(np.add.reduceat(e, group_starts))[seg_group]
        p = e / np.exp(log_z)
        loss = float(-(row_w * target * (s - log_z)).sum() + 0.5 * l2 * w @ w)
        return loss, p

    loss, p = loss_and_p(w)
    for _ in range(max_iter):
        grad = x.T @ (row_w * (p - target)) + l2 * w
        m = np.add.reduceat(x * p[:, None], group_starts)  # (G, f): E_p[x] per video
        hess = (x * (row_w * p)[:, None]).T @ x - (m * group_weight[:, None]).T @ m
        step = np.linalg.solve(hess + l2 * np.eye(f), grad)
        t = 1.0
        while True:  # backtracking keeps each Newton step a descent step
            new_loss, new_p = loss_and_p(w - t * step)
            if new_loss <= loss - 1e-4 * t * grad @ step or t < 1e-6:
                break
            t *= 0.5
        w, improvement = w - t * step, loss - new_loss
        loss, p = new_loss, new_p
        if abs(improvement) < 1e-10 * max(1.0, abs(loss)):
            break
    return w
