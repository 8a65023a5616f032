"""Per-user training samples: in memory (``MemorySamples``) or packed on disk (``PackedSamples``).

Training (``phdcli.training.fit``) reads users through ``SampleSet``: the
labels of every user (small), one user's arrays at a time, and batches of
segment rows and mean-history rows. A packed set answers those by reading
only the rows asked for, so training's memory does not grow with the
number of users: no feature matrix of the whole set is ever in RAM. Reads
are ``os.pread`` of exact byte ranges rather than ``np.memmap``: pages a
memory map touches count in the process's RSS, and an epoch touches them all.
A batch's rows are sorted and read in runs: rows near each other (a pair's
positive and negative, one user's rows) share one read. A ``PackedSamples``
opened on a folder owns the pack's file handles: ``close`` it (or use it as
a context manager); its subsets share them and leave closing to it.

Pack layout (``<dataset>/samples/``, written by ``PackWriter``, swapped in whole; read
back and checked by ``phdcli.training.packfiles``)::

    pack.json              format, feature dim, counts
    index.npz              per user: ids, durations, row offsets; per row: labels, bounds
    segments.f16           (N, D) training segments (shots) of every user's last video
    test_segments.f16      (T, D) its fixed 5 s segments (the test protocol's)
    history.f16            (H, D) every history span's feature
    history_mean.f32       (U, D) mean history per user (zeros: cold start)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from phdcli.errors import InputError
from phdcli.fsutil import atomic_write_text, forget_temp, make_temp_dir
from phdcli.training.labels import POSITIVE
from phdcli.training.packfiles import FILES, PACK_FORMAT, SUFFIX, Pack


@dataclass
class UserSample:
    """One user's example, features only: no video is needed to train on it.

    history (m, D), m >= 0; segments (n, D) the last video's training
    segments with labels (n,) in {1, 0, -1} and bounds_s (n, 2) in seconds;
    gifs_s (g, 2) the user's GIFs on that video (None: the positive
    segments' spans); test_* the fixed 5 s segments the metrics use (None:
    the training segments).
    """

    history: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    bounds_s: np.ndarray
    duration_s: float
    gifs_s: np.ndarray | None = None
    user_id: str = ""
    test_segments: np.ndarray | None = None
    test_bounds_s: np.ndarray | None = None

    def ground_truth_s(self) -> np.ndarray:
        if self.gifs_s is not None:
            return self.gifs_s
        return self.bounds_s[self.labels == POSITIVE]

    def eval_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(features (t, D), bounds (t, 2)) of the segments the metrics score."""
        if self.test_segments is not None and self.test_bounds_s is not None:
            return self.test_segments, self.test_bounds_s
        return self.segments, self.bounds_s


def mean_history(history: np.ndarray, dim: int) -> np.ndarray:
    """p = mean(G) as float32; zeros for an empty history (the cold start, method.md)."""
    if len(history) == 0:
        return np.zeros(dim, dtype=np.float32)
    return np.asarray(history, dtype=np.float32).mean(axis=0).astype(np.float32)


class SampleSet(Protocol):
    """What training reads; both implementations give the same numbers for the same users."""

    dim: int

    def __len__(self) -> int: ...
    def user_ids(self) -> list[str]: ...
    def labels(self) -> list[np.ndarray]: ...
    def n_segments(self) -> np.ndarray: ...
    def sample(self, i: int) -> UserSample: ...
    def segment_rows(self, users: np.ndarray, rows: np.ndarray) -> np.ndarray: ...
    def mean_history(self, users: np.ndarray) -> np.ndarray: ...
    def subset(self, indices: Sequence[int]) -> SampleSet: ...


