"""Fit the fused content model, PHD-CA + SVM-D (paper sections 4-5, method.md).

Everything here reads users through a ``SampleSet`` (``phdcli.training.samples``):
a list of ``UserSample`` in memory, so tests can prove the code learns on
synthetic users with no video, or a pack on disk that is read a batch at a
time, so memory does not grow with the number of users. The same users give
the same model either way. ``phdcli.training.train`` wraps this for a dataset
folder and writes the model file.

1. PHD-CA: an FNN on ``[s; mean(G)]`` (512-64, SELU, dropout 0.7 on the
   input and 0.2 between layers), trained on 5 positive/negative pairs per
   user per epoch with a pairwise ranking loss, RMSProp with weight decay,
   the learning rate halved every 4 epochs.
2. SVM-D: a linear ranker on the sorted cosine distances to the k = 20
   nearest history items (``FusedModel.history_distances``, same centring
   as at inference), same pairwise loss plus L2: a ranking SVM.
3. Late fusion: omega (and omega_t for the temporal prior) picked on
   validation users by the pairwise ranking accuracy they give.

What stays in memory: per user its labels, one batch of rows, and at most
``svm_max_pairs`` SVM-D pairs (k distances each): a linear ranker of k = 20
weights needs no more, and it bounds memory on PHD^2's 12k users.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from phdcli.errors import InputError, UsageError
from phdcli.features.spec import FeatureSpec
from phdcli.ranking.model import Fnn, FusedModel
from phdcli.ranking.prior import TemporalPrior
from phdcli.training.labels import NEGATIVE, POSITIVE, has_pairs
from phdcli.training.samples import SampleSet, UserSample, as_sample_set
from phdcli.training.validation import fusion_weights, part_metrics, part_models, read_terms

Samples = SampleSet | Sequence[UserSample]

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
    svm_max_pairs: int = 200_000  # fewer per user past 4,000 users: bounded memory

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
    samples: Samples,
    config: TrainConfig,
    epochs: int,
    rng: np.random.Generator,
    progress: TrainProgress | None = None,
) -> tuple[torch.nn.Sequential, list[float]]:
    """PHD-CA on the samples' labelled segments; returns the net and the mean loss per epoch."""
    import torch

    users = as_sample_set(samples)
    net = _build_fnn(2 * users.dim, config)
    opt = torch.optim.RMSprop(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_halve_every, gamma=0.5)
    labels = users.labels()
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
            p = torch.from_numpy(users.mean_history(batch[:, 0]))
            # Both sides in one call: a pair's two rows lie near each other in a pack (one read).
            rows = users.segment_rows(np.r_[batch[:, 0], batch[:, 0]],
                                      np.r_[batch[:, 1], batch[:, 2]])
            pos, neg = torch.from_numpy(rows[: len(batch)]), torch.from_numpy(rows[len(batch):])
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


def svm_pairs_per_user(labels: Sequence[np.ndarray], config: TrainConfig) -> int:
    """``svm_pairs_per_user``, lowered so that all users' pairs fit ``svm_max_pairs``."""
    n_users = sum(1 for lab in labels if has_pairs(lab))
    return max(1, min(config.svm_pairs_per_user, config.svm_max_pairs // max(n_users, 1)))


def train_svm(
    samples: Samples, shell: FusedModel, config: TrainConfig, rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Ranking SVM on d(s, G): (w (k,), b) in the raw distance units the model scores.

    The distances are standardised for the fit (they differ by hundredths
    of a cosine, far below a hinge margin of 1), then the scale is folded
    back into w and b. Users are read one at a time: what stays is the
    distance differences of the sampled pairs and running moments.
    """
    import torch

    users = as_sample_set(samples)
    labels = users.labels()
    pairs = sample_pairs(labels, svm_pairs_per_user(labels, config), rng)
    k = shell.k
    if len(pairs) == 0:
        return np.zeros(k), 0.0
    moments = _Moments(k)
    diffs = np.zeros((len(pairs), k))
    by_user = np.split(np.arange(len(pairs)), np.flatnonzero(np.diff(pairs[:, 0])) + 1)
    rows_of = {int(pairs[r[0], 0]): r for r in by_user if len(r)}
    for u in range(len(users)):
        d = _distances(users.sample(u), shell, "train")
        moments.add(d)
        if u in rows_of:
            r = rows_of[u]
            diffs[r] = d[pairs[r, 1]] - d[pairs[r, 2]]
    mu, sd = moments.mean, np.maximum(moments.std, 1e-6)
    x = torch.from_numpy(diffs / sd)
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


class _Moments:
    """Column mean and std of rows added in chunks (Chan et al.'s pairwise update)."""

    def __init__(self, k: int) -> None:
        self.n, self.mean, self._m2 = 0, np.zeros(k), np.zeros(k)

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        n_b, mean_b = len(rows), rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self._m2 / max(self.n, 1))


# -- the whole fit ---------------------------------------------------------------
def split_indices(
    user_ids: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split of users (by id) into (train, validation) indices; one at least on each side."""
    if len(user_ids) < 2:
        raise InputError(f"need at least 2 users (train and validation), got {len(user_ids)}")
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = sorted(range(len(user_ids)), key=lambda i: user_ids[i])
    perm = np.random.default_rng([seed, 1]).permutation(len(order))
    n_val = max(1, min(len(order) - 1, round(val_fraction * len(order))))
    val_idx = {order[i] for i in perm[:n_val]}
    return ([i for i in range(len(user_ids)) if i not in val_idx],
            [i for i in range(len(user_ids)) if i in val_idx])


def split_samples(
    samples: Sequence[UserSample], val_fraction: float, seed: int
) -> tuple[list[UserSample], list[UserSample]]:
    """``split_indices`` on a list of samples."""
    train, val = split_indices([s.user_id for s in samples], val_fraction, seed)
    return [samples[i] for i in train], [samples[i] for i in val]


def fit_fused(
    train: Samples,
    val: Samples,
    spec: FeatureSpec,
    seed: int = 0,
    epochs: int = 16,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    prior: TemporalPrior | None = None,
    progress: TrainProgress | None = None,
) -> tuple[FusedModel, FitReport]:
    """Train PHD-CA and SVM-D on ``train``, fit the fusion on ``val``; deterministic in ``seed``."""
    import torch

    train, val = as_sample_set(train), as_sample_set(val)
    if not len(train) or not len(val):
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
    # One read of each validation user: the fusion and every part's metrics use its terms.
    terms = read_terms(model, val)
    model.omega, model.omega_t, acc = fusion_weights(terms, model.prior is not None)
    report = FitReport(len(train), len(val), val.user_ids(), model.omega,
                       model.omega_t, losses, val_pair_accuracy=acc)
    report.val_metrics = part_metrics(model, part_models(model), terms, seed)
    return model, report


