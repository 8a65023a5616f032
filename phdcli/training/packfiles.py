"""The files of a sample pack on disk, read back and checked before training trusts them.

``phdcli.training.samples`` writes a pack (``PackWriter``) and reads it
through :class:`Pack`. Everything the reader relies on is checked when the
pack is opened: ``pack.json`` an object of this format, ``index.npz`` a
whole archive whose per-user and per-row arrays agree with each other (counts
non-negative, bounds finite pairs, durations finite), each feature file
exactly the size its rows need. A pack that fails is one InputError line
naming the file and saying to rebuild; never an internal error later in training.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from phdcli.errors import InputError

PACK_FORMAT = "phd-samples/1"
FILES = {"segments": np.float16, "test_segments": np.float16, "history": np.float16,
         "history_mean": np.float32}
SUFFIX = {np.float16: ".f16", np.float32: ".f32"}
# Rows of a batch closer than this share one read: one request instead of two (a round
# trip on NFS) for the bytes between; the cap bounds that waste to 64 KiB per row wanted.
_MAX_GAP_BYTES = 64 * 1024
REBUILD = "rebuild the dataset with `phd dataset build` (the store makes that cheap)"
_COUNTS = ("n_seg", "n_test", "n_hist", "n_gifs")
_PER_USER = ("user_id", "youtube_id", "duration_s", *_COUNTS)
# Per-row arrays that training reads, and the count that says how many rows each user has
# (history_bounds_s and history_ids are provenance, written when known and never read).
_PER_ROW = {"labels": "n_seg", "bounds_s": "n_seg", "test_bounds_s": "n_test",
            "gifs_s": "n_gifs"}
_MAX_DIM = 1 << 20


def damaged(path: Path, why: str) -> InputError:
    return InputError(f"{path}: damaged ({why}): {REBUILD}")


def _index_problem(ix: dict[str, np.ndarray]) -> str | None:
    """What is wrong with a pack's index (None: nothing), as a few words."""
    missing = [k for k in (*_PER_USER, *_PER_ROW) if k not in ix]
    if missing:
        return f"no {', '.join(missing)}"
    n = len(ix["user_id"])
    for key in _PER_USER:
        if ix[key].shape != (n,):
            return f"{key} has shape {ix[key].shape} for {n} users"
    for key in _COUNTS:
        if ix[key].dtype.kind not in "iu" or (ix[key] < 0).any():
            return f"{key} is not a list of counts"
    if ix["duration_s"].dtype.kind != "f" or not (ix["duration_s"] > 0).all() or not (
            np.isfinite(ix["duration_s"]).all()):
        return "a duration is not a finite number of seconds"
    for key, count in _PER_ROW.items():
        arr, rows = ix[key], int(ix[count].sum())
        shape = (rows,) if key == "labels" else (rows, 2)
        if arr.shape != shape or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
            return f"{key} has shape {arr.shape}, expected {shape} of finite numbers"
    return None


def read_index(folder: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(feature dim, index arrays) of the pack in ``folder``, checked; InputError if damaged."""
    doc_path, index_path = folder / "pack.json", folder / "index.npz"
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise damaged(doc_path, str(exc)) from None
    if not isinstance(doc, dict):
        raise damaged(doc_path, "not a JSON object")
    if doc.get("format") != PACK_FORMAT:
        raise InputError(f"{folder}: unsupported sample pack {doc.get('format')!r}: {REBUILD}")
    dim = doc.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= _MAX_DIM:
        raise damaged(doc_path, f"dim {dim!r}")
    try:
        with np.load(index_path, allow_pickle=False) as archive:
            ix = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged(index_path, str(exc) or type(exc).__name__) from None
    except AttributeError:  # np.load gave one array (an .npy file), not an archive
        raise damaged(index_path, "not an npz archive") from None
    problem = _index_problem(ix)
    if problem is not None:
        raise damaged(index_path, problem)
    return dim, ix


class Pack:
    """The files of one pack, opened once and shared by its subsets."""

    def __init__(self, folder: Path) -> None:
        self.dim, self.ix = read_index(folder)
        self.folder = folder
        ix = self.ix
        self.off = {k: np.r_[0, np.cumsum(ix[k])] for k in _COUNTS}
        self.fds: dict[str, int] = {}
        try:
            for name, dt in FILES.items():
                self.fds[name] = os.open(folder / f"{name}{SUFFIX[dt]}", os.O_RDONLY)
                rows = int(len(ix["user_id"]) if name == "history_mean" else
                           self.off[{"segments": "n_seg", "test_segments": "n_test",
                                     "history": "n_hist"}[name]][-1])
                size = os.fstat(self.fds[name]).st_size
                if size != rows * self.dim * np.dtype(dt).itemsize:
                    raise damaged(folder / f"{name}{SUFFIX[dt]}",
                                  f"{name} holds {size} bytes, expected {rows} rows")
        except OSError as exc:
            self.close()
            raise damaged(folder, f"not a readable sample pack: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a feature file in its own dtype."""
        fd = self.fds.get(name)
        if fd is None:
            raise ValueError(f"{self.folder}: read of a closed sample pack")
        dt = np.dtype(FILES[name])
        width = self.dim * dt.itemsize
        data = os.pread(fd, (stop - start) * width, start * width)
        if len(data) != (stop - start) * width:
            raise InputError(f"{self.folder}: {name} is shorter than its index (changed?)")
        return np.frombuffer(data, dtype=dt).reshape(-1, self.dim)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a feature file as float32."""
        return self._read(name, start, stop).astype(np.float32)

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order, repeats allowed) of a feature file as float32, in order.

        The rows are sorted and read in runs, one run at a time; a row more
        than ``_MAX_GAP_BYTES`` past the previous one starts a new run. A run
        holds its own rows and at most 64 KiB between each two, so memory stays
        within the batch's size plus that, wherever the rows lie.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        ranked = rows[order]
        gap_rows = _MAX_GAP_BYTES // max(1, self.dim * np.dtype(FILES[name]).itemsize)
        cuts = np.r_[0, np.flatnonzero(np.diff(ranked) > gap_rows + 1) + 1, len(rows)].tolist()
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if b > a:
                first = int(ranked[a])
                block = self._read(name, first, int(ranked[b - 1]) + 1)
                # float16 -> float32 is exact: the values are those of one read per row.
                out[order[a:b]] = block[ranked[a:b] - first]
        return out

    def close(self) -> None:
        """Close the files (once; later calls do nothing)."""
        while self.fds:
            os.close(self.fds.popitem()[1])
