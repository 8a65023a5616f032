"""The fused ranking model (method.md, Eq. 2-4, plus the temporal prior).

    h(s, G) = h_FNN([s; mean(G)]) + omega * h_SVM(d(s, G)) + omega_t * h_time(s)

Pure numpy at inference: scoring needs no torch, so a warm ``phd suggest``
(features cached) never imports it. A model file is safetensors (the
tensors) with one JSON document in its metadata under ``"phd"`` (the feature
spec, k, fusion weights, the prior and where it all came from).

A model also records the backbone its content terms were fitted on: the
sha256 of the C3D weights file (``backbone_sha256``), or ``"any"`` for a
model whose content terms were fitted on no features (the bundled model:
hand-set max-similarity, no FNN), which works with any weights of its
family. ``check_compatible`` refuses features of other weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import WeightsError
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import atomic_path
from phdcli.ranking.prior import TemporalPrior

MODEL_FORMAT = "phd-fused/1"
CENTRE_MODES = ("none", "video_mean")
ANY_BACKBONE = "any"


@dataclass
class Fnn:
    """PHD-CA's scorer: Linear-act-Linear-act-Linear on [s; mean history].

    ``weights[i]`` is (out, in) like ``torch.nn.Linear`` so trained torch
    modules save without transposes.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str = "selu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (n, 2D) -> (n,)"""
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w.T + b
            if i < len(self.weights) - 1:
                x = _selu(x) if self.activation == "selu" else np.maximum(x, 0.0)
        return x[:, 0]


def _selu(x: np.ndarray) -> np.ndarray:
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


