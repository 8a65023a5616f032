"""Train the fused content model, PHD-CA + SVM-D (paper sections 4-5, method.md).

Everything here works on ``UserSample`` values (features, labels, bounds):
``fit_fused`` learns from samples in memory, so tests can prove the code
learns on synthetic users with no video; ``train_content`` reads a dataset
folder (``phdcli.dataset``), calls it and writes the model file.

1. PHD-CA: an FNN on ``[s; mean(G)]`` (512-64, SELU, dropout 0.7 on the
   input and 0.2 between layers), trained on 5 positive/negative pairs per
   user per epoch with a pairwise ranking loss, RMSProp with weight decay,
   the learning rate halved every 4 epochs.
2. SVM-D: a linear ranker on the sorted cosine distances to the k = 20
   nearest history items (``FusedModel.history_distances``, same centring
   as at inference), same pairwise loss plus L2: a ranking SVM.
3. Late fusion: omega (and omega_t for the temporal prior) picked on
   validation users by the pairwise ranking accuracy they give.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli import metrics
from phdcli.dataset import NEGATIVE, POSITIVE, UserSample
from phdcli.errors import InputError, UsageError
from phdcli.evaluate import VideoCase, case_metrics, random_scores
from phdcli.features import FeatureSpec
from phdcli.model import Fnn, FusedModel
from phdcli.prior import TemporalPrior

if TYPE_CHECKING:
    import torch

log = logging.getLogger("phd")

# progress(stage, done, total): stage "fnn" counts epochs.
TrainProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; defaults follow the paper's best model (section 5, Training)."""

    hidden: tuple[int, ...] = (512, 64)
    activation: str = "selu"
    dropout_input: float = 0.7
    dropout_hidden: float = 0.2
    lr: float = 1e-3
    lr_halve_every: int = 4
    weight_decay: float = 1e-3
    pairs_per_user: int = 5
    batch_pairs: int = 64
    loss: str = "hinge"  # "hinge" (ranking SVM) or "logistic" (RankNet)
    margin: float = 1.0
    k: int = 20
    centre: str = "video_mean"
    svm_steps: int = 300
    svm_l2: float = 1e-3
    svm_pairs_per_user: int = 50

    def __post_init__(self) -> None:
        if self.loss not in ("hinge", "logistic"):
            raise UsageError(f"loss must be hinge or logistic, not {self.loss!r}")
        if self.activation not in ("selu", "relu"):
            raise UsageError(f"activation must be selu or relu, not {self.activation!r}")


@dataclass
class FitReport:
    n_train: int
    n_val: int
    val_user_ids: list[str]
    omega: float
    omega_t: float
    epoch_losses: list[float] = field(default_factory=list)
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    val_pair_accuracy: float = float("nan")


@dataclass
class TrainSummary:
    out: Path
    n_train: int
    n_val: int
    omega: float
    omega_t: float
    epochs: int
    seed: int
    val_metrics: dict[str, dict[str, float]]  # model part -> {"map", "nmsd", "recall5"} in %


