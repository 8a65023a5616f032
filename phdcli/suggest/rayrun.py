"""``phd suggest --engine ray``: the clips a batch lacks, computed by a Ray cluster's actors.

The driver does everything else (``phdcli.suggest.engine``): it resolves,
probes and segments each video, asks its extractor for features, and
writes. The extractor's ``remote`` hook sends the clips its cache lacks
here: split in chunks over the ``FeatureWorker`` actors that ``phd dataset
build`` uses (``phdcli.cluster.session``), each decoding its chunk and
running C3D exactly as a local run would, and the rows come back into the
driver's clip cache (so a re-run after a killed driver computes only what
is missing). An actor whose process dies is restarted by Ray and its call
retried; a call that still fails fails its video only. The cluster's own
failures (not reachable, not started, its head lost) stop the batch with
one ``ClusterError`` naming the address.

The actors read the videos at the paths the driver resolved, and the C3D
weights at the driver's path: on one machine that always holds; a cluster
of several needs them (the phd cache, where URLs are downloaded, and the
inputs) on storage every node mounts at the same path.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
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
from phdcli.errors import ClusterError, PhdError
from phdcli.features.spec import FeatureSpec

CHUNK_CLIPS = 32  # clips per actor call: a multiple of the batch (8), so batches match local


@dataclass(frozen=True)
class WorkerExtractor:
    """Builds an actor's extractor with the driver's settings (picklable: sent to Ray)."""

    spec: FeatureSpec
    c3d_weights: Path  # resolved (fetched if need be) by the driver
    device: str
    precision: str

    def __call__(self) -> Any:
        from phdcli.features.extractor import FeatureExtractor

        return FeatureExtractor(self.spec, self.c3d_weights, self.device, self.precision)


class RayFeatures:
    """Ray joined or started for one batch; ``clip_features`` is the extractor's ``remote``."""

    def __init__(self, address: str | None, num_cpus: int | None = None) -> None:
        self.session: RaySession = connect(
            parse_address(address) if address is not None else None, num_cpus)
        self.ray = self.session.ray
        self.actors: list[Any] = []
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def start(self, make_extractor: WorkerExtractor, workers: int | None = None) -> None:
        """Start the feature actors (once the batch knows it needs C3D)."""
        try:
            with self.faults():
                self.actors = start_feature_workers(self.session, make_extractor, workers).actors
        except ClusterError:
            raise
        except PhdError as exc:  # no actor can run C3D: no input can succeed, stop the batch
            raise ClusterError(str(exc)) from None

    @property
    def ahead(self) -> int:
        """Videos in flight: enough to keep every actor fed while the driver writes one."""
        return 2 * max(1, len(self.actors)) + 1

    def faults(self) -> Any:
        """The cluster's failures as one ClusterError naming it."""
        return cluster_faults(self.ray, f"lost {self.session.watch.name}")

    def clip_features(self, path: Path, starts_s: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """Raw features and int8 flags of the clips at ``starts_s`` (any thread may ask)."""
        refs = []
        for i in range(0, len(starts_s), CHUNK_CLIPS):
            with self._lock:
                actor = self.actors[next(self._turn) % len(self.actors)]
            refs.append(actor.clip_features.remote(path, starts_s[i:i + CHUNK_CLIPS]))
        parts = [self._get(ref, path) for ref in refs]
        feats = np.concatenate([f for f, _ in parts])
        return feats, np.concatenate([np.full(len(f), int8) for f, int8 in parts])

    def _get(self, ref: Any, path: Path) -> tuple[np.ndarray, bool]:
        errors = self.ray.exceptions
        with self.faults():
            try:
                return self.ray.get(ref)  # type: ignore[no-any-return]
            except errors.RayTaskError as exc:  # the video's own failure, as a local run says it
                cause = getattr(exc, "cause", None)
                if isinstance(cause, (PhdError, OSError)):
                    raise cause from None
                raise PhdError(f"{path.name}: C3D on the Ray cluster failed: "
                               f"{' '.join(str(cause or exc).split())[:300]}") from None
            except errors.RayError as exc:
                if is_cluster_fault(self.ray, exc):
                    raise
                if not self.session.watch.answers():  # the actor went with the head
                    raise ClusterError(f"lost {self.session.watch.name}: its head does not "
                                       f"answer ({type(exc).__name__}); the videos written are "
                                       "whole, and a re-run reuses every clip computed") from None
                raise PhdError(f"{path.name}: a Ray feature worker was lost after "
                               f"{TASK_RETRIES} retries ({type(exc).__name__})") from None

    def check(self) -> None:
        """The head still answers (a ClusterError once it has been silent too long)."""
        self.session.watch.check()

    def close(self) -> None:
        self.session.close()
