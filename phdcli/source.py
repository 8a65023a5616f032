"""Turning the user's input (a file path or a URL) into a local video file.

The first stage of the pipeline: everything after it sees a local path. URLs
are downloaded with yt-dlp *as a library* into a cache folder keyed by the URL,
so a second run on the same URL costs no network at all. The remote title is
only ever used for display and output names, and only after sanitising: it
never takes part in building a path.

yt-dlp runs in a watched worker process (:mod:`phdcli.download_worker`)
that is killed when a download passes ``--max-filesize``, stalls or runs
past ``--download-timeout``. Partial files live in a private folder that is
removed on every failure and interrupt (and by the next run if phd itself
was killed). A download must probe as a readable video before it enters the
cache; ``--refresh`` ignores what is cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phdcli import fsutil, paths
from phdcli import heatmap as heatmaps
from phdcli.errors import DownloadError, InputError, UsageError
from phdcli.fsutil import atomic_write_text

log = logging.getLogger("phd")

Progress = Callable[[int, int | None], None]
"""``progress(downloaded_bytes, total_bytes_or_None)``."""

# A scheme of two or more characters: "C://x" and "C:\\x" are Windows drives.
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STEM_MAX = 80
_SOURCE_JSON = "source.json"

# Defaults of the download limits (all on unless raised): yt-dlp's own
# --max-filesize has no default, but "never fill the disk" needs one.
MAX_FILESIZE_BYTES = 4_000_000_000
STALL_TIMEOUT_S = 60.0
DOWNLOAD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ResolvedInput:
    input: str  # what the user typed
    path: Path  # a local video file (not yet probed)
    stem: str  # safe for display and for output file names
    downloaded: bool  # True when ``path`` lives in the downloads cache
    heatmap: heatmaps.Heatmap | None = None  # "most replayed", when the site publishes it


@dataclass(frozen=True)
class DownloadOptions:
    max_height: int = 720
    max_filesize_bytes: int | None = MAX_FILESIZE_BYTES  # None: no limit
    stall_timeout_s: float = STALL_TIMEOUT_S
    timeout_s: float = DOWNLOAD_TIMEOUT_S  # the whole download, extraction included
    refresh: bool = False  # download again even if cached
    archive: Path | None = None  # yt-dlp's download archive (dataset builds)

    def __post_init__(self) -> None:
        if self.max_height < 1:
            raise UsageError(f"--max-height must be at least 1, got {self.max_height}")
        if self.max_filesize_bytes is not None and self.max_filesize_bytes <= 0:
            raise UsageError("--max-filesize must be positive")
        for flag, value in (("--stall-timeout", self.stall_timeout_s),
                            ("--download-timeout", self.timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} must be a positive number of seconds, got {value}")


def is_url(text: str) -> bool:
    """True for ``scheme://...`` input that is not also an existing local file."""
    if not _URL_RE.match(text):
        return False
    try:  # a folder literally named "http:" could hold it; the user meant the file
        return not Path(text).exists()
    except (OSError, ValueError):
        return True


def safe_stem(title: str, fallback: str = "video") -> str:
    """``title`` reduced to ``[A-Za-z0-9._-]``, no leading dot, at most 80 chars, never empty.

    With no separator left, no ``..`` component can exist either; runs of
    other characters become one ``_`` so that a unicode title stays short.
    """
    stem = _UNSAFE_RUN.sub("_", title).lstrip("._-")
    # Trailing dots and spaces are stripped by Windows; trailing "_" is noise.
    stem = stem[:STEM_MAX].rstrip("._-")
    return stem or fallback


def resolve_input(
    text: str,
    options: DownloadOptions = DownloadOptions(),  # noqa: B008 (frozen, so sharing is safe)
    progress: Progress | None = None,
) -> ResolvedInput:
    """A local path as it is (the prober checks it), or a URL downloaded once into the cache."""
    if text.lower().startswith("file://"):  # yt-dlp refuses these; they are local files
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        path = Path(url2pathname(urlsplit(text).path))
        return ResolvedInput(input=text, path=path, stem=safe_stem(path.stem), downloaded=False)
    if not is_url(text):
        path = Path(text).expanduser()
        return ResolvedInput(input=text, path=path, stem=safe_stem(path.stem), downloaded=False)
    folder = paths.downloads_cache_dir() / hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    cached = None if options.refresh else _cached(folder, text)
    if cached is not None:
        return cached
    return _download(text, folder, options, progress)


def _cached(folder: Path, url: str) -> ResolvedInput | None:
    """The earlier download of ``url`` if ``source.json`` and its file are both there."""
    try:
        meta = json.loads((folder / _SOURCE_JSON).read_text(encoding="utf-8"))
        name, title = str(meta["file"]), str(meta.get("title") or "")
        if meta["url"] != url or Path(name).name != name or name in ("", ".", ".."):
            return None  # another URL (hash clash) or a hand-edited file: download again
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = folder / name
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return ResolvedInput(input=url, path=path, stem=safe_stem(title), downloaded=True,
                         heatmap=heatmaps.parse(meta.get("heatmap")))


