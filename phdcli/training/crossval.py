"""The temporal prior's cross-validation: fit on some users, score the users left out.

``phd train prior --validate`` reports it; the protocol is ``evaluate``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import UsageError
from phdcli.training.annotations import User, load_annotations
from phdcli.training.checks import check_seed
from phdcli.training.evaluate import evaluate, fit_prior


def split_users(users: list[User], seed: int, holdout_fraction: float) -> tuple[set[str], set[str]]:
    """Seeded split of user ids into (fit, held-out)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise UsageError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ids = sorted(u.user_id for u in users)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_hold = max(1, min(len(ids) - 1, round(holdout_fraction * len(ids))))
    held = {ids[i] for i in perm[:n_hold]}
    return set(ids) - held, held


def validate_prior(
    annotations: Path,
    seed: int = 0,
    holdout_fraction: float = 0.5,
    n_folds: int | None = None,
    n_seeds: int = 10,
) -> dict[str, Any]:
    """Fit on some users, evaluate prior and random on the users left out.

    Default: one seeded split, ``holdout_fraction`` of the users held out.
    With ``n_folds`` (k >= 2): seeded k-fold cross-validation, every user is
    held out once and scored by the prior fitted on the other folds; the
    metrics pool all videos (less noisy than one split: R@5 on ~220 videos
    moves by ~2-3 points between splits). Held-out users contribute nothing
    to their fit (neither history nor last video); random is scored on the
    same videos with ``n_seeds`` seeds.
    """
    check_seed(seed, last=seed + max(n_seeds, 1) - 1)
    users = load_annotations(Path(annotations))
    ids = sorted(u.user_id for u in users)
    if n_folds is None:
        fit_ids, held = split_users(users, seed, holdout_fraction)
        folds = [held]
    else:
        if not 2 <= n_folds <= len(ids):
            raise UsageError(f"n_folds must be between 2 and {len(ids)}, got {n_folds}")
        fold_of = np.random.default_rng(seed).permutation(len(ids)) % n_folds
        folds = [{i for i, f in zip(ids, fold_of, strict=True) if f == k} for k in range(n_folds)]
    keys = ("map", "nmsd", "recall5")
    sums = dict.fromkeys(keys, 0.0)
    n_videos = n_skipped = 0
    for held in folds:
        prior = fit_prior([u for u in users if u.user_id not in held])
        r = evaluate(users, prior, users=held)
        for k in keys:
            sums[k] += getattr(r, k) * r.n_videos
        n_videos, n_skipped = n_videos + r.n_videos, n_skipped + r.n_skipped
    all_held = set().union(*folds)
    on_random = evaluate(users, "random", seed=seed, n_seeds=n_seeds, users=all_held)
    return {
        "seed": seed,
        "n_folds": n_folds,
        "n_fit_users": len(ids) - len(folds[0]) if n_folds is None else None,
        "n_heldout_users": len(all_held),
        "prior": {
            **{k: sums[k] / n_videos for k in keys},
            "n_videos": n_videos,
            "n_skipped": n_skipped,
        },
        "random": {
            **{k: getattr(on_random, k) for k in keys},
            "n_videos": on_random.n_videos,
            "n_skipped": on_random.n_skipped,
        },
    }
