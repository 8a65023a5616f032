"""Joining or starting Ray, its failures as phd errors, and the C3D feature actors.

Both Ray engines (``phd dataset build`` and ``phd suggest --engine ray``) go
through ``connect``: the address checked with a TCP connect first
(``address.check_reachable``), joins bounded (``JOIN_LIMITS``), the signal
handlers kept, and the watch on the head started. ``cluster_faults`` is the
one place Ray's exceptions of the cluster itself (an address that does not
answer, a node that does not start, a head lost mid-run) become one
``ClusterError``. ``start_feature_workers`` starts the ``FeatureWorker``
actors: C3D loaded once per actor, restarted by Ray when its process dies
and the call retried. ``ray`` is imported only here, and only when asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phdcli import procs
from phdcli.cluster.address import HeadWatch, RayAddress, check_reachable, parse_address
from phdcli.errors import ClusterError, Interrupted, PhdError, UsageError

log = logging.getLogger("phd")

TASK_RETRIES = 3
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
INSTALL_HINT = "pip install 'phdcli[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    return ray


def is_cluster_fault(ray: Any, exc: BaseException) -> bool:
    """A failure of the cluster itself (not of one video's task): it ends the run."""
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
def cluster_faults(ray: Any, what: str, startup: bool = False) -> Iterator[None]:
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
        if not (startup or is_cluster_fault(ray, exc)):
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


def _env_vars() -> dict[str, str]:
    """PHD_* settings (caches, weights) follow the driver to every worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("PHD_")}


def target(address: RayAddress | None) -> RayAddress | None:
    """The cluster to join: ``address``, else RAY_ADDRESS (ray.init reads it too)."""
    if address is not None:
        return address
    text = os.environ.get("RAY_ADDRESS", "").strip()
    return parse_address(text, "RAY_ADDRESS") if text else None


@dataclass
class RaySession:
    """Ray, imported and initialised; ``started``: this process started it (and ends it)."""

    ray: Any
    started: bool
    watch: HeadWatch

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def connect(address: RayAddress | None, num_cpus: int | None = None) -> RaySession:
    """Ray joined to the running session, the cluster at the address (or RAY_ADDRESS), or one
    started here with ``num_cpus`` (None: the machine's); a ClusterError names the address."""
    where_to = target(address)
    if where_to is not None:
        check_reachable(where_to)  # nothing listens there: fail now, before Ray retries
    joining = where_to is not None and where_to.text != "local"
    where = "a running Ray cluster (auto)" if where_to and where_to.text == "auto" else (
        f"the Ray cluster at {where_to.text}" if where_to else "")
    what = f"cannot reach {where}" if joining else "cannot start Ray on this machine"
    # Ray's C++ side reads the limits once, at import: set before it (in a process that
    # imported Ray already, only the Python side's retries are bounded).
    with procs.keep_handlers(), _env_defaults(JOIN_LIMITS if joining else {}):
        with _env_defaults(DRIVER_ONLY):  # read at import: not passed to Ray's processes
            ray = import_ray()
        procs.exit_hard_at_end()
        started = not ray.is_initialized()
        if started:
            with cluster_faults(ray, what, startup=True):
                ray.init(address=where_to.text if where_to else None,
                         num_cpus=None if joining else num_cpus,
                         runtime_env={"env_vars": _env_vars()}, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
    head = _head(ray, where_to)
    name = where if joining else f"the Ray instance on this machine (GCS {head.endpoint})"
    return RaySession(ray, started, HeadWatch(head, name))


def _head(ray: Any, where_to: RayAddress | None) -> RayAddress:
    """The endpoint the watch connects to: the GCS Ray is connected to (Ray Client: the
    address given); none known, no watch (Ray's own deadline stands)."""
    if where_to is not None and where_to.text.startswith("ray://"):
        return where_to
    try:
        return parse_address(str(ray.get_runtime_context().gcs_address), "the GCS address")
    except Exception:  # a Ray without it: watching is a best effort
        return where_to or RayAddress("unknown")


class FeatureWorker:
    """C3D on one device, loaded once; restarted by Ray if its process dies.

    ``make_extractor``: a picklable callable that builds the ``FeatureExtractor``
    (the same settings as the driver's, so that every worker computes the same rows).
    """

    def __init__(self, make_extractor: Callable[[], Any], cpu_actor: bool) -> None:
        if cpu_actor:  # Ray gives a task one thread; C3D on a CPU wants the node's cores
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        self.extractor = make_extractor()

    def describe(self) -> str:
        return str(self.extractor.runtime.describe())

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """Clips decoded elsewhere (the dataset build's decode tasks) -> raw features."""
        return self.extractor.forward_clips(clips)  # type: ignore[no-any-return]

    def clip_features(self, path: Path, starts_s: list[float]) -> tuple[np.ndarray, bool]:
        """Decoded here and run, exactly as a local run does (same batches, same rows);
        True if the rows were computed in int8 (marked so in the clip cache)."""
        feats = self.extractor.clip_features(path, starts_s)
        return feats, bool(self.extractor.network.computes_int8)


@dataclass
class FeatureWorkers:
    """The started actors and the runtime the first one reported (``describe``)."""

    actors: list[Any]
    runtime: str
    cpus: int
    gpus: int


def start_feature_workers(session: RaySession, make_extractor: Callable[[], Any],
                          count: int | None = None) -> FeatureWorkers:
    """One actor per GPU (CPU actors when the cluster has none, one per 8 CPUs), or ``count``;
    waits until the first has loaded C3D (a PhdError saying why none can)."""
    ray = session.ray
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    n_workers = count or gpus or max(1, cpus // 8)
    opts: dict[str, Any] = {"max_restarts": -1, "max_task_retries": TASK_RETRIES}
    opts.update({"num_gpus": 1} if gpus else {"num_cpus": 1})
    worker_cls = ray.remote(FeatureWorker)
    actors = [worker_cls.options(**opts).remote(make_extractor, not gpus)
              for _ in range(n_workers)]
    try:
        runtime = wait_for(session, actors[0].describe.remote())
    except ray.exceptions.RayError as exc:  # no worker can run C3D: stop here, say why
        if is_cluster_fault(ray, exc):
            raise
        cause = getattr(exc, "cause", None) or exc
        raise PhdError(f"the C3D workers cannot start: {' '.join(str(cause).split())}"
                       ) from None
    log.info("ray: %d CPUs, %d GPUs; %d feature workers (%s)", cpus, gpus, n_workers, runtime)
    return FeatureWorkers(actors, str(runtime), cpus, gpus)


def wait_for(session: RaySession, ref: Any) -> Any:
    """``ray.get``, watching the head while it waits (an actor loading C3D takes a while)."""
    while not session.ray.wait([ref], timeout=1.0)[0]:
        session.watch.check()
    return session.ray.get(ref)
