"""Streaming one file into a resumable ``.part``, hashing as it arrives.

Over http(s): a Range request resumes what an interrupted run left, a
server that ignores Range or answers 416 gets a fresh start, a trickle or
an endless body is given up. From a ``file://`` URL: a plain copy (nothing
to resume). What to fetch, where to put it and what to check is
``phdcli.features.registry``.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from phdcli.errors import DownloadError

ByteProgress = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes_or_None)``."""

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 30.0
_USER_AGENT = "phd (phdcli weights fetch)"
_STALL_S = 60.0  # less than 1 KiB in this long: give up (the .part stays for a resume)
_MAX_UNKNOWN_BYTES = 2_000_000_000  # C3D weights are 312 MB; an endless body is not them


class NotReached(DownloadError):
    """The server could not be reached or refused the file (no byte came)."""


def local_path(url: str) -> Path | None:
    """The file a ``file://`` URL names; None for any other URL."""
    split = urllib.parse.urlsplit(url)
    if split.scheme.lower() != "file":
        return None
    return Path(urllib.request.url2pathname(split.path))


def download(url: str, part: Path, size_bytes: int | None,
             progress: ByteProgress | None) -> str:
    """Stream ``url`` into ``part``, resuming what is there; return its sha256.

    ``size_bytes``: the expected size when known (a longer ``part`` cannot be
    a prefix of the file).
    """
    source = local_path(url)
    if source is not None:
        return _copy(source, part, progress)
    offset = part.stat().st_size if part.exists() else 0
    if size_bytes is not None and offset > size_bytes:
        offset = 0  # longer than the real file: cannot be a prefix of it
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or offset == 0:
            raise _http_error(url, exc) from None
        # 416: our .part is no prefix the server recognises (or already whole,
        # but we cannot tell which): start over.
        offset = 0
        response = _open_or_raise(url, 0)
    if offset > 0 and not _resumes_at(response, offset):
        if response.status != 200:
            # A partial answer that does not start where we asked: start over.
            response.close()
            response = _open_or_raise(url, 0)
        offset = 0  # a 200 is the whole file: the server ignored Range
    with response:
        digest = hashlib.sha256()
        if offset > 0:
            # Hash the prefix we already have, then keep hashing as we append.
            with open(part, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    digest.update(chunk)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size_bytes
        done = offset
        cap = total if total is not None else _MAX_UNKNOWN_BYTES
        mark, mark_t = done, time.monotonic()

        def guard(received: int) -> None:
            """No endless body, no trickle: checked after each chunk."""
            nonlocal done, mark, mark_t
            done = received  # what an interruption reports
            if done > cap:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: more than {cap} bytes; not C3D weights "
                                    "(download deleted)")
            now = time.monotonic()
            if done - mark >= 1024:
                mark, mark_t = done, now
            elif now - mark_t > _STALL_S:
                raise _interrupted(url, done, f"stalled: under 1 KiB in {_STALL_S:g} s")

        try:
            with open(part, "ab" if offset > 0 else "wb") as out:
                # read1: whatever arrived, so that a server trickling a byte every
                # few seconds is noticed (read(n) would wait for all n bytes).
                done = _pump(response.read1, out, digest, done, total, progress, guard)
        except (OSError, http.client.HTTPException) as exc:
            raise _interrupted(url, done, type(exc).__name__) from None
    # http.client just stops at EOF when the server hangs up early: compare
    # with what was announced. Keep the .part: the next fetch resumes from it.
    if total is not None and done < total:
        raise _interrupted(url, done, f"expected {total}")
    return digest.hexdigest()


def _copy(source: Path, part: Path, progress: ByteProgress | None) -> str:
    """A local file into ``part`` (from the start: a copy is cheap to redo)."""
    if not source.is_file():
        raise NotReached(f"{source}: no such file")
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(part, "wb") as out:
        _pump(src.read, out, digest, 0, source.stat().st_size, progress)
    return digest.hexdigest()


def _pump(read: Callable[[int], bytes], out: BinaryIO, digest: Any, done: int,
          total: int | None, progress: ByteProgress | None,
          guard: Callable[[int], None] | None = None) -> int:
    """Copy ``read``'s chunks into ``out`` and ``digest`` from byte ``done`` on,
    telling ``progress`` and ``guard`` after each; return the bytes done."""
    if progress is not None:
        progress(done, total)
    while chunk := read(_CHUNK_BYTES):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
        if guard is not None:
            guard(done)
    return done


def _interrupted(url: str, done: int, why: str) -> DownloadError:
    return DownloadError(f"download of {url} interrupted after {done} bytes ({why}); "
                         f"run it again to resume")


def _http_error(url: str, exc: urllib.error.HTTPError) -> NotReached:
    return NotReached(f"cannot download {url}: HTTP {exc.code} {exc.reason}")


def _open_or_raise(url: str, offset: int) -> http.client.HTTPResponse:
    try:
        return _open(url, offset)
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc) from None


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        raise NotReached(f"cannot reach {host} ({exc.reason}) for {url}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NotReached(f"cannot download {url}: {type(exc).__name__}: {exc}") from None


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when the server answered our Range with the bytes from ``offset``."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return start == offset
