"""One video's work for the feature store, the same whichever engine runs it.

A ``VideoJob`` says what a video must give (from the annotations alone);
``prepare`` does the CPU work before C3D (fetch, probe, shot detection,
placing the clips), ``finish`` pools the clip features into segment rows
and writes the shard. Between them an engine decodes ``clip_starts_s`` and
forwards the clips through C3D: in one process (``engines.local``) or on a
cluster (``engines.ray``). Every failure becomes an ``Outcome`` with the
stage and the reason, recorded in the store; nothing here raises for one
bad video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import DownloadError, PhdError
from phdcli.features.clips import pool_segments
from phdcli.features.spec import FeatureSpec
from phdcli.training.annotations import User
from phdcli.training.download import (
    DATASET_MAX_HEIGHT,
    YOUTUBE_URL,
    fetch_with_retries,
    find_video,
)
from phdcli.training.labels import gif_array, history_spans, history_videos
from phdcli.training.store import FeatureStore, Shard, ShardHeader, StoreKey, span_key

log = logging.getLogger("phd")

Span = tuple[float, float]


@dataclass(frozen=True)
class VideoJob:
    """What one video must give: segments (someone's last video) and each history user's GIFs."""

    youtube_id: str
    segments: bool
    gif_groups: tuple[tuple[Span, ...], ...] = ()
    annotated_duration_s: float = -1.0

    def spans(self, duration_s: float) -> np.ndarray:
        """(u, 2) the distinct history spans of all its users, clipped to the file; sorted."""
        keys = {span_key(a, b) for group in self.gif_groups
                for a, b in history_spans(np.asarray(group, float), duration_s)}
        return np.asarray(sorted(keys), dtype=float).reshape(-1, 2)

    def covered_by(self, header: ShardHeader) -> bool:
        if self.segments and not header.segments:
            return False
        need = {span_key(a, b) for a, b in self.spans(header.duration_s)}
        return need <= header.spans


def plan_jobs(users: Sequence[User], history_cap: int | None = None) -> list[VideoJob]:
    """Every video the users need, each once: last videos first, then history, in file order."""
    last: dict[str, float] = {}
    groups: dict[str, list[tuple[Span, ...]]] = {}
    durations: dict[str, float] = {}
    for user in users:
        last.setdefault(user.last.youtube_id, user.last.duration_s)
        for video in history_videos(user, history_cap):
            group = tuple((float(a), float(b)) for a, b in gif_array(video))
            groups.setdefault(video.youtube_id, [])
            if group not in groups[video.youtube_id]:
                groups[video.youtube_id].append(group)
            durations.setdefault(video.youtube_id, video.duration_s)
    order = list(dict.fromkeys([*last, *groups]))
    return [VideoJob(vid, vid in last, tuple(groups.get(vid, ())),
                     last.get(vid, durations.get(vid, -1.0))) for vid in order]


@dataclass(frozen=True)
class BuildContext:
    """Everything a worker needs, picklable (it travels to Ray workers)."""

    store_root: Path
    key: StoreKey
    videos_dir: Path
    c3d_weights: Path
    device: str = "auto"
    precision: str = "auto"
    batch_clips: int = 8
    download: bool = False
    url_template: str = YOUTUBE_URL
    max_height: int = DATASET_MAX_HEIGHT
    download_attempts: int = 3
    backoff_s: float = 2.0

    @property
    def spec(self) -> FeatureSpec:
        return self.key.spec

    def store(self) -> FeatureStore:
        return FeatureStore(self.store_root, self.key)

    def extractor(self) -> Any:
        from phdcli.features.extractor import FeatureExtractor

        # Training features are float (stored as fp16): auto never picks int8
        # here, so every worker of a build computes them the same way.
        return FeatureExtractor(self.spec, self.c3d_weights, self.device, self.precision,
                                batch_clips=self.batch_clips, auto_int8=False)


@dataclass
class Outcome:
    youtube_id: str
    ok: bool
    stage: str = ""
    reason: str = ""
    clips: int = 0  # clips forwarded through C3D for this video in this run
    duration_s: float = 0.0
    downloaded: bool = False
    attempts: int = 1


@dataclass
class Prepared:
    """A video ready to decode: the segments per kind and the clips they need."""

    job: VideoJob
    path: Path
    duration_s: float
    bounds: dict[str, np.ndarray]  # kind -> (n, 2) segments to compute
    owners: dict[str, np.ndarray]  # kind -> (c_k,) segment index of each clip entry
    clip_index: dict[str, np.ndarray]  # kind -> (c_k,) index into clip_starts_s
    clip_starts_s: np.ndarray  # (c,) unique, ascending: what to decode and forward
    reuse: Shard | None = None
    info: dict[str, Any] = field(default_factory=dict)
    downloaded: bool = False


def failed(job: VideoJob, stage: str, exc: BaseException | str, store: FeatureStore,
           attempts: int = 1) -> Outcome:
    """Record the failure in the store (stage, one-line reason) and return it as an outcome."""
    reason = exc if isinstance(exc, str) else (" ".join(str(exc).split()) or type(exc).__name__)
    if not isinstance(exc, str | PhdError):
        reason = f"internal error: {type(exc).__name__}: {reason}"
    log.warning("%s failed (%s): %s", job.youtube_id, stage, reason)
    try:
        store.record_failure(job.youtube_id, stage, reason, attempts)
    except OSError as err:  # the outcome still reaches the summary
        log.warning("could not record the failure of %s: %s", job.youtube_id, err)
    return Outcome(job.youtube_id, False, stage, reason, attempts=attempts)


def _locate(job: VideoJob, ctx: BuildContext) -> tuple[Path, bool, int]:
    path = find_video(ctx.videos_dir, job.youtube_id)
    if path is not None:
        return path, False, 1
    if not ctx.download:
        raise DownloadError(f"{job.youtube_id}: not in {ctx.videos_dir} (--download fetches it)")
    path, attempts = fetch_with_retries(job.youtube_id, ctx.videos_dir, ctx.url_template,
                                        ctx.download_attempts, ctx.backoff_s, ctx.max_height)
    return path, True, attempts


def prepare(job: VideoJob, ctx: BuildContext) -> Prepared | Outcome:
    """Fetch, probe, detect shots and place the clips; an Outcome when the video fails."""
    from phdcli.media.probe import probe
    from phdcli.media.segments import Segment, clip_starts, shot_segments
    from phdcli.training.evaluate import fixed_segment_bounds

    store = ctx.store()
    stage, attempts = "fetch", 1
    try:
        path, downloaded, attempts = _locate(job, ctx)
        stage = "probe"
        info = probe(path)
        old = store.read(job.youtube_id)  # rows an earlier run made stay valid
        bounds: dict[str, np.ndarray] = {}
        if job.segments and not (old and old.has_segments()):
            bounds["fixed"] = fixed_segment_bounds(info.duration_s)
            stage = "shots"
            shots = shot_segments(path, info.duration_s)
            bounds["shots"] = np.array([[s.start_s, s.end_s] for s in shots], dtype=float)
        known = old.span_index() if old else {}
        spans = [s for s in job.spans(info.duration_s) if span_key(*s) not in known]
        if spans:
            bounds["spans"] = np.asarray(spans, dtype=float)
    except Exception as exc:  # one bad video must not end a long build
        return failed(job, stage, exc, store, attempts)

    spec = ctx.spec
    starts: dict[float, int] = {}
    owners, clip_index = {}, {}
    for kind, kb in bounds.items():
        own, idx = [], []
        for j, (a, b) in enumerate(kb):
            for t in clip_starts(Segment(a, b), info.duration_s, spec.clip_fps,
                                 spec.clips_per_segment, spec.clip_frames):
                own.append(j)
                idx.append(starts.setdefault(round(t, 6), len(starts)))
        owners[kind], clip_index[kind] = np.asarray(own, np.int64), np.asarray(idx, np.int64)
    unique = np.asarray(list(starts), dtype=float)
    order = np.argsort(unique, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    clip_index = {k: rank[v] for k, v in clip_index.items()}
    meta = {"video_bytes": path.stat().st_size, "width": info.width, "height": info.height,
            "fps": info.fps}
    return Prepared(job, path, info.duration_s, bounds, owners, clip_index, unique[order],
                    old, meta, downloaded)


def finish(prep: Prepared, clip_feats: np.ndarray, ctx: BuildContext, runtime: str) -> Outcome:
    """Pool clip rows (c, D) into segment rows, merge what an earlier shard had, write it."""
    store = ctx.store()
    job = prep.job
    try:
        if len(clip_feats) != len(prep.clip_starts_s):
            raise PhdError(f"got {len(clip_feats)} clip features for "
                           f"{len(prep.clip_starts_s)} clips")
        shard = Shard(job.youtube_id, prep.duration_s)
        old = prep.reuse
        for kind, kb in prep.bounds.items():
            feats = clip_feats[prep.clip_index[kind]]
            shard.rows[kind] = pool_segments(feats, prep.owners[kind], len(kb)).astype(np.float16)
            shard.bounds[kind] = kb
        if old is not None:
            for kind in old.rows:
                if kind not in shard.rows:
                    shard.rows[kind], shard.bounds[kind] = old.rows[kind], old.bounds[kind]
                elif kind == "spans":
                    shard.rows[kind] = np.concatenate([old.rows[kind], shard.rows[kind]])
                    shard.bounds[kind] = np.concatenate([old.bounds[kind], shard.bounds[kind]])
        n_old = int(old.info.get("clips", 0)) if old else 0
        shard.info = {**prep.info, "clips": n_old + len(clip_feats), "runtime": runtime,
                      "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        store.write(shard)
    except Exception as exc:  # a full disk on one shard must not end the build
        return failed(job, "write", exc, store)
    return Outcome(job.youtube_id, True, clips=len(clip_feats), duration_s=prep.duration_s,
                   downloaded=prep.downloaded)