@dataclass
class ScoreTerms:
    """Each term of the fused score, per segment (for ranking and --explain)."""

    fnn: np.ndarray
    svm: np.ndarray
    time: np.ndarray
    total: np.ndarray
    nearest_index: np.ndarray  # index into the history, -1 when it is empty
    nearest_similarity: np.ndarray  # cosine similarity used by SVM-D (nan when empty)

    def with_rows(self, rows: np.ndarray, part: ScoreTerms) -> ScoreTerms:
        """These terms with ``rows`` replaced by ``part``'s (scored with ``rows=``)."""
        def put(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
            out = mine.copy()
            out[rows] = theirs
            return out

        return ScoreTerms(*(put(getattr(self, f.name), getattr(part, f.name))
                            for f in fields(ScoreTerms)))


def squared_norms(history_feats: np.ndarray) -> np.ndarray:
    """|g|^2 of each history row (float32), for scoring against one history twice."""
    hist = np.asarray(history_feats, dtype=np.float32)
    return np.einsum("md,md->m", hist, hist)


def fuse(fnn: np.ndarray, svm: np.ndarray, time: np.ndarray, omega: float,
         omega_t: float) -> np.ndarray:
    """The late fusion of the unweighted terms, the one place it is written: scoring,
    the fusion weights' grid search and the per-part metrics all sum in this order."""
    return fnn + omega * svm + omega_t * time


@dataclass
class FusedModel:
    spec: FeatureSpec
    k: int
    svm_w: np.ndarray  # (k,) weights on the sorted cosine distances
    svm_b: float
    omega: float
    omega_t: float
    fnn: Fnn | None = None
    prior: TemporalPrior | None = None
    centre: str = "video_mean"
    provenance: dict[str, Any] = field(default_factory=dict)
    backbone_sha256: str = ANY_BACKBONE  # the C3D weights its content terms were fitted on

    def active_terms(self, history_size: int) -> tuple[str, ...]:
        """The terms that can tell segments apart with a history of ``history_size``
        GIFs, in the JSON's words: ``phd-ca`` (content), ``svm-d`` (nearest
        history GIFs), ``prior`` (position in the video)."""
        terms = []
        if self.fnn is not None:  # FNN([s; 0]) still reads s on a cold start
            terms.append("phd-ca")
        if history_size > 0 and self.omega != 0 and np.any(self.svm_w != 0):
            terms.append("svm-d")
        if self.prior is not None and self.omega_t != 0:
            terms.append("prior")
        return tuple(terms)

    def needs_features(self, history_size: int) -> bool:
        """Whether any term reads the segments' C3D features: on a cold start
        (no history) without a content FNN, C3D cannot change the ranking."""
        return bool({"phd-ca", "svm-d"} & set(self.active_terms(history_size)))

    def score(
        self,
        segment_feats: np.ndarray,
        history_feats: np.ndarray,
        start_s: np.ndarray,
        end_s: np.ndarray,
        duration_s: float,
        rows: np.ndarray | None = None,
        history_sq: np.ndarray | None = None,
    ) -> ScoreTerms:
        """segment_feats (n, D), history_feats (m, D) with m >= 0 -> ScoreTerms.

        An empty history is the cold start: p = 0 and d = 0, so the content
        terms are constant and the prior alone orders the segments.
        ``rows``: score only these segments (terms in their order); the
        video-mean centring still sees every segment. The fine pass of
        ``rank_segments`` rescores its candidates so, not the whole video.
        ``history_sq``: :func:`squared_norms` of the history, when the caller
        scores against it more than once.
        """
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            start_s, end_s = np.asarray(start_s)[rows], np.asarray(end_s)[rows]
        n = len(segment_feats) if rows is None else len(rows)
        fnn = np.zeros(n)
        if self.fnn is not None:
            mean_hist = (
                history_feats.mean(axis=0)
                if len(history_feats)
                else np.zeros(segment_feats.shape[1], dtype=segment_feats.dtype)
            )
            mine = segment_feats if rows is None else segment_feats[rows]
            x = np.concatenate([mine, np.broadcast_to(mean_hist, mine.shape)], 1)
            fnn = self.fnn(x.astype(np.float64))

        dists, nearest, similarity = self.history_distances(segment_feats, history_feats, rows,
                                                            history_sq)
        svm = dists @ self.svm_w + self.svm_b
        time = (
            self.prior.score(np.asarray(start_s), np.asarray(end_s), duration_s)
            if self.prior is not None
            else np.zeros(n)
        )
        total = fuse(fnn, svm, time, self.omega, self.omega_t)
        return ScoreTerms(fnn, self.omega * svm, self.omega_t * time, total, nearest, similarity)

    def history_distances(
        self, segment_feats: np.ndarray, history_feats: np.ndarray,
        rows: np.ndarray | None = None, history_sq: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SVM-D's input: (n, k) cosine distances to the k nearest history items.

        Sorted ascending; zero-filled when the history has fewer than k items.
        With ``centre="video_mean"`` both sides are centred on the video's
        mean segment feature first: post-ReLU C3D features share a large
        common component that otherwise squeezes all cosines towards 1
        (stack.md, "Near-copy retrieval"). ``rows``: only these segments'.
        """
        n = len(segment_feats) if rows is None else len(rows)
        dists = np.zeros((n, self.k))
        nearest = np.full(n, -1, dtype=np.int64)
        similarity = np.full(n, np.nan)
        if len(history_feats) == 0 or n == 0:
            return dists, nearest, similarity
        take = min(self.k, len(history_feats))
        top, top_sims = self._nearest(segment_feats, history_feats, rows, take, history_sq)
        dists[:, :take] = 1.0 - top_sims
        return dists, top[:, 0], top_sims[:, 0]

    def _nearest(self, segment_feats: np.ndarray, history_feats: np.ndarray,
                 rows: np.ndarray | None, take: int, history_sq: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``take`` most similar history items: (n, take) indices and
        float64 cosines, best first; rows are ``rows`` of the segments (all when
        None), centred on the mean of all segments when asked.

        The history is the large side (R7: 10,000 GIFs are 164 MB of float32),
        so it is read once, as given, and only (m,) and (m, n) arrays are made
        from it. One float32 matmul gives (s-c).g and g.c (c is its last
        column), so the centred history (g - c) is never materialised:
        (s-c).(g-c) = (s-c).g - (s-c).c and |g-c|^2 = |g|^2 - 2 g.c + |c|^2.
        history @ rows.T rather than rows @ history.T: the same numbers, and
        with few rows BLAS reads the history instead of repacking it (2x).
        The items are chosen by (s-c).(g-c) / |g-c|, the cosine times the
        row's constant 1 / |s-c|, so cosines are divided out for the chosen
        ones only; argpartition keeps the choice linear in the history's size.
        """
        seg = np.asarray(segment_feats, dtype=np.float32)
        hist = np.asarray(history_feats, dtype=np.float32)
        centre = (seg.mean(axis=0) if self.centre == "video_mean"
                  else np.zeros(seg.shape[1], dtype=np.float32))
        mine = (seg if rows is None else seg[rows]) - centre
        products = hist @ np.concatenate([mine, centre[None]]).T  # (m, n + 1)
        if history_sq is None:
            history_sq = squared_norms(hist)
        hist_sq = history_sq - 2.0 * products[:, -1] + centre @ centre
        scaled = products[:, :-1] - (mine @ centre)[None, :]
        scaled *= (1.0 / np.sqrt(np.maximum(hist_sq, 1e-24)))[:, None]
        scaled = np.ascontiguousarray(scaled.T)  # (n, m): argpartition is faster along rows
        m = len(hist)
        top = np.argpartition(scaled, m - take, axis=1)[:, m - take:]  # (n, take), any order
        sims = (np.take_along_axis(scaled, top, axis=1).astype(np.float64)
                / np.maximum(np.linalg.norm(mine, axis=1), 1e-12)[:, None])
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(sims, order, axis=1)

    # -- files ------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "features": self.spec.to_dict(),
            "k": self.k,
            "omega": self.omega,
            "omega_t": self.omega_t,
            "centre": self.centre,
            "backbone_sha256": self.backbone_sha256,
            "fnn": None
            if self.fnn is None
            else {"layers": len(self.fnn.weights), "activation": self.fnn.activation},
            "prior": None if self.prior is None else self.prior.to_dict(),
            "provenance": self.provenance,
        }


def save_model(model: FusedModel, path: Path) -> None:
    from safetensors.numpy import save_file

    tensors = {
        "svm.w": np.asarray(model.svm_w, dtype=np.float32),
        "svm.b": np.asarray([model.svm_b], dtype=np.float32),
    }
    if model.fnn is not None:
        for i, (w, b) in enumerate(zip(model.fnn.weights, model.fnn.biases, strict=True)):
            tensors[f"fnn.{i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            tensors[f"fnn.{i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
    meta = json.dumps(model.metadata(), indent=1, sort_keys=True)
    with atomic_path(Path(path), suffix=".part.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"phd": meta})


def load_model(path: Path) -> FusedModel:
    """Load a model file; any problem is one WeightsError line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="np") as fh:
            raw = (fh.metadata() or {}).get("phd")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path.name} is not a phd model file ({exc})") from None
    if raw is None:
        raise WeightsError(f"{path.name} has no phd metadata: not a phd model file")
    try:
        meta = json.loads(raw)
        if meta.get("format") != MODEL_FORMAT:
            raise WeightsError(f"{path.name}: unsupported model format {meta.get('format')!r}")
        k = int(meta["k"])
        svm_w = tensors["svm.w"].astype(np.float64)
        if svm_w.shape != (k,):
            raise WeightsError(f"{path.name}: svm.w has shape {svm_w.shape}, expected ({k},)")
        fnn = None
        if meta.get("fnn"):
            n_layers = int(meta["fnn"]["layers"])
            fnn = Fnn(
                [tensors[f"fnn.{i}.weight"].astype(np.float64) for i in range(n_layers)],
                [tensors[f"fnn.{i}.bias"].astype(np.float64) for i in range(n_layers)],
                str(meta["fnn"].get("activation", "selu")),
            )
        centre = str(meta.get("centre", "none"))
        if centre not in CENTRE_MODES:
            raise WeightsError(f"{path.name}: unknown centring {centre!r}")
        return FusedModel(
            spec=FeatureSpec.from_dict(meta["features"]),
            k=k,
            svm_w=svm_w,
            svm_b=float(tensors["svm.b"][0]),
            omega=float(meta["omega"]),
            omega_t=float(meta["omega_t"]),
            fnn=fnn,
            prior=TemporalPrior.from_dict(meta["prior"]) if meta.get("prior") else None,
            centre=centre,
            provenance=dict(meta.get("provenance", {})),
            backbone_sha256=_recorded_backbone(meta),
        )
    except WeightsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path.name}: malformed model file ({exc!r})") from None


def _recorded_backbone(meta: dict[str, Any]) -> str:
    """The backbone a file records; files from before the field: the sha prefix that
    ``phd train content`` put in the provenance ("family@sha12"), else any."""
    if "backbone_sha256" in meta:
        return str(meta["backbone_sha256"])
    legacy = str(meta.get("provenance", {}).get("backbone", ""))
    prefix = legacy.rpartition("@")[2]
    return prefix if meta.get("fnn") and len(prefix) >= 12 else ANY_BACKBONE


DEFAULT_MODEL_NAME = "phd-fused-v0.safetensors"


def default_model_path() -> Path:
    """The bundled model, wherever phd is installed (see paths.bundled_file)."""
    from phdcli.paths import bundled_file

    return bundled_file(DEFAULT_MODEL_NAME)


def check_compatible(
    model: FusedModel, features: FeatureSpec, source: str = "the features",
    backbone_sha256: str | None = None,
) -> None:
    """Refuse features made another way than the model's: backbone weights, layer, sampling.

    ``backbone_sha256`` is the sha256 of the C3D weights the features come
    from (None: not known to the caller, only the spec is checked).
    """
    mine = model.backbone_sha256
    if (backbone_sha256 is not None and mine != ANY_BACKBONE
            and backbone_sha256 != ANY_BACKBONE and not backbone_sha256.startswith(mine)):
        raise WeightsError(
            f"the model was trained on features of C3D weights {mine[:12]}, {source} come from "
            f"weights {backbone_sha256[:12]}: use the weights it was trained with "
            "(--c3d-weights) or a model trained on these"
        )
    if (features.family, features.layer) != (model.spec.family, model.spec.layer):
        raise WeightsError(
            f"the model expects {model.spec.family}/{model.spec.layer} features, "
            f"{source} are {features.family}/{features.layer}"
        )
    if features != model.spec:
        raise WeightsError(
            f"the model expects features sampled as {model.spec.to_dict()}, "
            f"{source} are {features.to_dict()}"
        )
