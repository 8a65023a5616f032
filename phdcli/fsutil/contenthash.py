"""What a file's bytes are: its sha256, remembered so that a warm run does not hash again.

Hashing a long video or a 300 MB weights file costs seconds, so the sha256
of a large file is remembered in the cache's hash index. The rule that
keeps the index from ever answering for other bytes under the same name
(content identity):

- A file of at most :data:`FULL_HASH_MAX_BYTES` is hashed in full every time,
  never looked up.
- A larger file's memo is keyed by its resolved path, device and inode, size,
  mtime_ns **and ctime_ns**, plus the sha256 of three 64 KiB samples (its
  start, middle and end). ``cp -p``, ``rsync -t`` and ``touch -r`` restore
  mtime, but ctime is set by the kernel on every write, rename or metadata
  change and cannot be set back by a user; a new file under the old name is
  a new inode. The samples catch a replacement on a file system whose ctime
  means little (coarse or faked timestamps).

A memo is a small JSON file read through the one cache opener
(``phdcli.fsutil.cachefile``): a FIFO or link there is replaced, never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from phdcli import fsutil
from phdcli.fsutil.cachefile import SMALL_JSON_MAX, RefusedEntry, discard, open_fd, read_entry

log = logging.getLogger("phd")

HASH_INDEX_DIR = "hash-index"  # in the cache folder
SAMPLE_BYTES = 64 * 1024
FULL_HASH_MAX_BYTES = 1 << 20


def _index_dir(index_dir: Path | None) -> Path:
    from phdcli import paths

    return index_dir or paths.cache_dir() / HASH_INDEX_DIR


def _identity(path: Path) -> str | None:
    """What the memo key holds of ``path`` beside its name; None for a file small
    enough to hash in full each time."""
    fd = open_fd(path, None, follow=True)
    try:
        st = os.fstat(fd)
        if st.st_size <= FULL_HASH_MAX_BYTES:
            return None
        samples = hashlib.sha256()
        last = max(0, st.st_size - SAMPLE_BYTES)
        for offset in (0, last // 2, last):  # start, middle, end
            samples.update(os.pread(fd, SAMPLE_BYTES, offset))
    finally:
        os.close(fd)
    return (f"{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0"
            f"{samples.hexdigest()}")


def _memo_file(path: Path, identity: str, index_dir: Path | None) -> Path:
    key = hashlib.sha256(f"{path}\0{identity}".encode()).hexdigest()
    return _index_dir(index_dir) / f"{key[:32]}.json"


def _read_memo(memo: Path) -> str | None:
    """The sha256 a memo holds; None when there is none or it is unusable (a memo
    that is not a plain file is removed, with a warning)."""
    try:
        return str(json.loads(read_entry(memo, SMALL_JSON_MAX))["sha256"])
    except RefusedEntry as exc:
        log.warning("warning: hash memo %s is %s: removed", memo.name, exc.strerror)
        discard(memo)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached_sha256(path: Path, index_dir: Path | None = None) -> str:
    """sha256 of ``path``, remembered in the hash index under the module's rule."""
    path = Path(path).resolve()
    identity = _identity(path)
    if identity is None:
        return fsutil.sha256_file(path)
    memo = _memo_file(path, identity, index_dir)
    digest = _read_memo(memo)
    if digest is not None:
        return digest
    digest = fsutil.sha256_file(path)
    _write_memo(memo, path, digest)
    return digest


def remember_sha256(path: Path, digest: str, index_dir: Path | None = None) -> None:
    """Record a hash computed elsewhere (e.g. while downloading) in the index."""
    path = Path(path).resolve()
    with contextlib.suppress(OSError):
        identity = _identity(path)
        if identity is not None:
            _write_memo(_memo_file(path, identity, index_dir), path, digest)


def _write_memo(memo: Path, path: Path, digest: str) -> None:
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        fsutil.atomic_write_text(memo, json.dumps({"path": str(path), "sha256": digest}))


def stale_sha256_memos(index_dir: Path | None = None) -> list[Path]:
    """Memos of the hash index that can never be hit again, sorted: their file is
    gone or changed (any change to the key makes another memo), small enough to
    be hashed in full, or the memo is unreadable. Nothing is removed; temps are
    left to ``fsutil.stale_temps``."""
    folder = _index_dir(index_dir)
    try:
        memos = sorted(entry.path for entry in os.scandir(folder)
                       if entry.name.endswith(".json") and not entry.name.startswith("."))
    except OSError:
        return []
    stale = []
    for memo in map(Path, memos):
        try:
            doc = json.loads(read_entry(memo, SMALL_JSON_MAX))
            recorded = Path(doc["path"])
            # The very lookup cached_sha256 does: the file's key as it is now.
            identity = _identity(recorded) if recorded.is_file() else None
            current = (isinstance(doc["sha256"], str) and identity is not None
                       and _memo_file(recorded, identity, folder) == memo)
        except (OSError, ValueError, KeyError, TypeError):
            current = False
        if not current:
            stale.append(memo)
    return stale
