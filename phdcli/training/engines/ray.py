"""The Ray engine: the same video jobs, spread over a Ray cluster (``pip install 'phdcli[ray]'``).

Stages stream; no video waits for another's download:

1. ``_prepare`` tasks (CPU; at most ``downloads`` at once): fetch (360p,
   retries with backoff, yt-dlp's archive), probe, shot detection, clip placement;
2. ``_decode`` tasks (CPU), one per chunk of ``chunk_clips`` clips: decoding
   is most of the cost, so a cluster's CPUs keep its GPUs fed;
3. ``FeatureWorker`` actors: one per GPU (CPU actors when the cluster has
   none), C3D loaded once per actor, batched in the precision ``phd`` picks;
4. ``_write`` tasks: pool the clip rows and write the shard atomically.

Faults: tasks are retried when their worker dies (``max_retries``), actors
restart and retry their calls; a video whose work still fails is recorded
in the store with its reason. A killed driver leaves only whole shards, so a
re-run does only what is missing. The decoded clips in flight are bounded
(``max_clips_in_flight``), so the object store never holds a whole dataset.
The cluster's own failures (an address that does not answer, a node that
does not start, a head lost mid-run) end the build with one ``ClusterError``
(``phdcli.cluster.session.cluster_faults``, the one place Ray's exceptions are
mapped; joining, the address and the head's watch are in ``phdcli.cluster``, shared
with ``phd suggest --engine ray``); the store keeps what was done.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.cluster.address import parse_address
from phdcli.cluster.session import (
    TASK_RETRIES,
    RaySession,
    cluster_faults,
    connect,
    is_cluster_fault,
    start_feature_workers,
)
from phdcli.training.engines import EngineProgress, OnOutcome
from phdcli.training.jobs import BuildContext, Outcome, Prepared, VideoJob, failed, finish, prepare

log = logging.getLogger("phd")

REPORT_EVERY_S = 30.0


def _remote_parts(ray: Any) -> tuple[Any, Any, Any]:
    """The remote functions, defined once Ray is imported."""

    @ray.remote(max_retries=TASK_RETRIES)
    def prepare_task(job: VideoJob, ctx: BuildContext) -> Prepared | Outcome:
        return prepare(job, ctx)

    @ray.remote(max_retries=TASK_RETRIES)
    def decode_task(path: Path, starts: np.ndarray, fps: float, frames: int) -> np.ndarray:
        from phdcli.media.decode import decode_clips

        return np.stack(list(decode_clips(path, starts, fps, frames)))

    @ray.remote(num_cpus=0, max_retries=TASK_RETRIES)
    def write_task(prep: Prepared, ctx: BuildContext, runtime: str, *chunks: np.ndarray
                   ) -> Outcome:
        feats = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        return finish(prep, feats, ctx, runtime)

    return prepare_task, decode_task, write_task


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 feature_workers: int | None = None, downloads: int | None = None,
                 chunk_clips: int = 32, max_clips_in_flight: int | None = None) -> None:
        self.address = parse_address(address) if address is not None else None
        self.num_cpus = num_cpus
        self.feature_workers, self.downloads = feature_workers, downloads
        self.chunk_clips = chunk_clips
        self.max_clips_in_flight = max_clips_in_flight

    def run(self, jobs: Sequence[VideoJob], ctx: BuildContext, on_outcome: OnOutcome,
            progress: EngineProgress | None = None) -> None:
        session = connect(self.address, self.num_cpus)
        try:
            with cluster_faults(session.ray, f"lost {session.watch.name}"):
                _Driver(session, self, ctx, on_outcome, progress).run(jobs)
        finally:
            session.close()


class _Driver:
    """The driver's loop: submit within bounds, collect outcomes as they end."""

    def __init__(self, session: RaySession, engine: RayEngine, ctx: BuildContext,
                 on_outcome: OnOutcome, progress: EngineProgress | None) -> None:
        ray = session.ray
        self.ray, self.ctx, self.on_outcome, self.progress = ray, ctx, on_outcome, progress
        self.watch = session.watch
        self.prepare, self.decode, self.write = _remote_parts(ray)
        workers = start_feature_workers(session, ctx.extractor, engine.feature_workers)
        self.workers, self.runtime = workers.actors, workers.runtime
        self.chunk = engine.chunk_clips
        self.max_prepare = engine.downloads or max(2, workers.cpus // 2)
        self.max_clips = engine.max_clips_in_flight or 8 * self.chunk * len(self.workers)
        self.next_worker = 0
        self.n_done = self.clips_done = self.clips_total = 0
        self.last_report = time.monotonic()

    def run(self, jobs: Sequence[VideoJob]) -> None:
        pending = deque(jobs)
        self.n_jobs = len(jobs)
        preparing: dict[Any, VideoJob] = {}
        ready: deque[Prepared] = deque()
        writing: dict[Any, tuple[VideoJob, int]] = {}
        in_flight = 0
        while pending or preparing or ready or writing:
            while pending and len(preparing) + len(ready) < self.max_prepare:
                job = pending.popleft()
                preparing[self.prepare.remote(job, self.ctx)] = job
            while ready and (in_flight == 0 or in_flight + len(ready[0].clip_starts_s)
                             <= self.max_clips):
                prep = ready.popleft()
                writing[self._submit(prep)] = (prep.job, len(prep.clip_starts_s))
                in_flight += len(prep.clip_starts_s)
            done, _ = self.ray.wait([*preparing, *writing], num_returns=1, timeout=1.0)
            self.watch.check()
            for ref in done:
                if ref in preparing:
                    job = preparing.pop(ref)
                    result = self._get(ref, job, "prepare")
                    if isinstance(result, Prepared):
                        self.clips_total += len(result.clip_starts_s)
                        ready.append(result)
                    else:
                        self._report(result)
                else:
                    job, n_clips = writing.pop(ref)
                    in_flight -= n_clips
                    self.clips_done += n_clips
                    self._report(self._get(ref, job, "decode"))
            self._log_now_and_then()

    def _submit(self, prep: Prepared) -> Any:
        spec = self.ctx.spec
        feats = []
        for i in range(0, len(prep.clip_starts_s), self.chunk):
            clips = self.decode.remote(prep.path, prep.clip_starts_s[i:i + self.chunk],
                                       spec.clip_fps, spec.clip_frames)
            worker = self.workers[self.next_worker % len(self.workers)]
            self.next_worker += 1
            feats.append(worker.forward.remote(clips))
        return self.write.remote(prep, self.ctx, self.runtime, *feats)

    def _get(self, ref: Any, job: VideoJob, stage: str) -> Any:
        """The task's result; an error (after Ray's own retries) fails this video only, and
        a failure of the cluster itself ends the build (not recorded against the video)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            return failed(job, stage, cause, self.ctx.store())
        except self.ray.exceptions.RayError as exc:  # worker or actor died past its retries
            if is_cluster_fault(self.ray, exc):
                raise
            reason = f"ray worker lost after {TASK_RETRIES} retries ({type(exc).__name__})"
            return failed(job, "worker", reason, self.ctx.store())

    def _report(self, outcome: Outcome) -> None:
        self.n_done += 1
        self.on_outcome(outcome)
        if self.progress is not None:
            self.progress("videos", self.n_done, self.n_jobs)
            self.progress("clips", self.clips_done, self.clips_total)

    def _log_now_and_then(self) -> None:
        """A line every 30 s: a multi-day build runs under nohup, with no bar to look at."""
        now = time.monotonic()
        if now - self.last_report >= REPORT_EVERY_S:
            self.last_report = now
            log.log(25, "ray: %d/%d videos, %d/%d clips", self.n_done, self.n_jobs,
                    self.clips_done, self.clips_total)
