"""Files that are never half-written, never overwritten by accident, never orphaned.

- :func:`atomic_path`: write to a temp file beside the target, rename on success.
- :func:`claim`: put a finished file under its final name *without* replacing
  anything (link-then-unlink, like git's ``index.lock`` dance): two runs into
  one folder can never silently overwrite each other.
- Every temp file and folder carries its owner's pid and host in its name
  (``.NAME.phd<pid>-<host>-<random>.part.gif``), so :func:`stale_temps`
  can tell what a killed run left behind from a live run's (the way git
  decides whether ``gc.pid`` is stale) and :func:`clean_stale_temps` remove it.
- :func:`sha256_file`: a regular file's hash (``phdcli.fsutil.contenthash``
  remembers large files' hashes; ``phdcli.fsutil.cachefile`` is the one
  opener for files read back from the cache).
- :func:`locked`: one writer at a time, with ``filelock`` (an OS lock that
  dies with its process: never stale).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from phdcli.errors import PhdError
from phdcli.fsutil.cachefile import open_entry

log = logging.getLogger("phd")

# Temp names stay well under NAME_MAX (255) whatever the final name's length.
_TEMP_STEM_MAX = 64
_OWNER_RE = re.compile(r"\.phd(\d+)-([0-9a-f]{8})-[a-z0-9_]{8}")

# Temp files of this process that exist right now (removed on interrupt).
_live_temps: set[Path] = set()


@cache
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_prefix(stem: str) -> str:
    """``.STEM.phd<pid>-<host>-``: mkstemp/mkdtemp append 8 random characters."""
    stem = stem[:_TEMP_STEM_MAX]
    return f".{stem}.phd{os.getpid()}-{_host_tag()}-" if stem else (
        f".phd{os.getpid()}-{_host_tag()}-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` on success.

    The temp file keeps ``final``'s suffix (ffmpeg picks the muxer from it) and
    is removed if the body raises (an interrupt included).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # ".NAME.phd<pid>-<host>-XXXXXXXX.part.gif": hidden, recognisably ours (and
    # whose), ending in the real suffix so that ffmpeg picks the right muxer.
    tmp_suffix = suffix if suffix is not None else ".part" + final.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=_owner_prefix(final.stem), suffix=tmp_suffix,
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    _live_temps.add(tmp)
    try:
        yield tmp
        # mkstemp makes 0600 files; a GIF or model should get the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _live_temps.discard(tmp)


def make_temp_dir(parent: Path, label: str = "") -> Path:
    """A new private folder inside ``parent``, named with its owner (``.LABEL.phd<pid>-...``).

    For a folder that outlives one ``with`` block (a pack written across
    calls, then renamed into place): it is this process's live temp, removed
    on interrupt and by a later run's :func:`clean_stale_temps` if this one is
    killed, until the owner calls :func:`forget_temp` (renamed away or removed).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=_owner_prefix(label), dir=parent))
    _live_temps.add(folder)
    return folder


def forget_temp(path: Path) -> None:
    """``path`` is no longer this process's temp (it was renamed into place or removed)."""
    _live_temps.discard(Path(path))


@contextlib.contextmanager
def temp_dir(parent: Path, label: str = "") -> Iterator[Path]:
    """A private folder inside ``parent`` (same file system: renames and links work),
    named with its owner so that a later run can clean it up if this one is killed."""
    folder = make_temp_dir(parent, label)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        forget_temp(folder)