class MemorySamples:
    """A list of UserSample as a SampleSet (tests, and small sets built in memory)."""

    def __init__(self, samples: Sequence[UserSample]) -> None:
        self.samples = list(samples)
        self.dim = int(self.samples[0].segments.shape[1]) if self.samples else 0
        self._rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def user_ids(self) -> list[str]:
        return [s.user_id for s in self.samples]

    def labels(self) -> list[np.ndarray]:
        return [s.labels for s in self.samples]

    def n_segments(self) -> np.ndarray:
        return np.array([len(s.segments) for s in self.samples], dtype=np.int64)

    def sample(self, i: int) -> UserSample:
        return self.samples[i]

    def _all_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # All segments in one array: a batch is then two index lookups, not a Python loop.
        if self._rows is None:
            self._rows = np.concatenate([s.segments for s in self.samples]).astype(np.float32)
            self._offsets = np.r_[0, np.cumsum(self.n_segments())[:-1]]
            self._means = np.stack([mean_history(s.history, self.dim) for s in self.samples])
        return self._rows, self._offsets, self._means

    def segment_rows(self, users: np.ndarray, rows: np.ndarray) -> np.ndarray:
        feats, offsets, _ = self._all_rows()
        return feats[offsets[users] + rows]

    def mean_history(self, users: np.ndarray) -> np.ndarray:
        return self._all_rows()[2][users]

    def subset(self, indices: Sequence[int]) -> MemorySamples:
        return MemorySamples([self.samples[i] for i in indices])

    def __iter__(self) -> Iterator[UserSample]:
        return iter(self.samples)


def as_sample_set(samples: SampleSet | Sequence[UserSample]) -> SampleSet:
    if isinstance(samples, MemorySamples | PackedSamples):
        return samples
    return MemorySamples(list(samples))  # type: ignore[arg-type]


