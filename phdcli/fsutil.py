"""Atomic writes: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` on success.

    The temp file keeps ``final``'s suffix (ffmpeg picks the muxer from it) and
    is removed if the body raises.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # ".NAME.XXXX.part.gif": hidden, recognisably ours, and ending in the
    # real suffix so that ffmpeg still picks the right muxer.
    tmp_suffix = suffix if suffix is not None else ".part" + final.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=tmp_suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files; a GIF or model should get the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final, suffix=".tmp") as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Streamed sha256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_file(path: Path, index_dir: Path | None) -> Path:
    from phdcli import paths

    stat = path.stat()
    key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    return (index_dir or paths.cache_dir() / "hash-index") / f"{key[:32]}.json"


def cached_sha256(path: Path, index_dir: Path | None = None) -> str:
    """sha256 of ``path``, remembered by (path, size, mtime) in the hash index.

    Hashing a long video or a 300 MB weights file costs seconds; a warm run
    should not pay it again. The memo is keyed by the resolved path, size and
    mtime_ns, so an edited or replaced file is hashed anew.
    """
    import json

    path = Path(path).resolve()
    memo = _memo_file(path, index_dir)
    try:
        return str(json.loads(memo.read_text())["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    remember_sha256(path, digest, index_dir)
    return digest


def remember_sha256(path: Path, digest: str, index_dir: Path | None = None) -> None:
    """Record a hash computed elsewhere (e.g. while downloading) in the index."""
    import json

    path = Path(path).resolve()
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        atomic_write_text(_memo_file(path, index_dir),
                          json.dumps({"path": str(path), "sha256": digest}))
