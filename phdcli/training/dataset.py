"""Training data for PHD-CA + SVM-D from PHD^2 annotations (paper section 5, "Data Setup").

``build_dataset`` runs in two steps:

1. **The feature store** (``phdcli.training.store``): every video the
   annotations name gets its C3D features once, whoever needs them: its
   fixed 5 s segments and detected shots (shots over 15 s cut into 5 s
   chunks, the paper's training segments) when it is some user's last
   video, and the union of each user's GIFs on it when it is in their
   history. An engine (``local`` or ``ray``, ``phdcli.training.engines``)
   runs the video jobs; a re-run does only the videos the store lacks.
2. **The samples** (``phdcli.training.samples``): per user, the last video's
   shots with their labels (``labels.segment_labels``), its fixed segments,
   the user's GIFs on it, and the history: one feature per GIF span of all
   the user's earlier videos (the paper's G; ``history_cap`` keeps the most
   recent N videos only). Assembled from the store without running C3D, and
   packed so that training reads a batch at a time.

Layout of a dataset folder::

    dataset.json          manifest: annotations, feature spec, backbone, store, counts, failures
    annotations.csv       a copy of the annotations (the temporal prior is fitted on them)
    store/                the feature store (unless --store puts it elsewhere, e.g. shared)
    samples/              the packed per-user samples (phdcli.training.samples)

What may be built where (``-o`` checked before any work, one build per
folder at a time, a folder built from other annotations, features or weights
refused rather than mixed unless ``--force``) is ``phdcli.training.folder``'s.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phdcli import fsutil
from phdcli.cluster.address import check_engine_options
from phdcli.errors import InputError, PhdError, Stopped, UsageError
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import atomic_path, atomic_write_text, sha256_file
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.training.annotations import User, load_annotations
from phdcli.training.checks import same_file
from phdcli.training.download import YOUTUBE_URL
from phdcli.training.engines import Engine, get_engine
from phdcli.training.folder import (
    ANNOTATIONS_COPY,
    DATASET_FORMAT,
    MANIFEST,
    SAMPLES_DIR,
    STORE_DIR,
    build_lock,
    check_build_out,
    read_manifest,
    start_manifest,
)
from phdcli.training.jobs import BuildContext, Outcome, VideoJob, plan_jobs
from phdcli.training.labels import (
    LABEL_RULE,
    gif_array,
    history_spans,
    history_videos,
    merge_spans,
    segment_labels,
)
from phdcli.training.samples import PackedSamples, PackWriter, UserSample
from phdcli.training.store import FeatureStore, Shard, StoreKey, span_key

log = logging.getLogger("phd")

# progress(stage, done, total): stages "videos", "clips", "users".
DatasetProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildConfig:
    annotations: Path
    videos_dir: Path
    out: Path
    store: Path | None = None  # None: <out>/store
    spec: FeatureSpec = FeatureSpec()
    c3d_weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_clips: int = 8
    download: bool = False
    url_template: str = YOUTUBE_URL
    download_attempts: int = 3
    backoff_s: float = 2.0
    history_cap: int | None = None  # None: every history video (the paper's G)
    retry_failed: bool = True
    engine: str = "local"
    address: str | None = None
    force: bool = False  # build in a folder holding other files, or rebuild another dataset

    def __post_init__(self) -> None:
        if self.history_cap is not None and self.history_cap < 0:
            raise UsageError(f"the history cap must be >= 0, got {self.history_cap}")
        if self.batch_clips < 1 or self.download_attempts < 1:
            raise UsageError("batch size and download attempts must be at least 1")
        check_engine_options(self.engine, self.address)
        if self.precision.strip().lower() == "int8":
            # The store keeps float features that every later model trains on;
            # int8 is a ranking-time speed-up, checked per user and video.
            raise UsageError("training features are computed in bf16 or fp32: "
                             "--precision int8 is for phd suggest")


@dataclass
class DatasetSummary:
    out: Path
    store: Path
    engine: str
    n_users: int = 0  # users in the annotations
    n_users_built: int = 0  # users in the samples
    n_users_skipped: int = 0  # last video not in the store (missing or failed)
    videos_total: int = 0
    videos_done: int = 0  # computed by this run
    videos_skipped: int = 0  # already in the store: nothing to do
    videos_failed: int = 0  # failed in this run, or earlier and not retried
    failures: list[dict[str, Any]] = field(default_factory=list)  # youtube_id, stage, reason
    clips_forwarded: int = 0  # C3D forward passes in this run
    hours_done: float = 0.0  # hours of video processed by this run
    hours_in_store: float = 0.0  # hours of this dataset's videos in the store
    n_downloaded: int = 0
    history_spans_missing: int = 0  # history GIF spans whose video is not in the store
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(out=str(self.out), store=str(self.store))
        return doc


@dataclass
class Dataset:
    """An opened dataset folder; it holds the pack's files open until ``close`` (or ``with``)."""

    spec: FeatureSpec
    backbone: str
    backbone_sha256: str
    samples: PackedSamples
    manifest: dict[str, Any]
    annotations: Path | None  # the copy inside the dataset, if there is one

    def close(self) -> None:
        self.samples.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- building -----------------------------------------------------------------