# -- the pack on disk --------------------------------------------------------------
class PackWriter:
    """Appends users to a new pack in a temp folder; ``close`` swaps it in whole."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        # Owner-named (fsutil): if this build is killed, the next one's
        # clean_stale_temps removes the half-written pack.
        self.tmp = make_temp_dir(self.folder.parent, self.folder.name)
        self.files: dict[str, Any] = {}
        try:
            for name, dt in FILES.items():
                self.files[name] = open(self.tmp / f"{name}{SUFFIX[dt]}", "wb")  # noqa: SIM115
        except BaseException:
            self.abort()
            raise
        self.dim: int | None = None
        self.index: dict[str, list[Any]] = {k: [] for k in (
            "user_id", "duration_s", "n_seg", "n_test", "n_hist", "n_gifs", "youtube_id",
            "labels", "bounds_s", "test_bounds_s", "gifs_s", "history_bounds_s", "history_ids")}

    def add(self, s: UserSample, youtube_id: str = "", history_bounds_s: np.ndarray | None = None,
            history_ids: Sequence[str] = ()) -> None:
        dim = int(s.segments.shape[1])
        if self.dim is None:
            self.dim = dim
        elif dim != self.dim:
            raise InputError(f"user {s.user_id}: {dim}-d features among {self.dim}-d ones")
        test, test_bounds = s.eval_segments()
        history = np.asarray(s.history, dtype=np.float16).reshape(-1, dim)
        for name, arr in (("segments", s.segments), ("test_segments", test),
                          ("history", history), ("history_mean", mean_history(history, dim))):
            self.files[name].write(np.ascontiguousarray(arr, dtype=FILES[name]).tobytes())
        ix = self.index
        ix["user_id"].append(s.user_id)
        ix["duration_s"].append(float(s.duration_s))
        ix["youtube_id"].append(youtube_id)
        gifs = np.asarray(s.ground_truth_s(), dtype=float).reshape(-1, 2)
        for key, n in (("n_seg", len(s.segments)), ("n_test", len(test)),
                       ("n_hist", len(history)), ("n_gifs", len(gifs))):
            ix[key].append(n)
        ix["labels"].append(np.asarray(s.labels, dtype=np.int8))
        ix["bounds_s"].append(np.asarray(s.bounds_s, dtype=float).reshape(-1, 2))
        ix["test_bounds_s"].append(np.asarray(test_bounds, dtype=float).reshape(-1, 2))
        ix["gifs_s"].append(gifs)
        hb = np.zeros((0, 2)) if history_bounds_s is None else history_bounds_s
        ix["history_bounds_s"].append(np.asarray(hb, dtype=float).reshape(-1, 2))
        ix["history_ids"].extend(history_ids)

    def close(self, extra: dict[str, Any] | None = None) -> Path:
        """Write the index and swap the pack in; on any failure the temp folder is removed."""
        try:
            self._finish(extra)
        except BaseException:
            self.abort()
            raise
        return self.folder

    def _finish(self, extra: dict[str, Any] | None) -> None:
        for fh in self.files.values():
            fh.close()
        ix = self.index
        arrays: dict[str, np.ndarray] = {
            "user_id": np.array(ix["user_id"], dtype=str),
            "youtube_id": np.array(ix["youtube_id"], dtype=str),
            "duration_s": np.array(ix["duration_s"], dtype=float),
            "history_ids": np.array(ix["history_ids"], dtype=str),
        }
        for key in ("n_seg", "n_test", "n_hist", "n_gifs"):
            arrays[key] = np.array(ix[key], dtype=np.int64)
        for key, width in (("labels", 0), ("bounds_s", 2), ("test_bounds_s", 2), ("gifs_s", 2),
                           ("history_bounds_s", 2)):
            empty = np.zeros((0, 2)) if width else np.zeros(0, np.int8)
            arrays[key] = np.concatenate(ix[key]) if ix[key] else empty
        np.savez(self.tmp / "index.npz", **arrays)  # type: ignore[arg-type]
        doc = {"format": PACK_FORMAT, "dim": self.dim or 0, "n_users": len(ix["user_id"]),
               **(extra or {})}
        atomic_write_text(self.tmp / "pack.json", json.dumps(doc, indent=1) + "\n")
        # Swap the whole folder: a reader sees the old pack or the new one. The old
        # one goes to an owner-named temp first (an empty folder a rename replaces),
        # so a build killed before removing it leaves nothing the next cannot clean.
        old = None
        if self.folder.exists():
            old = make_temp_dir(self.folder.parent, f"{self.folder.name}-old")
            os.replace(self.folder, old)
        os.replace(self.tmp, self.folder)
        forget_temp(self.tmp)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            forget_temp(old)

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        forget_temp(self.tmp)


class PackedSamples:
    """A pack on disk as a SampleSet; ``users`` selects (and orders) a subset.

    Opened on a folder, it owns the pack's files and ``close`` closes them;
    a subset shares its parent's pack, and its ``close`` leaves them open.
    """

    def __init__(self, folder: Path | Pack, users: np.ndarray | None = None) -> None:
        self._owner = not isinstance(folder, Pack)
        self.pack = folder if isinstance(folder, Pack) else Pack(Path(folder))
        n = len(self.pack.ix["user_id"])
        self.users = np.arange(n) if users is None else np.asarray(users, dtype=np.int64)
        self.dim = self.pack.dim

    def __len__(self) -> int:
        return len(self.users)

    def user_ids(self) -> list[str]:
        return [str(u) for u in self.pack.ix["user_id"][self.users]]

    def _slice(self, key: str, array: str, u: int) -> np.ndarray:
        off = self.pack.off[key]
        return self.pack.ix[array][off[u]:off[u + 1]]

    def labels(self) -> list[np.ndarray]:
        return [self._slice("n_seg", "labels", int(u)) for u in self.users]

    def n_segments(self) -> np.ndarray:
        return self.pack.ix["n_seg"][self.users]

    def sample(self, i: int) -> UserSample:
        u, p = int(self.users[i]), self.pack
        seg, test, hist = p.off["n_seg"], p.off["n_test"], p.off["n_hist"]
        return UserSample(
            history=p.rows("history", hist[u], hist[u + 1]),
            segments=p.rows("segments", seg[u], seg[u + 1]),
            labels=self._slice("n_seg", "labels", u),
            bounds_s=self._slice("n_seg", "bounds_s", u),
            duration_s=float(p.ix["duration_s"][u]),
            gifs_s=self._slice("n_gifs", "gifs_s", u),
            user_id=str(p.ix["user_id"][u]),
            test_segments=p.rows("test_segments", test[u], test[u + 1]),
            test_bounds_s=self._slice("n_test", "test_bounds_s", u),
        )

    def segment_rows(self, users: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.pack.gather("segments", self.pack.off["n_seg"][self.users[users]] + rows)

    def mean_history(self, users: np.ndarray) -> np.ndarray:
        return self.pack.gather("history_mean", self.users[users])

    def subset(self, indices: Sequence[int]) -> PackedSamples:
        return PackedSamples(self.pack, self.users[np.asarray(indices, dtype=np.int64)])

    def __iter__(self) -> Iterator[UserSample]:
        return (self.sample(i) for i in range(len(self)))

    def close(self) -> None:
        """Close the pack's files if this set opened them (a subset leaves that to its owner)."""
        if self._owner:
            self.pack.close()

    def __enter__(self) -> PackedSamples:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