def remove_live_temps() -> None:
    """Remove this process's temp files and folders now (the interrupt path)."""
    for path in list(_live_temps):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        _live_temps.discard(path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _temp_owner(name: str) -> tuple[int, str] | None:
    """(pid, host tag) of a temp name this module made; None for any other name."""
    if not name.startswith("."):
        return None
    match = _OWNER_RE.search(name)
    return None if match is None else (int(match.group(1)), match.group(2))


def is_temp(name: str) -> bool:
    """True for a temp file or folder name this module made (any owner, any host)."""
    return _temp_owner(name) is not None


def is_stale_temp(name: str) -> bool:
    """True for a temp whose owner is gone: this host's, and its pid no longer runs.

    Another host's temps are never stale here (their pids mean nothing on this
    one), and a reused pid keeps its temps: both are the safe direction.
    """
    owner = _temp_owner(name)
    return owner is not None and owner[1] == _host_tag() and not _pid_alive(owner[0])


def stale_temps(folder: Path) -> list[Path]:
    """The temp files and folders directly in ``folder`` whose owner is gone
    (:func:`is_stale_temp`), sorted; nothing is removed."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    return [Path(folder) / name for name in sorted(names) if is_stale_temp(name)]


def holds_live_temp(folder: Path) -> bool:
    """True when ``folder`` directly holds a temp whose owner may still be running
    (a live pid, or another host's): work in progress is there."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return False
    return any(is_temp(name) and not is_stale_temp(name) for name in names)


def clean_stale_temps(folder: Path) -> int:
    """Remove temp files and folders in ``folder`` whose owner process is gone.

    Only names this module made are touched, only this host's, and only when
    their pid no longer runs (:func:`stale_temps` finds them). Returns how
    many were removed.
    """
    removed = 0
    for path in stale_temps(folder):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed += 1
    if removed:
        log.info("removed %d temp file(s) a killed phd left in %s", removed, folder)
    return removed


# -- claiming final names -----------------------------------------------------
def claim(src: Path, dest: Path, overwrite: bool = False) -> tuple[int, int]:
    """Move the finished file ``src`` to ``dest``; returns dest's (st_dev, st_ino).

    Without ``overwrite`` an existing ``dest`` (a file, a directory, even a
    dangling symlink) raises FileExistsError and nothing changes: a hard link
    is created exclusively by the kernel, then ``src`` is unlinked. Where
    links are not supported, an exclusive create reserves the name first.
    """
    src, dest = Path(src), Path(dest)
    if overwrite:
        os.replace(src, dest)
    else:
        try:
            os.link(src, dest, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                 errno.EMLINK):
                raise
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(src, dest)
        else:
            os.unlink(src)
    st = os.stat(dest, follow_symlinks=False)
    return st.st_dev, st.st_ino


def unclaim(dest: Path, identity: tuple[int, int]) -> None:
    """Undo :func:`claim`: remove ``dest`` only if it is still the file we put there."""
    with contextlib.suppress(OSError):
        st = os.stat(dest, follow_symlinks=False)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(dest)


# -- checks before work ---------------------------------------------------------
def writable_folder(folder: Path, what: str) -> None:
    """Raise PhdError unless ``folder`` is (or can be created as) a writable folder.

    Creates nothing: an absent folder is checked at its nearest existing
    ancestor. Writing is tried for real (a temp file), since permission bits
    say nothing about read-only mounts, ACLs or root.
    """
    folder = Path(folder)
    probe_at = folder
    while not probe_at.exists():
        if probe_at.is_symlink():  # a dangling link: nothing can be made there
            raise PhdError(f"{what} {folder}: {probe_at} is a broken link")
        if probe_at.parent == probe_at:
            break
        probe_at = probe_at.parent
    if not probe_at.is_dir():
        where = "is" if probe_at == folder else f"is inside {probe_at}, which is"
        raise PhdError(f"{what} {folder} {where} not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=_owner_prefix("write-check"), dir=probe_at)
    except OSError as exc:
        raise PhdError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system at ``folder`` allows."""
    probe_at = Path(folder)
    while not probe_at.exists() and probe_at.parent != probe_at:
        probe_at = probe_at.parent
    try:
        return int(os.pathconf(probe_at, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


# -- locks --------------------------------------------------------------------
@contextlib.contextmanager
def locked(lock_file: Path, what: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold an exclusive OS lock on ``lock_file`` (one writer at a time).

    The lock is an flock/fcntl lock via ``filelock``: it is released when the
    process dies, so a killed phd never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(lock_file, timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise PhdError(f"{what} is busy: another phd has held {lock_file} for over "
                       f"{timeout_s:g} s") from None
    try:
        yield
    finally:
        lock.release()


# -- writing and hashing ----------------------------------------------------------
def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final, suffix=".tmp") as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Streamed sha256 of a regular file's content (hex); a FIFO or device raises
    OSError (:class:`cachefile.RefusedEntry`) instead of blocking or never ending."""
    digest = hashlib.sha256()
    with open_entry(path, None, follow=True) as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