def _download(url: str, folder: Path, options: DownloadOptions, progress: Progress | None
              ) -> ResolvedInput:
    folder.mkdir(parents=True, exist_ok=True)
    for sibling in folder.parent.iterdir():  # what a killed phd left mid-download
        if sibling.is_dir():
            fsutil.clean_stale_temps(sibling)
    # A stale source.json must not outlive a failed retry.
    (folder / _SOURCE_JSON).unlink(missing_ok=True)
    try:
        # yt-dlp writes into a private temp folder: a failure removes it whole,
        # and nothing half-downloaded ever sits beside a finished file.
        with fsutil.temp_dir(folder, "dl") as work:
            try:
                from phdcli.download_worker import fetch_watched

                downloaded, title, heatmap_json = fetch_watched(url, work, options, progress)
                heatmap = heatmaps.parse(heatmap_json)
                _check_readable(url, downloaded)
                final = folder / downloaded.name
                downloaded.replace(final)
                meta = {"url": url, "title": title, "file": final.name,
                        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "heatmap": None if heatmap is None else heatmaps.to_json(heatmap)}
                atomic_write_text(folder / _SOURCE_JSON, json.dumps(meta, indent=1) + "\n")
            except OSError as exc:  # disk full, permissions: still one line
                raise DownloadError(f"{url}: download failed: {_one_line(str(exc))}") from exc
    except BaseException:
        # Nothing from a failed attempt may remain (a stale video included).
        with contextlib.suppress(OSError):
            for leftover in folder.iterdir():
                if leftover.is_file():
                    leftover.unlink()
        raise
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when a failure left it empty
    return ResolvedInput(input=url, path=final, stem=safe_stem(title), downloaded=True,
                         heatmap=heatmap)


def _check_readable(url: str, downloaded: Path) -> None:
    """A download enters the cache only if it probes as a video (an HTML error
    page served as video/mp4 would otherwise be "cached" forever)."""
    from phdcli.video import probe

    try:
        probe(downloaded)
    except InputError as exc:
        reason = str(exc).removeprefix(f"{downloaded}: ")
        raise DownloadError(f"{url}: the download is not a readable video ({reason}); "
                            "nothing was cached") from None


def _fetch(url: str, work: Path, options: DownloadOptions, progress: Progress | None
           ) -> tuple[Path, str, heatmaps.Heatmap | None]:
    """Download ``url`` into ``work``; return the file, the remote title and heatmap."""
    # Lazy: `phd --help` must not pay for yt-dlp's import.
    import yt_dlp

    try:
        with yt_dlp.YoutubeDL(ydl_options(work, options, progress)) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise DownloadError(error_line(url, exc)) from exc
    except yt_dlp.utils.YoutubeDLError as exc:  # e.g. an unsupported scheme
        raise DownloadError(error_line(url, exc)) from exc
    video = single_video(info)
    # The final file: a progress hook's name is the temp one; None if skipped.
    requested = video.get("requested_downloads") or [{}]
    filepath = requested[0].get("filepath")
    downloaded = Path(filepath) if filepath else None
    if downloaded is None or not downloaded.is_file():
        if options.max_filesize_bytes is not None:
            # yt-dlp skips an oversized file silently: no exception, no path.
            limit_mb = options.max_filesize_bytes / 1_000_000
            raise DownloadError(f"{url}: larger than --max-filesize ({limit_mb:g} MB)")
        raise DownloadError(f"{url}: download failed: no video file was written")
    if not downloaded.resolve().is_relative_to(work.resolve()):
        # Our template uses no remote field but the extension; never trust that blindly.
        raise DownloadError(f"{url}: download failed: file landed outside the cache")
    return downloaded, str(video.get("title") or ""), heatmaps.parse(video.get("heatmap"))


def ydl_options(work: Path, options: DownloadOptions, progress: Progress | None
                 ) -> dict[str, Any]:
    from phdcli.ffmpeg import ffmpeg_exe

    h = int(options.max_height)
    hooks = [_progress_hook(progress)] if progress is not None else []
    return {
        # "?" keeps formats of unknown height (a direct .mp4 link has none);
        # the last "/b" takes whatever there is rather than failing.
        "format": f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/b[height<=?{h}]/b",
        "merge_output_format": "mp4",
        "ffmpeg_location": ffmpeg_exe(),
        # No remote field but the extension: a title cannot steer the path.
        # The folder goes in "paths", not the template, so a "%" in PHD_HOME
        # is never read as a template field.
        "outtmpl": {"default": "video.%(ext)s"},
        "paths": {"home": str(work), "temp": str(work)},
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


def _one_line(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def error_line(url: str, exc: Exception) -> str:
    """yt-dlp's failure as ``<url>: <what happened>`` on one line."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import UnsupportedError

    exc_info = getattr(exc, "exc_info", None)
    cause = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
    if isinstance(cause, HTTPError):
        return f"{url}: download failed: HTTP Error {cause.status}: {_one_line(cause.reason)}"
    if isinstance(cause, TransportError):
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", _one_line(str(cause.msg or cause)))
        return f"{url}: cannot connect ({reason})"
    if isinstance(cause or exc, UnsupportedError):
        return f"{url}: unsupported URL (no video found there)"
    message = _one_line(str(exc))
    message = re.sub(r"^ERROR:\s*", "", message)
    message = re.sub(r"^\[[\w:.-]+\]\s*[^:]*:\s*", "", message)  # "[generic] v: "
    message = re.sub(r"\s*\(caused by .*\)$", "", message)
    # "Unable to handle request: Unsupported url scheme: "x" (urllib)"
    message = re.sub(r"^Unable to handle request: (Unsupported url scheme: .*?)(?: \(\w+\))?$",
                     r"\1", message)
    return f"{url}: download failed: {message or type(exc).__name__}"
