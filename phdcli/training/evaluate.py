"""The paper's test protocol on PHD^2 annotations, and the temporal prior's training.

Protocol (paper section 5, docs/method.md): each user's last video is cut
into fixed 5 s segments, every segment gets one score, and mAP, nMSD and
Recall@5 (phdcli.training.metrics) are computed on a 10 Hz grid against the union of
the user's GIFs on that video, then averaged over videos. Videos of unknown
duration (-1) are skipped and counted.

No video files are read here, so only content-free scorers can run: random
scores (the paper's Random row) or the temporal prior (phdcli.ranking.prior).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import InputError, UsageError, WeightsError
from phdcli.ranking.prior import TemporalPrior, fit_listwise
from phdcli.training import metrics
from phdcli.training.annotations import User, UserVideo, load_annotations
from phdcli.training.checks import OutputFile, check_seed

SEGMENT_S = 5.0
CONTENT_FREE_NOTE = (
    "only content-free scorers run here (no video files are read): "
    "these numbers say nothing about the content model"
)


def fixed_segment_bounds(duration_s: float, length_s: float = SEGMENT_S) -> np.ndarray:
    """Fixed segments ``[start_s, end_s)`` covering ``[0, duration_s)``; (n, 2).

    Convention: full ``length_s`` segments from 0; the final remainder is its
    own segment, except a remainder shorter than 1 s, which is merged into
    the previous segment (a sliver that short cannot hold a GIF worth
    ranking). A video shorter than ``length_s`` is a single segment.
    """
    if not duration_s > 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    n_full = math.floor(duration_s / length_s + 1e-9)
    ends = [length_s * (i + 1) for i in range(n_full)]
    remainder = duration_s - length_s * n_full
    if remainder > 1e-9:
        if remainder < 1.0 and ends:
            ends[-1] = duration_s
        else:
            ends.append(duration_s)
    ends_arr = np.asarray(ends, dtype=float)
    return np.stack([np.r_[0.0, ends_arr[:-1]], ends_arr], axis=1)


@dataclass
class VideoCase:
    """One video ready to score: segments and per-segment grid counts."""

    user_id: str
    duration_s: float
    bounds_s: np.ndarray  # (n, 2) segment [start, end) in seconds
    n_points: np.ndarray  # (n,) grid points per segment
    n_pos: np.ndarray  # (n,) grid points inside the union of the GIFs
    gif_counts: np.ndarray  # (m, n) each GIF's grid points per segment


def video_case(user_id: str, video: UserVideo) -> VideoCase | None:
    """Segments and counts of a video; None if its duration is unknown or no GIF lies in it."""
    if not video.known_duration:
        return None
    n_grid = metrics.grid_size(video.duration_s)
    bounds = fixed_segment_bounds(video.duration_s)
    seg_ranges = metrics.segment_point_ranges(bounds, n_grid)
    gifs = np.array([(g.start_s, g.end_s) for g in video.gifs], dtype=float)
    ranges = metrics.gif_point_ranges(gifs, n_grid)
    ranges = ranges[ranges[:, 1] > ranges[:, 0]]
    if len(ranges) == 0:
        return None
    return VideoCase(
        user_id=user_id,
        duration_s=video.duration_s,
        bounds_s=bounds,
        n_points=seg_ranges[:, 1] - seg_ranges[:, 0],
        n_pos=metrics.union_counts(ranges, seg_ranges, n_grid),
        gif_counts=metrics.overlap_counts(ranges, seg_ranges),
    )


def random_scores(case: VideoCase, seed: int) -> np.ndarray:
    """Uniform scores seeded per (seed, user): a draw never depends on who else is scored."""
    rng = np.random.default_rng([seed, zlib.crc32(case.user_id.encode("utf-8"))])
    return rng.random(len(case.bounds_s))


def score_case(case: VideoCase, scorer: str | TemporalPrior, seed: int) -> np.ndarray:
    if isinstance(scorer, TemporalPrior):
        return scorer.score(case.bounds_s[:, 0], case.bounds_s[:, 1], case.duration_s)
    return random_scores(case, seed)


def case_metrics(case: VideoCase, scores: np.ndarray) -> tuple[float, float, float]:
    """(AP, nMSD, R@5) of one video as fractions."""
    return (
        metrics.average_precision(scores, case.n_pos, case.n_points),
        metrics.normalized_msd(scores, case.n_points, case.gif_counts),
        metrics.recall_at_k(scores, case.n_pos, k=5),
    )


@dataclass
class EvalResult:
    """Mean metrics in percent (nMSD: lower is better) over the evaluated videos."""

    map: float
    nmsd: float
    recall5: float
    n_videos: int
    n_skipped: int
    model: str
    notes: list[str] = field(default_factory=list)
    per_seed: list[dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_scorer(scorer: str | Path | TemporalPrior) -> tuple[str | TemporalPrior, str]:
    if isinstance(scorer, TemporalPrior):
        return scorer, "prior"
    if str(scorer) == "random":
        return "random", "random"
    if str(scorer) == "prior" or str(scorer).endswith(".safetensors"):
        # A ranking model file: only its content-free term can score here.
        from phdcli.ranking.model import default_model_path, load_model

        path = default_model_path() if str(scorer) == "prior" else Path(scorer)
        prior = load_model(path).prior
        if prior is None:
            raise WeightsError(f"{path.name} has no temporal prior to evaluate without videos")
        return prior, f"prior:{path.name}"
    path = Path(scorer)
    if not path.is_file():
        raise UsageError(
            f"unknown --model {str(scorer)!r}: use random, prior, a model file or a prior JSON"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read temporal prior {path}: {exc}") from None
    return TemporalPrior.from_dict(data), f"prior:{path.name}"


def _cases(
    users: list[User], only: set[str] | None
) -> tuple[list[VideoCase], list[str], list[str]]:
    cases, unknown, empty = [], [], []
    for user in users:
        if only is not None and user.user_id not in only:
            continue
        case = video_case(user.user_id, user.last)
        if case is not None:
            cases.append(case)
        elif not user.last.known_duration:
            unknown.append(user.user_id)
        else:
            empty.append(user.user_id)
    return cases, unknown, empty


def evaluate(
    annotations: Path | list[User],
    scorer: str | Path | TemporalPrior,
    seed: int = 0,
    n_seeds: int = 1,
    scores_out: Path | None = None,
    users: set[str] | None = None,
    force: bool = False,
) -> EvalResult:
    """Score every user's last video and average the metrics (percent).

    ``scorer``: "random", a TemporalPrior, or a path to a prior JSON file.
    Random scores are drawn for seeds ``seed .. seed + n_seeds - 1`` and the
    result is the mean over seeds (``per_seed`` holds each); a prior is
    deterministic and runs once. ``users`` restricts to those user ids.
    ``scores_out`` gets ``user_id,segment_index,start,end,score`` for every
    scored segment (the first seed's scores for random): never over an existing
    file without ``force``, never over the annotations or the model.
    """
    if n_seeds < 1:
        raise UsageError(f"n_seeds must be at least 1, got {n_seeds}")
    check_seed(seed, last=seed + n_seeds - 1)
    out = None if scores_out is None else OutputFile(Path(scores_out), "--scores-out", force)
    if out is not None:
        out.check([Path(p) for p in (annotations, scorer)
                   if isinstance(p, str | Path) and str(p) not in ("random", "prior")])
    model, name = _resolve_scorer(scorer)
    all_users = (
        load_annotations(Path(annotations)) if isinstance(annotations, str | Path) else annotations
    )
    cases, unknown, empty = _cases(all_users, users)
    if not cases:
        raise InputError("no evaluable video: every selected user's last video was skipped")
    seeds = [seed + i for i in range(n_seeds)] if model == "random" else [seed]
    per_seed, first_scores = [], []
    for s in seeds:
        rows = []
        for case in cases:
            scores = score_case(case, model, s)
            if s == seeds[0]:
                first_scores.append(scores)
            rows.append(case_metrics(case, scores))
        ap, nmsd, r5 = (100.0 * float(v) for v in np.mean(rows, axis=0))
        per_seed.append({"seed": s, "map": ap, "nmsd": nmsd, "recall5": r5})

    notes = [CONTENT_FREE_NOTE]
    if unknown:
        notes.append(
            f"{len(unknown)} video(s) skipped: unknown duration (users {', '.join(unknown)})"
        )
    if empty:
        notes.append(f"{len(empty)} video(s) skipped: no GIF inside the video ({', '.join(empty)})")
    if len(seeds) > 1:
        stds = {k: float(np.std([p[k] for p in per_seed])) for k in ("map", "nmsd", "recall5")}
        notes.append(
            f"mean over {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); std mAP {stds['map']:.2f}, "
            f"nMSD {stds['nmsd']:.2f}, R@5 {stds['recall5']:.2f}"
        )
    if model == "random":
        # Exact: with n > 5 segments each one is in the random top 5 with p = 5/n.
        exact = 100.0 * float(np.mean([min(1.0, 5.0 / len(c.bounds_s)) for c in cases]))
        notes.append(f"expected R@5 of random scores on these videos: {exact:.2f} (exact)")
    elif n_seeds > 1:
        notes.append("the prior is deterministic: n_seeds ignored")
    if out is not None:
        _write_scores(out, cases, first_scores)
        if len(seeds) > 1:
            notes.append(f"scores written for seed {seeds[0]} only")
    mean = {k: float(np.mean([p[k] for p in per_seed])) for k in ("map", "nmsd", "recall5")}
    return EvalResult(
        map=mean["map"],
        nmsd=mean["nmsd"],
        recall5=mean["recall5"],
        n_videos=len(cases),
        n_skipped=len(unknown) + len(empty),
        model=name,
        notes=notes,
        per_seed=per_seed if len(seeds) > 1 else None,
    )


def _write_scores(out: OutputFile, cases: list[VideoCase], scores: list[np.ndarray]) -> None:
    lines = ["user_id,segment_index,start,end,score"]
    for case, s in zip(cases, scores, strict=True):
        for i, ((a, b), v) in enumerate(zip(case.bounds_s, s, strict=True)):
            lines.append(f"{case.user_id},{i},{a:.3f},{b:.3f},{v:.6g}")
    with out.writing() as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _training_cases(users: list[User], include_last: bool) -> list[tuple[str, list[VideoCase]]]:
    out = []
    for user in users:
        videos = [*user.history, user.last] if include_last else list(user.history)
        cases = [c for v in videos if (c := video_case(user.user_id, v)) is not None]
        if cases:
            out.append((user.user_id, cases))
    return out


def fit_prior(
    users: list[User],
    l2: float = 1e-3,
    rel_degree: int = 3,
    include_last: bool = True,
    per_user: bool = True,
    abs_knots_s: tuple[float, ...] = (0.0, 30.0, 900.0),
) -> TemporalPrior:
    """Fit the temporal prior on these users' annotated videos (phdcli.ranking.prior.fit_listwise).

    Every video with a known duration is cut into the evaluation's fixed 5 s
    segments; the target is the share of the video's GIF frames (union of
    the user's GIFs) in each segment. With ``per_user`` each user weighs the
    same (split over their videos), so a prolific user cannot dominate.
    Defaults (degree 3, knots 0/30/900 s, l2 1e-3) were picked by 4-fold
    cross-validation inside the fit half of the seed-0 user split only.
    """
    per_user_cases = _training_cases(users, include_last)
    if not per_user_cases:
        raise InputError("no video with a known duration to fit the temporal prior on")
    cases = [c for _, cs in per_user_cases for c in cs]
    log_dur = np.log([c.duration_s for c in cases])
    shape = TemporalPrior(
        coef=np.zeros(2 * (rel_degree + 1) + 2 * len(abs_knots_s) + 1),
        rel_degree=rel_degree,
        logdur_center=float(log_dur.mean()),
        logdur_scale=float(max(log_dur.std(), 1e-3)),
        abs_knots_s=tuple(abs_knots_s),
    )
    x = np.concatenate(
        [shape.features(c.bounds_s[:, 0], c.bounds_s[:, 1], c.duration_s) for c in cases]
    )
    target = np.concatenate([c.n_pos / c.n_pos.sum() for c in cases])
    sizes = np.array([len(c.bounds_s) for c in cases])
    group_starts = np.r_[0, np.cumsum(sizes)[:-1]]
    if per_user:
        weight = np.concatenate([np.full(len(cs), 1.0 / len(cs)) for _, cs in per_user_cases])
    else:
        weight = np.ones(len(cases))
    weight = weight / weight.sum()
    coef = fit_listwise(x, group_starts, target, weight, l2=l2)
    shape.coef = coef
    shape.fit_info = {
        "objective": "softmax over a video's 5 s segments vs. its GIF-frame shares",
        "n_users": len(per_user_cases),
        "n_videos": len(cases),
        "l2": l2,
        "include_last": include_last,
        "per_user_weight": per_user,
    }
    return shape


def train_prior(annotations: Path, out: Path, seed: int = 0, force: bool = False
                ) -> TemporalPrior:
    """Fit the prior on every user of ``annotations`` and write its JSON to ``out``.

    ``out`` is checked first (:class:`OutputFile`: not the annotations, not an
    existing file without ``force``) and written whole or not at all. ``seed``
    is recorded only: the fit is deterministic (convex, Newton).
    """
    check_seed(seed)
    target = OutputFile(Path(out), "--out", force)
    target.check([Path(annotations)])
    prior = fit_prior(load_annotations(Path(annotations)))
    prior.fit_info.update({"annotations": Path(annotations).name, "seed": seed})
    with target.writing() as tmp:
        tmp.write_text(json.dumps(prior.to_dict(), indent=2) + "\n", encoding="utf-8")
    return prior