def build_dataset(config: BuildConfig, engine: Engine | None = None,
                  progress: DatasetProgress | None = None) -> DatasetSummary:
    """Fill the feature store for the annotations, then assemble the samples; see the docstring.

    A video that fails (missing, gone, corrupt) is recorded with its reason
    and counted, never fatal; users whose last video is not in the store
    are left out and counted; a missing history video only shortens a history.
    """
    from phdcli.features.registry import resolve_weights_path

    started = time.monotonic()
    annotations, out = Path(config.annotations), Path(config.out)
    check_build_out(out, config.force, [annotations, Path(config.videos_dir), config.c3d_weights])
    users = load_annotations(annotations)
    weights = resolve_weights_path(config.c3d_weights)
    key = StoreKey(config.spec, cached_sha256(weights))
    store_root = Path(config.store) if config.store is not None else out / STORE_DIR
    base = {
        "format": DATASET_FORMAT,
        "annotations": annotations.name,
        "annotations_sha256": sha256_file(annotations),
        "features": config.spec.to_dict(),
        "backbone": f"{config.spec.family}@{key.backbone_sha256[:12]}",
        "backbone_sha256": key.backbone_sha256,
        "segments": {
            "train": "detected shots (PySceneDetect), shots over 15 s cut into 5 s chunks",
            "test": "fixed 5 s segments (evaluate.fixed_segment_bounds)",
        },
        "labels": LABEL_RULE,
    }
    with build_lock(out):  # one build per folder at a time
        return _build_locked(config, users, weights, key, store_root, base, engine, progress,
                             started)


def _build_locked(config: BuildConfig, users: list[User], weights: Path, key: StoreKey,
                  store_root: Path, base: dict[str, Any], engine: Engine | None,
                  progress: DatasetProgress | None, started: float) -> DatasetSummary:
    annotations, out = Path(config.annotations), Path(config.out)
    start_manifest(out, base, config.force)
    fsutil.clean_stale_temps(out)  # what a killed build left: a half-written pack, a copy's temp
    copy = out / ANNOTATIONS_COPY
    if not same_file(copy, annotations) and (
            not copy.is_file() or sha256_file(copy) != base["annotations_sha256"]):
        with atomic_path(copy, suffix=".part.csv") as tmp:
            shutil.copyfile(annotations, tmp)
    store = FeatureStore(store_root, key).open()
    store.sweep_temp()

    engine = engine or get_engine(config.engine, config.address)
    summary = DatasetSummary(out, store.dir, engine.name, n_users=len(users))
    jobs = plan_jobs(users, config.history_cap)
    todo = _todo(jobs, store, config.retry_failed, summary)
    ctx = BuildContext(store_root, key, Path(config.videos_dir), weights, config.device,
                       config.precision, config.batch_clips, config.download,
                       config.url_template, download_attempts=config.download_attempts,
                       backoff_s=config.backoff_s)
    Path(config.videos_dir).mkdir(parents=True, exist_ok=True)
    log.info("%d videos: %d in the store, %d to do (engine %s)", len(jobs),
             summary.videos_skipped, len(todo), engine.name)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.ok:
            summary.videos_done += 1
            summary.clips_forwarded += outcome.clips
            summary.hours_done += outcome.duration_s / 3600
            summary.hours_in_store += outcome.duration_s / 3600
            summary.n_downloaded += int(outcome.downloaded)
        else:
            summary.videos_failed += 1
            summary.failures.append({"youtube_id": outcome.youtube_id, "stage": outcome.stage,
                                     "reason": outcome.reason})

    if todo:
        try:
            engine.run(todo, ctx, on_outcome, progress)
        except PhdError as exc:  # the engine as a whole failed (a lost cluster): what was done
            summary.wall_s = time.monotonic() - started
            raise Stopped(exc, summary.to_dict()) from exc
    built, skipped, missing = assemble(users, store, out / SAMPLES_DIR, config.history_cap,
                                       progress)
    summary.n_users_built, summary.n_users_skipped = built, skipped
    summary.history_spans_missing = missing
    summary.wall_s = time.monotonic() - started
    summary.failures.sort(key=lambda f: f["youtube_id"])
    counts = {k: v for k, v in summary.to_dict().items() if k not in ("failures", "out", "store")}
    store.write_manifest({**counts, "failures": summary.failures})
    manifest = {**base, "status": "complete", "store": str(store.dir.resolve()),
                "history": {"cap_videos": config.history_cap,
                            "rule": "union of the user's GIFs per history video, "
                                    + ("all history videos" if config.history_cap is None
                                       else f"{config.history_cap} most recent videos")},
                "counts": counts, "failures": summary.failures}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return summary


