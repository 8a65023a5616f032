"""Turning the user's inputs (files, folders, URLs) into local video files.

The first stage of the pipeline: everything after it sees a local path.
``expand_inputs`` turns folders into the videos they hold; ``resolve_input``
takes a path as it is, or downloads a URL with yt-dlp into a cache folder
keyed by the URL, so a second run on the same URL costs no network at all.
The remote title is only ever used for display and output names, and only
after sanitising: it never takes part in building a path.

yt-dlp runs in a watched worker process (:mod:`phdcli.sources.worker`)
that is killed when a download passes ``--max-filesize``, stalls or runs
past ``--download-timeout``. Partial files live in a private folder that is
removed on every failure and interrupt (and by the next run if phd itself
was killed). A download must probe as a readable video before it enters the
cache; ``--refresh`` ignores what is cached. ``orphaned_downloads`` lists the
folders that hold no finished download, for ``phd cache prune``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from phdcli import fsutil, paths
from phdcli.errors import DownloadError, InputError
from phdcli.fsutil import atomic_write_text
from phdcli.fsutil.cachefile import read_entry_text
from phdcli.sources import heatmap as heatmaps
from phdcli.sources.options import DownloadOptions, Progress
from phdcli.sources.ytdlp import one_line

# A scheme of two or more characters: "C://x" and "C:\\x" are Windows drives.
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
STEM_MAX = 80
NAME_MAX = 255  # bytes in one path component, on every file system phd reads from
_SOURCE_JSON = "source.json"
# What a folder given as an input is searched for (top level only).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif", ".flv", ".ts", ".mpg")


@dataclass(frozen=True)
class ResolvedInput:
    input: str  # what the user typed
    path: Path  # a local video file (not yet probed)
    stem: str  # safe for display and for output file names
    downloaded: bool  # True when ``path`` lives in the downloads cache
    heatmap: heatmaps.Heatmap | None = None  # "most replayed", when the site publishes it


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

        path = _local_path(text, url2pathname(urlsplit(text).path))
        return ResolvedInput(input=text, path=path, stem=safe_stem(path.stem), downloaded=False)
    if not is_url(text):
        path = _local_path(text, text)
        return ResolvedInput(input=text, path=path, stem=safe_stem(path.stem), downloaded=False)
    folder = paths.downloads_cache_dir() / _entry_name(text)
    cached = None if options.refresh else _cached(folder, text)
    if cached is not None:
        return cached
    if options.offline:
        raise InputError(f"{text}: not downloaded yet, and downloads are off (--offline, "
                         "PHD_OFFLINE or offline = true in the config file)")
    return _download(text, folder, options, progress)


def _local_path(text: str, raw: str) -> Path:
    """``raw`` as a local path, or this input's one-line InputError (in a batch,
    a path no file can have fails that input only)."""
    if "\0" in raw:
        raise InputError(f"{text!r}: a path cannot hold a NUL byte")
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # "~nosuchuser/x.mp4"
        raise InputError(f"{text}: no home folder for {raw.split('/')[0]}") from None
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > NAME_MAX:
        raise InputError(f"{text}: a path component of {longest} bytes is over the "
                         f"{NAME_MAX} a file name can have")
    return path


def _entry_name(url: str) -> str:
    """The downloads-cache folder of ``url``."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def complete_download(folder: Path) -> Path | None:
    """The video of the finished download in the downloads-cache folder ``folder``:
    what ``resolve_input`` of its URL returns without downloading; None if there is none."""
    try:
        url = json.loads(read_entry_text(folder / _SOURCE_JSON))["url"]
        # source.json must name the URL the folder is keyed by, or no lookup reaches it.
        if not isinstance(url, str) or folder.name != _entry_name(url):
            return None
        cached = _cached(folder, url)
    except (OSError, ValueError, KeyError, TypeError):  # a file that vanished meanwhile too
        return None
    return None if cached is None else cached.path


def is_orphaned_download(folder: Path) -> bool:
    """True for a downloads-cache folder that holds no complete download and no
    download in progress (a temp whose owner may be running): a failed or killed one's."""
    return not fsutil.holds_live_temp(folder) and complete_download(folder) is None


def orphaned_downloads() -> list[Path]:
    """The folders of the downloads cache that :func:`is_orphaned_download`, sorted."""
    root = paths.downloads_cache_dir()
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                         and not fsutil.is_temp(p.name))
    except OSError:
        return []
    return [folder for folder in folders if is_orphaned_download(folder)]


def _cached(folder: Path, url: str) -> ResolvedInput | None:
    """The earlier download of ``url`` if ``source.json`` and its file are both there."""
    try:
        meta = json.loads(read_entry_text(folder / _SOURCE_JSON))
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
                from phdcli.sources.worker import fetch_watched

                downloaded, title, raw_heatmap = fetch_watched(url, work, options, progress)
                heatmap = heatmaps.parse(raw_heatmap)
                _check_readable(url, downloaded)
                final = folder / downloaded.name
                downloaded.replace(final)
                meta = {"url": url, "title": title, "file": final.name,
                        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "heatmap": None if heatmap is None else heatmaps.to_json(heatmap)}
                atomic_write_text(folder / _SOURCE_JSON, json.dumps(meta, indent=1) + "\n")
            except OSError as exc:  # disk full, permissions: still one line
                raise DownloadError(f"{url}: download failed: {one_line(str(exc))}") from exc
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
    from phdcli.media.probe import probe

    try:
        probe(downloaded)
    except InputError as exc:
        reason = str(exc).removeprefix(f"{downloaded}: ")
        raise DownloadError(f"{url}: the download is not a readable video ({reason}); "
                            "nothing was cached") from None


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(inputs with each folder replaced by the videos in it, sorted; (input, problem)
    for each folder that cannot be listed or holds no video)."""
    expanded: list[str] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        try:
            is_dir = Path(item).is_dir()
        except (OSError, ValueError):  # a name too long, a NUL: that input's failure, later
            is_dir = False
        if is_dir:
            path = Path(item)
            try:
                found = sorted(
                    str(p) for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                    and not p.name.startswith(".")
                )
            except OSError as exc:
                problems.append((item, f"{item}: cannot list the folder ({exc.strerror or exc})"))
                continue
            if not found:
                problems.append((item, f"no videos in {item}"))
            expanded.extend(found)
        else:
            expanded.append(item)
    return expanded, problems
