"""``phd cache prune``: what the cache holds that no phd reads any more, and removing it.

Each kind of orphan is found by the module that owns its format:

- ``old-features``: feature-cache entries outside ``clips/``, the segment
  cache of phd before the clip cache (``features.cache.orphaned_entries``);
- ``unusable-records``: records of ``phd suggest``'s outputs that no lookup
  can use: damaged, misfiled, or of a format this phd does not read
  (``history.records.orphaned_records``);
- ``stale-hash-memos``: hash-index memos whose file is gone or changed, so
  that no lookup can reach them (``contenthash.stale_sha256_memos``);
- ``dead-temps``: temp files and folders anywhere in the cache whose owner
  (a phd on this host) is no longer running (``fsutil.stale_temps``);
- ``incomplete-downloads``: download folders with no finished download and
  no download in progress (``sources.inputs.orphaned_downloads``).

Everything else stays: clip tables, converted weights, int8 models and
verdicts, fetched weights (a ``.part`` is a resumable download), finished
downloads, a live run's temps; histories and config are not in the cache
at all. Each path belongs to one kind only: a temp is never an old entry
of its folder, and a temp inside an incomplete download goes with it.

A running phd may write beside ``prune``: a file is removed only while it
is still the one found (same inode, size and mtime; an atomic rewrite makes
a new one), a download folder only after checking again that nothing
started in it, and a file that vanished meanwhile is simply gone. Folders
that removal leaves empty go too, up to the cache's own rooms (``features/``,
``outputs/``...), which stay.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phdcli import fsutil, paths
from phdcli.errors import PhdError
from phdcli.features import cache as feature_cache
from phdcli.fsutil import contenthash
from phdcli.history import records
from phdcli.sources import inputs

# (key, what it is in words): the order of the report.
KINDS: tuple[tuple[str, str], ...] = (
    ("old-features", "old feature-cache entries (outside clips/)"),
    ("unusable-records", "output records phd cannot use (damaged or unknown)"),
    ("stale-hash-memos", "hash memos of changed or deleted files"),
    ("dead-temps", "temp files of phd runs that died"),
    ("incomplete-downloads", "download folders with no complete download"),
)
_LABEL_WIDTH = max(len(label) for _, label in KINDS)


@dataclass(frozen=True)
class Orphan:
    path: Path
    size_bytes: int  # a folder's: the files in it
    # (st_dev, st_ino, st_size, st_mtime_ns) when found; None for a folder.
    identity: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    root: Path  # folders left empty are removed up to here, never this one
    orphans: tuple[Orphan, ...]

    @property
    def size_bytes(self) -> int:
        return sum(o.size_bytes for o in self.orphans)


@dataclass(frozen=True)
class PruneReport:
    """What was removed (or with ``dry_run``, what would be), by kind."""

    cache: Path
    dry_run: bool
    categories: tuple[Category, ...]
    failed: tuple[tuple[Path, str], ...] = ()  # (path, why) of what could not be removed

    @property
    def count(self) -> int:
        return sum(len(c.orphans) for c in self.categories)

    @property
    def size_bytes(self) -> int:
        return sum(c.size_bytes for c in self.categories)

    def lines(self) -> list[str]:
        """The human form: a line per kind (count, size), then the total."""
        if self.count == 0 and not self.failed:
            return [f"nothing to prune in {self.cache}"]
        lines = [f"{c.label:<{_LABEL_WIDTH}} {len(c.orphans):>6} {human_bytes(c.size_bytes):>9}"
                 for c in self.categories]
        verb = "would free" if self.dry_run else "freed"
        entries = "entry" if self.count == 1 else "entries"
        lines.append(f"{verb} {human_bytes(self.size_bytes)} ({self.count} {entries}) "
                     f"in {self.cache}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1, "cache": str(self.cache), "dry_run": self.dry_run,
            "count": self.count, "bytes": self.size_bytes,
            "categories": [
                {"name": c.key, "description": c.label, "count": len(c.orphans),
                 "bytes": c.size_bytes,
                 "paths": [{"path": str(o.path), "bytes": o.size_bytes} for o in c.orphans]}
                for c in self.categories],
            "failed": [{"path": str(path), "error": why} for path, why in self.failed],
        }


def human_bytes(size_bytes: int) -> str:
    """``512 B``, ``8.2 kB``, ``1.3 GB`` (powers of 1000, like the README's MB)."""
    if size_bytes < 1000:
        return f"{size_bytes} B"
    size = float(size_bytes)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 999.95 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


# -- finding --------------------------------------------------------------------------
def find_orphans() -> tuple[Category, ...]:
    """Every orphan in the cache, by kind (``KINDS`` order); nothing is removed."""
    cache = paths.cache_dir()
    if cache.exists() and not cache.is_dir():
        raise PhdError(f"the cache {cache} is not a folder")
    features_root = paths.features_cache_dir()
    records_root = cache / records.RECORDS_DIR
    downloads = inputs.orphaned_downloads()
    found: dict[str, tuple[Path, list[Path]]] = {
        "old-features": (features_root, [
            p for p in feature_cache.orphaned_entries(features_root)
            if not _in_temp(p, features_root)]),
        "unusable-records": (records_root, [
            p for p in records.orphaned_records() if not _in_temp(p, records_root)]),
        "stale-hash-memos": (cache / contenthash.HASH_INDEX_DIR,
                             contenthash.stale_sha256_memos()),
        "dead-temps": (cache, [t for t in _dead_temps(cache)
                               if not any(t.is_relative_to(d) for d in downloads)]),
        "incomplete-downloads": (paths.downloads_cache_dir(), downloads),
    }
    categories = []
    for key, label in KINDS:
        root, found_paths = found[key]
        orphans = tuple(o for o in map(_orphan, found_paths) if o is not None)
        categories.append(Category(key, label, root, orphans))
    return tuple(categories)


def _in_temp(path: Path, root: Path) -> bool:
    """True when ``path`` is a temp or lies inside one: its owner's (or dead-temps')."""
    return any(fsutil.is_temp(part) for part in path.relative_to(root).parts)


def _dead_temps(cache: Path) -> list[Path]:
    """Dead owners' temps in every folder of the cache; no symlink is followed
    below ``cache``, and no temp folder is entered (it goes, or stays, whole)."""
    found: list[Path] = []
    for folder, dirs, _files in os.walk(cache):
        found.extend(fsutil.stale_temps(Path(folder)))
        dirs[:] = sorted(d for d in dirs if not fsutil.is_temp(d))
    return found


def _orphan(path: Path) -> Orphan | None:
    """``path`` with its size and identity now; None if it vanished meanwhile."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if path.is_dir() and not path.is_symlink():
        return Orphan(path, _tree_bytes(path), None)
    return Orphan(path, st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def _tree_bytes(folder: Path) -> int:
    total = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


# -- removing -------------------------------------------------------------------------
def prune(dry_run: bool = False) -> PruneReport:
    """Remove every orphan (``dry_run``: only find them); the report says what went.

    A path that cannot be removed (permissions) does not stop the others: it
    is in ``failed``, and not counted as freed.
    """
    categories = find_orphans()
    cache = paths.cache_dir()
    if dry_run:
        return PruneReport(cache, True, categories)
    # The cache folder and its rooms stay even when prune empties them.
    keep = {cache, *(c.root for c in categories), *_children(cache)}
    failed: list[tuple[Path, str]] = []
    done = []
    for category in categories:
        removed = []
        for orphan in category.orphans:
            try:
                gone = _remove(orphan, category.key)
            except OSError as exc:
                failed.append((orphan.path, exc.strerror or str(exc)))
                continue
            if gone:
                removed.append(orphan)
                _remove_empty_parents(orphan.path, category.root, keep)
        done.append(Category(category.key, category.label, category.root, tuple(removed)))
    return PruneReport(cache, False, tuple(done), tuple(failed))


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _remove(orphan: Orphan, key: str) -> bool:
    """Remove one orphan; False when it vanished or changed since it was found."""
    path = orphan.path
    if orphan.identity is None:  # a folder: a dead temp folder or a download folder
        if key == "incomplete-downloads" and not inputs.is_orphaned_download(path):
            return False  # a download started (or finished) in it meanwhile
        return _remove_tree(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != orphan.identity:
        return False  # rewritten meanwhile: not the file that was found
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _remove_tree(folder: Path) -> bool:
    """Remove ``folder`` and what it holds, except a temp whose owner may still be
    running (then the folder stays); True when the folder is gone."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return False
    for entry in entries:
        if fsutil.is_temp(entry.name) and not fsutil.is_stale_temp(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(Path(entry.path))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return _rmdir_if_empty(folder)


def _rmdir_if_empty(folder: Path) -> bool:
    """True when ``folder`` went (or was already gone); False when something is in
    it (a live temp, a file written meanwhile); other errors raise."""
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _remove_empty_parents(path: Path, root: Path, keep: set[Path]) -> None:
    """The folders removing ``path`` left empty, up to ``root`` and never one in ``keep``."""
    parent = path.parent
    while parent != root and parent.is_relative_to(root) and parent not in keep:
        try:
            if not _rmdir_if_empty(parent):
                return
        except OSError:  # tidying only: a folder that cannot go stays
            return
        parent = parent.parent