def _todo(jobs: Sequence[VideoJob], store: FeatureStore, retry_failed: bool,
          summary: DatasetSummary) -> list[VideoJob]:
    """The jobs the store does not cover yet; headers are read in threads (NFS latency)."""
    summary.videos_total = len(jobs)
    with ThreadPoolExecutor(16) as pool:
        headers = list(pool.map(lambda j: store.header(j.youtube_id), jobs))
    todo = []
    for job, header in zip(jobs, headers, strict=True):
        if header is not None and job.covered_by(header):
            summary.videos_skipped += 1
            summary.hours_in_store += header.duration_s / 3600
            continue
        record = None if retry_failed else store.failure(job.youtube_id)
        if record is not None:
            summary.videos_failed += 1
            summary.failures.append({k: record.get(k) for k in ("youtube_id", "stage", "reason")})
            continue
        todo.append(job)
    return todo


# -- the samples --------------------------------------------------------------
class _ShardCache:
    """The last few shards read: a history video shared by nearby users is read once."""

    def __init__(self, store: FeatureStore, size: int = 64) -> None:
        self.store, self.size = store, size
        self.shards: OrderedDict[str, Shard | None] = OrderedDict()

    def get(self, youtube_id: str) -> Shard | None:
        if youtube_id in self.shards:
            self.shards.move_to_end(youtube_id)
            return self.shards[youtube_id]
        shard = self.store.read(youtube_id)
        self.shards[youtube_id] = shard
        if len(self.shards) > self.size:
            self.shards.popitem(last=False)
        return shard


def user_sample(user: User, shards: _ShardCache, history_cap: int | None
                ) -> tuple[UserSample | None, np.ndarray, list[str], int]:
    """(sample or None, history bounds, history video ids, history spans missing)."""
    last = shards.get(user.last.youtube_id)
    if last is None or not last.has_segments():
        return None, np.zeros((0, 2)), [], 0
    dim = last.rows["fixed"].shape[1]
    rows, bounds, ids, missing = [], [], [], 0
    for video in history_videos(user, history_cap):
        shard = shards.get(video.youtube_id)
        if shard is None:
            missing += len(merge_spans(gif_array(video)))
            continue
        index = shard.span_index()
        for span in history_spans(video, shard.duration_s):
            i = index.get(span_key(*span))
            if i is None:  # not planned for this video (another cap or annotations)
                missing += 1
                continue
            rows.append(shard.rows["spans"][i])
            bounds.append(span)
            ids.append(video.youtube_id)
    gifs = gif_array(user.last)
    sample = UserSample(
        history=np.stack(rows) if rows else np.zeros((0, dim), np.float16),
        segments=last.rows["shots"],
        labels=segment_labels(last.bounds["shots"], gifs),
        bounds_s=last.bounds["shots"],
        duration_s=last.duration_s,
        gifs_s=gifs,
        user_id=user.user_id,
        test_segments=last.rows["fixed"],
        test_bounds_s=last.bounds["fixed"],
    )
    return sample, np.asarray(bounds, dtype=float).reshape(-1, 2), ids, missing


def assemble(users: Sequence[User], store: FeatureStore, folder: Path, history_cap: int | None,
             progress: DatasetProgress | None = None) -> tuple[int, int, int]:
    """Write the samples pack from the store (no C3D); (users built, skipped, spans missing)."""
    shards = _ShardCache(store)
    writer = PackWriter(folder)
    built = skipped = missing = 0
    try:
        for done, user in enumerate(users, start=1):
            sample, hist_bounds, hist_ids, n_missing = user_sample(user, shards, history_cap)
            missing += n_missing
            if sample is None:
                skipped += 1
            else:
                writer.add(sample, user.last.youtube_id, hist_bounds, hist_ids)
                built += 1
            if progress is not None:
                progress("users", done, len(users))
    except BaseException:
        writer.abort()
        raise
    writer.close({"history_cap_videos": history_cap, "store": str(store.dir)})
    return built, skipped, missing


# -- reading ------------------------------------------------------------------
def load_dataset(path: Path) -> Dataset:
    """Open a folder written by ``build_dataset``: the manifest and the packed samples."""
    path = Path(path)
    manifest, spec = read_manifest(path)  # checked: a damaged one says to rebuild
    if not (path / SAMPLES_DIR / "pack.json").is_file():
        raise InputError(f"{path}: the dataset holds no samples (is its build finished?)")
    samples = PackedSamples(path / SAMPLES_DIR)
    try:
        if not len(samples):
            raise InputError(f"{path}: the dataset holds no user")
        copy = path / ANNOTATIONS_COPY
        return Dataset(
            spec=spec,
            backbone=str(manifest["backbone"]),
            backbone_sha256=str(manifest.get("backbone_sha256", "any")),
            samples=samples,
            manifest=manifest,
            annotations=copy if copy.is_file() else None,
        )
    except BaseException:
        samples.close()
        raise
