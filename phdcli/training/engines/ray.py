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
(``_cluster_faults``, the one place Ray's exceptions are mapped; the address
and the head's watch are in ``engines.cluster``); the store keeps what was done.
``ray`` is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phdcli import procs
from phdcli.errors import ClusterError, Interrupted, PhdError, UsageError
from phdcli.training.engines import EngineProgress, OnOutcome
from phdcli.training.engines.cluster import HeadWatch, RayAddress, check_reachable, parse_address
from phdcli.training.jobs import BuildContext, Outcome, Prepared, VideoJob, failed, finish, prepare

log = logging.getLogger("phd")

TASK_RETRIES = 3
REPORT_EVERY_S = 30.0
# Joining a cluster: one attempt at its GCS, each step bounded, so an address where
# something listens but no GCS answers fails in about 12 s instead of Ray's 20 attempts
# of 40 s each. The attempt is one C++ call that sees no signal: a Ctrl-C or SIGTERM
# during it acts when it returns (9 s at most). Only when joining; the user's values win.
JOIN_LIMITS = {
    "RAY_gcs_rpc_server_connect_timeout_s": "2",
    "RAY_py_gcs_connect_timeout_s": "5",
    "RAY_gcs_server_port_wait_time_s": "1",
}
# In this process only: no C++ handler of Ray's own for SIGTERM (it would print a stack,
# then abort at exit, when a signal lands in the last moments of ray.init).
DRIVER_ONLY = {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'phdcli[ray]'") from None
    return ray


def _is_cluster_fault(ray: Any, exc: BaseException) -> bool:
    """A failure of the cluster itself (not of one video's task): it ends the build."""
    errors = ray.exceptions
    return isinstance(exc, (ConnectionError, TimeoutError, errors.RaySystemError,
                            errors.LocalRayletDiedError, errors.AuthenticationError,
                            errors.RpcError))


def _words(exc: BaseException, limit: int = 300) -> str:
    """Ray's message, first line only (some carry log excerpts and tracebacks), bounded."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    text = " ".join(first.split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def _cluster_faults(ray: Any, what: str, startup: bool = False) -> Iterator[None]:
    """Ray's failures of the cluster as one ClusterError (``what``: Ray's words): the one place
    they are mapped. At start-up every failure is one: a node that does not come up raises a
    bare ``Exception`` ("The current node timed out during startup")."""
    try:
        yield
    except PhdError:
        raise
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, (Interrupted, KeyboardInterrupt)):
            # A signal handled inside Ray's C++ wait comes back as a SystemError caused by
            # what our handler raised: end as that signal would have ended us.
            raise cause from None
        if not (startup or _is_cluster_fault(ray, exc)):
            raise
        raise ClusterError(f"{what}: {type(exc).__name__}: {_words(exc)}") from exc


@contextlib.contextmanager
def _env_defaults(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment for the body, where the user did not set them."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _remote_parts(ray: Any) -> tuple[Any, Any, Any, Any]:
    """The remote functions and actor class, defined once Ray is imported."""

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

    class FeatureWorker:
        """C3D on one device, loaded once; restarted by Ray if its process dies."""

        def __init__(self, ctx: BuildContext, cpu_actor: bool) -> None:
            if cpu_actor:  # Ray gives a task one thread; C3D on a CPU wants the node's cores
                import torch

                torch.set_num_threads(os.cpu_count() or 1)
            self.extractor = ctx.extractor()

        def describe(self) -> str:
            return str(self.extractor.runtime.describe())

        def forward(self, clips: np.ndarray) -> np.ndarray:
            return self.extractor.forward_clips(clips)  # type: ignore[no-any-return]

    return prepare_task, decode_task, write_task, ray.remote(FeatureWorker)


def _env_vars() -> dict[str, str]:
    """PHD_* settings (caches, weights) follow the driver to every worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("PHD_")}


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

    def _target(self) -> RayAddress | None:
        """The cluster to join: ``address``, else RAY_ADDRESS (ray.init reads it too)."""
        if self.address is not None:
            return self.address
        text = os.environ.get("RAY_ADDRESS", "").strip()
        return parse_address(text, "RAY_ADDRESS") if text else None

    def _connect(self) -> tuple[Any, bool, HeadWatch]:
        """Ray joined to the running session, the cluster at the address, or one started here;
        True if this call started it; the watch on its head."""
        target = self._target()
        if target is not None:
            check_reachable(target)  # nothing listens there: fail now, before Ray retries
        joining = target is not None and target.text != "local"
        where = "a running Ray cluster (auto)" if target and target.text == "auto" else (
            f"the Ray cluster at {target.text}" if target else "")
        what = f"cannot reach {where}" if joining else "cannot start Ray on this machine"
        # Ray's C++ side reads the limits once, at import: set before it (in a process that
        # imported Ray already, only the Python side's retries are bounded).
        with procs.keep_handlers(), _env_defaults(JOIN_LIMITS if joining else {}):
            with _env_defaults(DRIVER_ONLY):  # read at import: not passed to Ray's processes
                ray = _import_ray()
            procs.exit_hard_at_end()
            started = not ray.is_initialized()
            if started:
                with _cluster_faults(ray, what, startup=True):
                    ray.init(address=target.text if target else None,
                             num_cpus=None if joining else self.num_cpus,
                             runtime_env={"env_vars": _env_vars()}, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
        head = _head(ray, target)
        name = where if joining else f"the Ray instance on this machine (GCS {head.endpoint})"
        return ray, started, HeadWatch(head, name)

    def run(self, jobs: Sequence[VideoJob], ctx: BuildContext, on_outcome: OnOutcome,
            progress: EngineProgress | None = None) -> None:
        ray, started, watch = self._connect()
        try:
            with _cluster_faults(ray, f"lost {watch.name}"):
                _Driver(ray, self, ctx, on_outcome, progress, watch).run(jobs)
        finally:
            if started:
                ray.shutdown()


def _head(ray: Any, target: RayAddress | None) -> RayAddress:
    """The endpoint the watch connects to: the GCS Ray is connected to (Ray Client: the
    address given); none known, no watch (Ray's own deadline stands)."""
    if target is not None and target.text.startswith("ray://"):
        return target
    try:
        return parse_address(str(ray.get_runtime_context().gcs_address), "the GCS address")
    except Exception:  # a Ray without it: watching is a best effort
        return target or RayAddress("unknown")


class _Driver:
    """The driver's loop: submit within bounds, collect outcomes as they end."""

    def __init__(self, ray: Any, engine: RayEngine, ctx: BuildContext, on_outcome: OnOutcome,
                 progress: EngineProgress | None, watch: HeadWatch) -> None:
        self.ray, self.ctx, self.on_outcome, self.progress = ray, ctx, on_outcome, progress
        self.watch = watch
        self.prepare, self.decode, self.write, worker_cls = _remote_parts(ray)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        n_workers = engine.feature_workers or gpus or max(1, cpus // 8)
        opts: dict[str, Any] = {"max_restarts": -1, "max_task_retries": TASK_RETRIES}
        opts.update({"num_gpus": 1} if gpus else {"num_cpus": 1})
        self.workers = [worker_cls.options(**opts).remote(ctx, not gpus) for _ in range(n_workers)]
        try:
            self.runtime = self._await(self.workers[0].describe.remote())
        except ray.exceptions.RayError as exc:  # no worker can run C3D: stop here, say why
            if _is_cluster_fault(ray, exc):
                raise
            cause = getattr(exc, "cause", None) or exc
            raise PhdError(f"the C3D workers cannot start: {' '.join(str(cause).split())}"
                           ) from None
        log.info("ray: %d CPUs, %d GPUs; %d feature workers (%s)", cpus, gpus, n_workers,
                 self.runtime)
        self.chunk = engine.chunk_clips
        self.max_prepare = engine.downloads or max(2, cpus // 2)
        self.max_clips = engine.max_clips_in_flight or 8 * self.chunk * n_workers
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

    def _await(self, ref: Any) -> Any:
        """``ray.get``, watching the head while it waits (an actor loading C3D takes a while)."""
        while not self.ray.wait([ref], timeout=1.0)[0]:
            self.watch.check()
        return self.ray.get(ref)

    def _get(self, ref: Any, job: VideoJob, stage: str) -> Any:
        """The task's result; an error (after Ray's own retries) fails this video only, and
        a failure of the cluster itself ends the build (not recorded against the video)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            return failed(job, stage, cause, self.ctx.store())
        except self.ray.exceptions.RayError as exc:  # worker or actor died past its retries
            if _is_cluster_fault(self.ray, exc):
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
