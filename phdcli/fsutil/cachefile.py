"""The one opener for files phd reads back from its cache: plain files of bounded size only.

A cache entry (a clip table, converted or int8 weights, a hash memo, a
history manifest) is a regular file that phd wrote by renaming it into
place. Anything else found under its name (a FIFO, a device, a symbolic
link to ``/dev/zero``, a file far larger than its kind ever is) was put there
by someone else and is refused: :class:`RefusedEntry`, an OSError, which the
callers' existing "damaged entry" handling turns into one warning and a
recomputation. Opening never blocks (``O_NONBLOCK``: a FIFO without a writer
opens at once, then fstat refuses it) and never follows a link at the last
component (``O_NOFOLLOW``); the size is checked on the open descriptor, so
what is checked is what is read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# What each kind of entry can hold at most (far above any real one: the
# bound is against a file that never ends, not a tight fit).
SMALL_JSON_MAX = 1 * MIB  # hash memos, int8 verdicts and manifests, pointers, records
CLIP_TABLE_MAX = 2 * GIB  # one video's clip features (16 KiB a clip)
WEIGHTS_MAX = 2 * GIB  # converted C3D weights (312 MB) and the int8 network (80 MB)


class RefusedEntry(OSError):
    """A cache entry that is not a regular file phd could have written, or is too large."""

    def __str__(self) -> str:  # "a FIFO", not "[Errno 22] a FIFO: '/the/path'"
        return str(self.strerror)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_fd(path: Path, max_bytes: int | None, follow: bool = False) -> int:
    """A read-only descriptor of ``path`` once it is known to be a regular file of
    at most ``max_bytes`` (None: any size); raises RefusedEntry otherwise.

    ``follow`` allows a symbolic link at the last component (a user's input
    file may be one; a cache entry never is).
    """
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0)))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise RefusedEntry(errno.ELOOP, "a symbolic link, not a file phd wrote",
                               str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedEntry(errno.EINVAL, _kind(st.st_mode), str(path))
        if max_bytes is not None and st.st_size > max_bytes:
            raise RefusedEntry(errno.EFBIG, f"{st.st_size} bytes, more than such a file holds "
                               f"({max_bytes})", str(path))
        os.set_blocking(fd, True)  # a regular file: reads are ordinary again
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_entry(path: Path, max_bytes: int | None, follow: bool = False) -> BinaryIO:
    """:func:`open_fd` as a binary file object (for readers that take one)."""
    return os.fdopen(open_fd(path, max_bytes, follow), "rb")


def read_entry(path: Path, max_bytes: int) -> bytes:
    """The bytes of the cache entry ``path``: never more than ``max_bytes`` read,
    even from a file that grows while it is read."""
    with open_entry(path, max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RefusedEntry(errno.EFBIG, f"more than {max_bytes} bytes", str(path))
    return data


def read_entry_text(path: Path, max_bytes: int = SMALL_JSON_MAX) -> str:
    return read_entry(path, max_bytes).decode("utf-8")


@contextlib.contextmanager
def checked_path(path: Path, max_bytes: int) -> Iterator[Path]:
    """A name for the very file :func:`open_fd` checked, for libraries that open
    by name (safetensors): ``/proc/self/fd/N`` (``/dev/fd/N``), which stays that
    file whatever is renamed over ``path`` meanwhile; ``path`` where there is
    neither."""
    fd = open_fd(path, max_bytes)
    try:
        for folder in ("/proc/self/fd", "/dev/fd"):
            if os.path.isdir(folder):
                yield Path(folder) / str(fd)
                break
        else:
            yield Path(path)
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    """Remove a refused or damaged entry (a link itself, never what it points to)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
