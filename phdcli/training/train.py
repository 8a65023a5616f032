"""``phd train content`` and ``phd eval --dataset``: the fit (``phdcli.training.fit``) on a dataset.

The dataset's samples are read from their pack a batch at a time
(``phdcli.training.samples``), so training needs no machine the size of
PHD^2. The model file records the backbone its features came from
(``FusedModel.backbone_sha256``): scoring features of other weights is
refused (``phdcli.ranking.model.check_compatible``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import InputError, UsageError
from phdcli.ranking.prior import TemporalPrior
from phdcli.training.checks import OutputFile, check_seed
from phdcli.training.fit import TrainConfig, TrainProgress, fit_fused, split_indices
from phdcli.training.labels import has_pairs
from phdcli.training.validation import part_metrics, read_terms

log = logging.getLogger("phd")


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

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "n_train": self.n_train, "n_val": self.n_val,
                "omega": self.omega, "omega_t": self.omega_t, "epochs": self.epochs,
                "seed": self.seed, "validation": self.val_metrics}


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def train_content(
    dataset: Path,
    out: Path,
    seed: int = 0,
    epochs: int = 16,
    val_fraction: float = 0.1,
    progress: TrainProgress | None = None,
    base_model: Path | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    force: bool = False,
) -> TrainSummary:
    """Train PHD-CA + SVM-D on a dataset folder and write the model file ``out`` atomically.

    The temporal prior comes from ``base_model`` when given (whose feature
    spec and backbone must then match the dataset's), else it is fitted on
    the training users' annotations (the copy inside the dataset), else
    there is none. Validation users take no part in any fit but the fusion
    weights. ``out`` is checked before the dataset is opened (:class:`OutputFile`:
    not an input, not a folder, not an existing file without ``force``).
    """
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    check_seed(seed)
    target = OutputFile(Path(out), "--out", force)
    target.check([Path(dataset), base_model])  # before anything is loaded

    import torch

    from phdcli.ranking.model import check_compatible, load_model, save_model
    from phdcli.training.annotations import load_annotations
    from phdcli.training.dataset import load_dataset
    from phdcli.training.evaluate import fit_prior
    # The pack's files stay open until the model is written, and close on any error.
    with load_dataset(Path(dataset)) as data:
        source = f"{Path(dataset).name}'s features"
        prior: TemporalPrior | None = None
        prior_note = "none: no base model and no annotations in the dataset"
        if base_model is not None:
            base = load_model(Path(base_model))
            check_compatible(base, data.spec, source, data.backbone_sha256)
            prior = base.prior
            prior_note = f"taken from {Path(base_model).name}"

        samples = data.samples.subset(np.flatnonzero(data.samples.n_segments() > 0))
        ids = samples.user_ids()
        train_idx, val_idx = split_indices(ids, val_fraction, seed)
        train, val = samples.subset(train_idx), samples.subset(val_idx)
        if not any(has_pairs(lab) for lab in train.labels()):
            raise InputError("no training user has both a positive and a negative segment")
        val_ids = set(val.user_ids())
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
        model.backbone_sha256 = data.backbone_sha256
        model.provenance = {
            "trained_by": "phd train content",
            "backbone": data.backbone,
            "layer": data.spec.layer,
            "k": model.k,
            "training_data": {
                "dataset": Path(dataset).resolve().name,
                "annotations": data.manifest.get("annotations"),
                "annotations_sha256": data.manifest.get("annotations_sha256"),
                "history": data.manifest.get("history"),
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
        with target.writing() as tmp:
            save_model(model, tmp)
        fused = report.val_metrics["fused"]
        log.info("validation (%d users): mAP %.2f%%, nMSD %.2f%%, R@5 %.2f%%",
                 report.n_val, fused["map"], fused["nmsd"], fused["recall5"])
    return TrainSummary(Path(out), report.n_train, report.n_val, model.omega, model.omega_t,
                        epochs, seed, report.val_metrics)


def evaluate_dataset(dataset: Path, model: Path) -> dict[str, float]:
    """`phd eval --dataset`: a model file with content terms on a built dataset.

    The measurement this repository cannot make without Sports-1M weights and
    PHD^2's videos; the dataset's feature spec and backbone must be the model's.
    """
    from phdcli.ranking.model import check_compatible, load_model
    from phdcli.training.dataset import load_dataset

    with load_dataset(Path(dataset)) as data:
        fused = load_model(Path(model))
        check_compatible(fused, data.spec, f"{Path(dataset).name}'s features",
                         data.backbone_sha256)
        # One read of each user scores both (evaluate_samples' numbers, fused and random).
        terms = read_terms(fused, data.samples, train=False)
    metrics = part_metrics(fused, {"fused": fused, "random": None}, terms)
    return {"model": str(model), **metrics["fused"], "random": metrics["random"]["map"]}