# -- pairs and losses -----------------------------------------------------------
def sample_pairs(
    labels: Sequence[np.ndarray], n_per_user: int, rng: np.random.Generator
) -> np.ndarray:
    """(P, 3) rows (user, positive index, negative index), ``n_per_user`` per user with both.

    Positives and negatives are drawn independently, with replacement: a
    video with 1 positive and 40 negatives still gives 5 distinct-ish pairs.
    """
    rows = []
    for u, lab in enumerate(labels):
        pos, neg = np.flatnonzero(lab == POSITIVE), np.flatnonzero(lab == NEGATIVE)
        if len(pos) == 0 or len(neg) == 0:
            continue
        rows.append(np.stack([np.full(n_per_user, u), rng.choice(pos, n_per_user),
                              rng.choice(neg, n_per_user)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


def pairwise_loss(diff: torch.Tensor, kind: str, margin: float) -> torch.Tensor:
    """Mean loss of score differences h(s+) - h(s-): hinge (ranking SVM) or logistic."""
    import torch.nn.functional as F  # noqa: N812

    if kind == "hinge":
        return F.relu(margin - diff).mean()
    return F.softplus(-diff).mean()


def _mean_history(sample: UserSample, dim: int) -> np.ndarray:
    """p = mean(G); zeros for an empty history (the cold start, method.md)."""
    if len(sample.history) == 0:
        return np.zeros(dim, dtype=np.float32)
    return sample.history.mean(axis=0).astype(np.float32)


# -- PHD-CA ---------------------------------------------------------------------
def _build_fnn(dim_in: int, config: TrainConfig) -> torch.nn.Sequential:
    from torch import nn

    act: type[nn.Module] = nn.SELU if config.activation == "selu" else nn.ReLU
    layers: list[nn.Module] = [nn.Dropout(config.dropout_input)]
    width = dim_in
    for i, h in enumerate(config.hidden):
        if i > 0:
            layers.append(nn.Dropout(config.dropout_hidden))
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def train_fnn(
    samples: Sequence[UserSample],
    config: TrainConfig,
    epochs: int,
    rng: np.random.Generator,
    progress: TrainProgress | None = None,
) -> tuple[torch.nn.Sequential, list[float]]:
    """PHD-CA on the samples' labelled segments; returns the net and the mean loss per epoch."""
    import torch

    dim = samples[0].segments.shape[1]
    # All segments in one tensor: a batch is then two index lookups, not a Python loop.
    feats = torch.from_numpy(np.concatenate([s.segments for s in samples]).astype(np.float32))
    offsets = np.r_[0, np.cumsum([len(s.segments) for s in samples])[:-1]]
    hist = torch.from_numpy(np.stack([_mean_history(s, dim) for s in samples]))
    net = _build_fnn(2 * dim, config)
    opt = torch.optim.RMSprop(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_halve_every, gamma=0.5)
    labels = [s.labels for s in samples]
    losses = []
    for epoch in range(epochs):
        net.train()
        pairs = sample_pairs(labels, config.pairs_per_user, rng)
        if len(pairs) == 0:
            raise InputError("no training user has both a positive and a negative segment")
        pairs = pairs[rng.permutation(len(pairs))]
        total = 0.0
        for start in range(0, len(pairs), config.batch_pairs):
            batch = pairs[start:start + config.batch_pairs]
            p = hist[batch[:, 0]]
            pos = feats[offsets[batch[:, 0]] + batch[:, 1]]
            neg = feats[offsets[batch[:, 0]] + batch[:, 2]]
            # One forward pass over both sides keeps dropout masks independent per row.
            scores = net(torch.cat([torch.cat([pos, p], 1), torch.cat([neg, p], 1)]))[:, 0]
            loss = pairwise_loss(scores[: len(batch)] - scores[len(batch):],
                                 config.loss, config.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        sched.step()
        losses.append(total / len(pairs))
        if progress is not None:
            progress("fnn", epoch + 1, epochs)
    net.eval()
    return net, losses


def fnn_to_numpy(net: torch.nn.Sequential, activation: str) -> Fnn:
    """The trained net as the model file's pure-numpy Fnn (dropout is identity at inference)."""
    from torch import nn

    linears = [m for m in net if isinstance(m, nn.Linear)]
    return Fnn([m.weight.detach().double().numpy().copy() for m in linears],
               [m.bias.detach().double().numpy().copy() for m in linears], activation)


# -- SVM-D ----------------------------------------------------------------------
def _distances(sample: UserSample, shell: FusedModel, which: str) -> np.ndarray:
    feats = sample.segments if which == "train" else sample.eval_segments()[0]
    return shell.history_distances(feats, sample.history)[0]


def train_svm(
    samples: Sequence[UserSample], shell: FusedModel, config: TrainConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Ranking SVM on d(s, G): (w (k,), b) in the raw distance units the model scores.

    The distances are standardised for the fit (they differ by hundredths
    of a cosine, far below a hinge margin of 1), then the scale is folded
    back into w and b.
    """
    import torch

    dists = [_distances(s, shell, "train") for s in samples]
    pairs = sample_pairs([s.labels for s in samples], config.svm_pairs_per_user, rng)
    k = shell.k
    if len(pairs) == 0:
        return np.zeros(k), 0.0
    all_d = np.concatenate(dists)
    mu, sd = all_d.mean(axis=0), np.maximum(all_d.std(axis=0), 1e-6)
    delta = np.stack([(dists[u][i] - dists[u][j]) / sd for u, i, j in pairs])
    x = torch.from_numpy(delta)
    w = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(config.svm_steps):
        loss = pairwise_loss(x @ w, config.loss, config.margin) + 0.5 * config.svm_l2 * (w @ w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w_raw = w.detach().numpy() / sd
    # The bias is free under a pairwise loss; centre the scores at the mean distance.
    return w_raw, float(-(w_raw @ mu))


# -- fusion and evaluation ------------------------------------------------------
def _terms(model: FusedModel, sample: UserSample, which: str) -> np.ndarray:
    """(n, 3) unweighted [h_fnn, h_svm, h_time] of the sample's training or eval segments."""
    feats, bounds = ((sample.segments, sample.bounds_s) if which == "train"
                     else sample.eval_segments())
    unit = FusedModel(model.spec, model.k, model.svm_w, model.svm_b, 1.0, 1.0, model.fnn,
                      model.prior, model.centre)
    t = unit.score(feats, sample.history, bounds[:, 0], bounds[:, 1], sample.duration_s)
    return np.stack([t.fnn, t.svm, t.time], axis=1)


def pair_accuracy(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Mean over users of the share of (positive, negative) pairs ordered right (ties: half)."""
    accs = []
    for s, lab in zip(scores, labels, strict=True):
        pos, neg = s[lab == POSITIVE], s[lab == NEGATIVE]
        if len(pos) and len(neg):
            d = pos[:, None] - neg[None, :]
            accs.append(float((d > 0).mean() + 0.5 * (d == 0).mean()))
    return float(np.mean(accs)) if accs else float("nan")


def fit_fusion(
    model: FusedModel, samples: Sequence[UserSample]
) -> tuple[float, float, float]:
    """(omega, omega_t, accuracy): the grid point with the best validation pair accuracy.

    The grid is relative to each term's spread, so it fits any scale; ties
    go to the most balanced weights (omega nearest the spread ratio), which
    matters when a few validation users cannot tell the options apart.
    """
    terms = [_terms(model, s, "train") for s in samples]
    labels = [s.labels for s in samples]
    spread = np.array([np.concatenate([t[:, j] - t[:, j].mean() for t in terms]).std()
                       for j in range(3)])
    ratios = np.r_[0.0, np.logspace(-2, 2, 25)]
    rel_t = np.r_[0.0, np.logspace(-2, 1, 13)] if model.prior is not None else np.r_[0.0]

    def unit(j: int) -> float:
        return spread[0] / spread[j] if spread[j] > 1e-12 and spread[0] > 1e-12 else 1.0

    best: tuple[float, float, float, float] | None = None  # (-acc, imbalance, omega, omega_t)
    for r in ratios:
        for rt in rel_t:
            omega, omega_t = r * unit(1), rt * unit(2)
            acc = pair_accuracy([t[:, 0] + omega * t[:, 1] + omega_t * t[:, 2] for t in terms],
                                labels)
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
    model: FusedModel | None, samples: Sequence[UserSample], seed: int = 0
) -> dict[str, float]:
    """mAP / nMSD / R@5 in percent over the samples' eval segments (None: random scores)."""
    rows = []
    for sample in samples:
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
    if not rows:
        return {"map": float("nan"), "nmsd": float("nan"), "recall5": float("nan"), "n_videos": 0}
    ap, nmsd, r5 = (100.0 * float(v) for v in np.mean(rows, axis=0))
    return {"map": ap, "nmsd": nmsd, "recall5": r5, "n_videos": len(rows)}


# -- the whole fit ---------------------------------------------------------------
def split_samples(
    samples: Sequence[UserSample], val_fraction: float, seed: int
) -> tuple[list[UserSample], list[UserSample]]:
    """Seeded split by user id into (train, validation); at least one user on each side."""
    if len(samples) < 2:
        raise InputError(f"need at least 2 users (train and validation), got {len(samples)}")
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = sorted(range(len(samples)), key=lambda i: samples[i].user_id)
    perm = np.random.default_rng([seed, 1]).permutation(len(order))
    n_val = max(1, min(len(order) - 1, round(val_fraction * len(order))))
    val_idx = {order[i] for i in perm[:n_val]}
    return ([s for i, s in enumerate(samples) if i not in val_idx],
            [s for i, s in enumerate(samples) if i in val_idx])


def fit_fused(
    train: Sequence[UserSample],
    val: Sequence[UserSample],
    spec: FeatureSpec,
    seed: int = 0,
    epochs: int = 16,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    prior: TemporalPrior | None = None,
    progress: TrainProgress | None = None,
) -> tuple[FusedModel, FitReport]:
    """Train PHD-CA and SVM-D on ``train``, fit the fusion on ``val``; deterministic in ``seed``."""
    import torch

    if not train or not val:
        raise InputError("need training and validation users")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net, losses = train_fnn(train, config, epochs, rng, progress)
        shell = FusedModel(spec, config.k, np.zeros(config.k), 0.0, 0.0, 0.0, centre=config.centre)
        svm_w, svm_b = train_svm(train, shell, config, rng)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    model = FusedModel(spec, config.k, svm_w, svm_b, 1.0, 0.0, fnn_to_numpy(net, config.activation),
                       prior, config.centre)
    model.omega, model.omega_t, acc = fit_fusion(model, val)
    report = FitReport(len(train), len(val), [s.user_id for s in val], model.omega,
                       model.omega_t, losses, val_pair_accuracy=acc)
    report.val_metrics = {name: evaluate_samples(part, val, seed)
                          for name, part in part_models(model).items()}
    return model, report


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _has_pairs(sample: UserSample) -> bool:
    return bool((sample.labels == POSITIVE).any() and (sample.labels == NEGATIVE).any())


def train_content(
    dataset: Path,
    out: Path,
    seed: int = 0,
    epochs: int = 16,
    val_fraction: float = 0.1,
    progress: TrainProgress | None = None,
    base_model: Path | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
) -> TrainSummary:
    """Train PHD-CA + SVM-D on a dataset folder and write the model file ``out`` atomically.

    The temporal prior comes from ``base_model`` when given (whose feature
    spec must then equal the dataset's), else it is fitted on the training
    users' annotations (the copy inside the dataset), else there is none.
    Validation users take no part in any fit but the fusion weights.
    """
    import torch

    from phdcli.dataset import load_dataset
    from phdcli.evaluate import fit_prior
    from phdcli.model import check_compatible, load_model, save_model
    from phdcli.phd2 import load_annotations

    if epochs < 1:
        raise UsageError(f"epochs must be at least 1, got {epochs}")
    data = load_dataset(Path(dataset))
    prior: TemporalPrior | None = None
    prior_note = "none: no base model and no annotations in the dataset"
    if base_model is not None:
        base = load_model(Path(base_model))
        check_compatible(base, data.spec, f"{Path(dataset).name}'s features")
        prior = base.prior
        prior_note = f"taken from {Path(base_model).name}"

    samples = [s for s in data.samples if len(s.segments)]
    train, val = split_samples(samples, val_fraction, seed)
    if not any(_has_pairs(s) for s in train):
        raise InputError("no training user has both a positive and a negative segment")
    val_ids = {s.user_id for s in val}
    if prior is None and data.annotations is not None:
        users = [u for u in load_annotations(data.annotations) if u.user_id not in val_ids]
        try:
            prior = fit_prior(users)
            prior.fit_info.update({"annotations": data.manifest.get("annotations"),
                                   "excluded": "validation users"})
            prior_note = "fitted on the annotations of all but the validation users"
        except InputError as exc:
            log.warning("no temporal prior: %s", exc)

    model, report = fit_fused(train, val, data.spec, seed, epochs, config, prior, progress)
    model.provenance = {
        "trained_by": "phd train content",
        "backbone": data.backbone,
        "layer": data.spec.layer,
        "k": model.k,
        "training_data": {
            "dataset": Path(dataset).resolve().name,
            "annotations": data.manifest.get("annotations"),
            "annotations_sha256": data.manifest.get("annotations_sha256"),
            "n_train_users": report.n_train,
            "n_val_users": report.n_val,
            "val_users": sorted(val_ids),
        },
        "validation": report.val_metrics,
        "validation_pair_accuracy": report.val_pair_accuracy,
        "seed": seed,
        "epochs": epochs,
        "epoch_losses": report.epoch_losses,
        "config": config_dict(config),
        "h_time": prior_note,
        "omega": "grid search on validation users' pair accuracy",
        "torch": torch.__version__,
    }
    save_model(model, Path(out))
    fused = report.val_metrics["fused"]
    log.info("validation (%d users): mAP %.2f%%, nMSD %.2f%%, R@5 %.2f%%",
             report.n_val, fused["map"], fused["nmsd"], fused["recall5"])
    return TrainSummary(Path(out), report.n_train, report.n_val, model.omega, model.omega_t,
                        epochs, seed, report.val_metrics)


def evaluate_dataset(dataset: Path, model: Path) -> dict[str, float]:
    """`phd eval --dataset`: a model file with content terms on a built dataset.

    The measurement this repository cannot make without Sports-1M weights and
    PHD^2's videos; the dataset's feature spec must equal the model's.
    """
    from phdcli.dataset import load_dataset
    from phdcli.model import check_compatible, load_model

    data = load_dataset(Path(dataset))
    fused = load_model(Path(model))
    check_compatible(fused, data.spec, f"{Path(dataset).name}'s features")
    return {"model": str(model), **evaluate_samples(fused, data.samples),
            "random": evaluate_samples(None, data.samples)["map"]}
