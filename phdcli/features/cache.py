"""The clip cache: one table of raw C3D features per video file, checked before it is trusted.

A table is keyed by the file's content hash, the exact backbone weights,
the layer and how a clip is made (rate, length), but not by how segments
sample clips: any segmentation, or the coarse and fine passes of
``phdcli.ranking.rank``, reads the clips it needs and adds those it lacked.
A damaged entry (truncated, empty, garbage, wrong shapes, NaN) is removed
with a one-line warning and recomputed: the cache can cost time, never a run.

Layout: ``<features cache>/clips/<h2>/<key>.npz`` (``ticks``, ``feats``,
``int8``). Anything else under the features cache was written by an older
phd (which cached whole segments) and is never read: ``orphaned_entries``
lists it for ``phd cache prune``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from phdcli.features.clips import TICKS_PER_S, ClipTable
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import atomic_path
from phdcli.fsutil.cachefile import CLIP_TABLE_MAX, RefusedEntry, discard, open_entry

log = logging.getLogger("phd")

CLIPS_DIR = "clips"


def cache_key(content_sha256: str, backbone_id: str, spec: FeatureSpec) -> str:
    """The clip table's name: the file's content, the weights and how a clip is made."""
    ident = json.dumps(
        {
            "content": content_sha256,
            "backbone": backbone_id,
            "layer": spec.layer,
            "clip_fps": spec.clip_fps,
            "clip_frames": spec.clip_frames,
            "ticks_per_s": TICKS_PER_S,
        },
        sort_keys=True,
    )
    return f"{content_sha256[:16]}-{hashlib.sha256(ident.encode()).hexdigest()[:24]}"


class ClipCache:
    """The clip tables under ``folder`` (the features cache), rows of ``dim`` floats."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = Path(folder)
        self.dim = dim

    def file(self, key: str) -> Path:
        return self.folder / CLIPS_DIR / key[:2] / f"{key}.npz"

    def load(self, key: str) -> ClipTable | None:
        """The cached table, checked; a damaged entry is removed (with a warning): None."""
        file = self.file(key)
        if not os.path.lexists(file):
            return None
        table, problem = read_table(file, self.dim)
        if table is None:
            log.warning("warning: feature cache entry %s is damaged (%s): removed, recomputing",
                        file.name, problem)
            discard(file)
        return table

    def store(self, key: str, table: ClipTable) -> None:
        """Write ``table`` (merged with rows another run added meanwhile) atomically;
        a full or read-only cache costs speed, not results."""
        file = self.file(key)
        on_disk, _ = read_table(file, self.dim) if os.path.lexists(file) else (None, "")
        if on_disk is not None:
            table = on_disk.merged(table)
        try:
            with atomic_path(file, suffix=".part.npz") as tmp:
                np.savez(tmp, ticks=table.ticks, feats=table.feats, int8=table.int8)
        except OSError as exc:
            log.warning("warning: could not cache features (%s)", exc)


def read_table(file: Path, dim: int) -> tuple[ClipTable | None, str]:
    """(table, "") or (None, what is wrong with the file)."""
    try:
        # The one cache opener: a FIFO, device or link here is refused, never read.
        with open_entry(file, CLIP_TABLE_MAX) as fh, np.load(fh, allow_pickle=False) as data:
            table = ClipTable(data["ticks"], data["feats"], data["int8"])
    except RefusedEntry as exc:
        return None, str(exc.strerror)
    # np.load raises whatever its zip/format layers hit (BadZipFile, EOFError
    # for an empty file, zlib errors...): all mean "not a usable entry".
    except Exception as exc:
        return None, f"unreadable: {type(exc).__name__}"
    c = len(table.ticks)
    if not (table.ticks.dtype == np.int64 and table.ticks.ndim == 1
            and table.feats.dtype == np.float32 and table.feats.shape == (c, dim)
            and table.int8.dtype == bool and table.int8.shape == (c,)):
        return None, "wrong shapes or types"
    if c > 1 and not (np.diff(table.ticks) > 0).all():
        return None, "clip starts out of order"
    if not np.isfinite(table.feats).all():
        return None, "NaN or Inf features"
    return table, ""


def orphaned_entries(folder: Path) -> Iterator[Path]:
    """Files under the features cache that no phd reads any more: everything
    outside ``clips/`` (the segment cache of phd before the clip cache)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name == CLIPS_DIR and entry.is_dir():  # a link to it elsewhere is read too
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from sorted(p for p in entry.rglob("*") if p.is_file() or p.is_symlink())
        else:
            yield entry
