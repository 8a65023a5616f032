"""yt-dlp as a library: one video into a folder, its title and its heatmap, errors in one line.

This runs inside the watched download worker (``phdcli.sources.worker``),
never in phd's own process: yt-dlp cannot be stopped from outside, so the
worker's parent enforces the limits it cannot. The file name uses no remote
field but the extension, so a title cannot steer the path. No part of the
folder reaches yt-dlp either: it expands ``$NAME``, ``~`` and surrounding
spaces in its output folder (``paths``) and template fields in its template,
so a ``PHD_HOME`` under ``$HOME-x`` or ``%(id)s`` would send the download
elsewhere. yt-dlp writes into its current folder, the work folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from phdcli.errors import DownloadError
from phdcli.sources.options import DownloadOptions, Progress

log = logging.getLogger("phd")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def fetch(url: str, work: Path, options: DownloadOptions, progress: Progress | None
          ) -> tuple[Path, str, Any]:
    """Download ``url`` into ``work``; return the file, the remote title and yt-dlp's
    ``heatmap`` as it came (untrusted: ``phdcli.sources.heatmap.parse`` checks it)."""
    # Lazy: `phd --help` must not pay for yt-dlp's import.
    import yt_dlp

    try:
        with _inside(work), yt_dlp.YoutubeDL(ydl_options(options, progress)) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise DownloadError(error_line(url, exc)) from exc
    except yt_dlp.utils.YoutubeDLError as exc:  # e.g. an unsupported scheme
        raise DownloadError(error_line(url, exc)) from exc
    video = single_video(info)
    # The final file: a progress hook's name is the temp one; None if skipped.
    requested = video.get("requested_downloads") or [{}]
    filepath = requested[0].get("filepath")
    downloaded = work / filepath if filepath else None  # relative to the work folder
    if downloaded is None or not downloaded.is_file():
        if options.max_filesize_bytes is not None:
            # yt-dlp skips an oversized file silently: no exception, no path.
            raise DownloadError(f"{url}: larger than --max-filesize "
                                f"({options.max_filesize_text})")
        raise DownloadError(f"{url}: download failed: no video file was written")
    if not downloaded.resolve().is_relative_to(work.resolve()):
        # Our template uses no remote field but the extension; never trust that blindly.
        raise DownloadError(f"{url}: download failed: file landed outside the cache")
    return downloaded, str(video.get("title") or ""), video.get("heatmap")


def ydl_options(options: DownloadOptions, progress: Progress | None) -> dict[str, Any]:
    from phdcli.media.ffmpeg import ffmpeg_exe

    h = int(options.max_height)
    hooks = [_progress_hook(progress)] if progress is not None else []
    return {
        # "?" keeps formats of unknown height (a direct .mp4 link has none);
        # the last "/b" takes whatever there is rather than failing.
        "format": f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/b[height<=?{h}]/b",
        "merge_output_format": "mp4",
        "ffmpeg_location": ffmpeg_exe(),
        # No remote field but the extension: a title cannot steer the path.
        # No folder either ("paths" would have $NAME and ~ expanded): the
        # file lands in the current folder, which fetch makes ``work``.
        "outtmpl": {"default": "video.%(ext)s"},
        "paths": {},
        "noplaylist": True,
        "playlist_items": "1",  # a page with many videos must not fetch them all
        "quiet": True,
        "noprogress": True,  # quiet alone still draws yt-dlp's own bar
        "no_warnings": True,
        "logger": _QuietLogger(),
        "max_filesize": options.max_filesize_bytes,
        "progress_hooks": hooks,
        "socket_timeout": 20,
        "retries": 2,
        "fragment_retries": 2,
        "cachedir": False,  # keep yt-dlp out of ~/.cache: our cache is the folder above
        **({} if options.archive is None else {"download_archive": str(options.archive)}),
    }


@contextlib.contextmanager
def _inside(work: Path) -> Iterator[None]:
    """``work`` as the current folder for the body (the worker runs one job at a time)."""
    before = os.getcwd()
    os.chdir(work)
    try:
        yield
    finally:
        os.chdir(before)


def _progress_hook(progress: Progress) -> Callable[[dict[str, Any]], None]:
    def hook(status: dict[str, Any]) -> None:
        if status.get("status") not in ("downloading", "finished"):
            return
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        progress(int(status.get("downloaded_bytes") or 0), int(total) if total else None)

    return hook


class _QuietLogger:
    """Swallows yt-dlp's own output: errors reach the user as our one line."""

    def debug(self, msg: str) -> None:  # yt-dlp's info lines arrive here too
        pass

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)  # visible with debug logging, never on the console

    info = debug
    error = warning


def single_video(info: Any) -> dict[str, Any]:
    """The one video's info: a page of many gives a playlist cut to one entry."""
    if isinstance(info, dict) and info.get("_type") == "playlist":
        entries = [e for e in info.get("entries") or [] if isinstance(e, dict)]
        return entries[0] if entries else {}
    return info if isinstance(info, dict) else {}


def one_line(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def error_line(url: str, exc: Exception) -> str:
    """yt-dlp's failure as ``<url>: <what happened>`` on one line."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import UnsupportedError

    exc_info = getattr(exc, "exc_info", None)
    cause = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
    if isinstance(cause, HTTPError):
        return f"{url}: download failed: HTTP Error {cause.status}: {one_line(cause.reason)}"
    if isinstance(cause, TransportError):
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", one_line(str(cause.msg or cause)))
        return f"{url}: cannot connect ({reason})"
    if isinstance(cause or exc, UnsupportedError):
        return f"{url}: unsupported URL (no video found there)"
    message = one_line(str(exc))
    message = re.sub(r"^ERROR:\s*", "", message)
    message = re.sub(r"^\[[\w:.-]+\]\s*[^:]*:\s*", "", message)  # "[generic] v: "
    message = re.sub(r"\s*\(caused by .*\)$", "", message)
    # "Unable to handle request: Unsupported url scheme: "x" (urllib)"
    message = re.sub(r"^Unable to handle request: (Unsupported url scheme: .*?)(?: \(\w+\))?$",
                     r"\1", message)
    return f"{url}: download failed: {message or type(exc).__name__}"
