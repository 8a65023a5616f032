"""Fetching a dataset's videos with yt-dlp: at most 360p, an archive, retries with backoff.

C3D sees 128x171 frames, so 360p is all a dataset needs and keeps PHD^2's
download small. The archive (yt-dlp's own, ``download-archive.txt`` in the
videos folder) stops a second fetch of a video even after its file is
deleted. Each download goes to a private temp folder and is renamed to
``<id>.<ext>``: never half a file under a final name. yt-dlp runs in phd's
watched download worker (:mod:`phdcli.sources.worker`), under the same
size, stall and deadline limits as ``phd suggest``. On a shared
filesystem, appends to the archive from many machines can interleave; the
worst case is a garbled line, after which that one video may be fetched
again (the files themselves are what the build trusts).
"""

from __future__ import annotations

import glob
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli import fsutil
from phdcli.errors import DownloadError

if TYPE_CHECKING:
    from phdcli.sources.options import DownloadOptions

log = logging.getLogger("phd")

ARCHIVE = "download-archive.txt"  # yt-dlp's download archive, inside videos_dir
YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
DATASET_MAX_HEIGHT = 360
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".flv")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PermanentDownloadError(DownloadError):
    """A failure that a retry cannot fix (bad id, archived but deleted)."""


def find_video(videos_dir: Path, youtube_id: str) -> Path | None:
    """``<videos_dir>/<youtube_id>.<ext>`` for a video suffix, if there is one."""
    pattern = str(Path(videos_dir) / f"{glob.escape(youtube_id)}.*")
    found = sorted(Path(p) for p in glob.glob(pattern))
    found = [p for p in found if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    return found[0] if found else None


def archived_ids(archive: Path) -> set[str]:
    """Video ids in a yt-dlp download archive (lines ``<extractor> <id>``)."""
    try:
        lines = Path(archive).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    return {parts[1] for line in lines if len(parts := line.split()) >= 2}


def fetch_with_retries(
    youtube_id: str, videos_dir: Path, url_template: str, attempts: int = 3,
    backoff_s: float = 2.0, max_height: int = DATASET_MAX_HEIGHT,
    limits: DownloadOptions | None = None,
) -> tuple[Path, int]:
    """(the video's path, attempts used); raises DownloadError after the last attempt.

    Waits ``backoff_s * 2**i`` between attempts; a permanent failure is not retried.
    """
    if not _YOUTUBE_ID.match(youtube_id):  # it becomes a file name and a URL part
        raise PermanentDownloadError(f"{youtube_id!r}: not a YouTube video id")
    videos_dir = Path(videos_dir)
    archive = videos_dir / ARCHIVE
    if youtube_id in archived_ids(archive):
        # The archive's own check comes after yt-dlp has already requested the page.
        raise PermanentDownloadError(
            f"{youtube_id}: in {ARCHIVE} but not in {videos_dir} (deleted since?)")
    url = url_template.format(id=youtube_id)
    for attempt in range(1, attempts + 1):
        try:
            return fetch_video(youtube_id, url, videos_dir, archive, max_height, limits), attempt
        except PermanentDownloadError:
            raise
        except DownloadError as exc:
            if attempt == attempts:
                raise DownloadError(f"{exc} (after {attempts} attempts)") from None
            wait = backoff_s * 2 ** (attempt - 1)
            log.info("%s; retrying in %.0f s", exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def fetch_video(youtube_id: str, url: str, videos_dir: Path, archive: Path,
                max_height: int = DATASET_MAX_HEIGHT,
                limits: DownloadOptions | None = None) -> Path:
    """yt-dlp into a private temp folder, then renamed to ``<id>.<ext>``.

    yt-dlp runs in phd's watched download worker under ``limits`` (largest
    file, stall timeout, overall deadline; ``phd suggest``'s defaults): a
    server that trickles or never ends fails this video instead of hanging
    the build.
    """
    from phdcli.sources.options import DownloadOptions
    from phdcli.sources.worker import fetch_watched

    videos_dir.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(videos_dir)  # what a killed worker on this host left
    with fsutil.temp_dir(videos_dir, "dl") as work:
        options = replace(limits or DownloadOptions(), max_height=max_height, archive=archive)
        downloaded, _title, _heatmap = fetch_watched(url, work, options, None)
        final = videos_dir / f"{youtube_id}{downloaded.suffix}"
        downloaded.replace(final)
        return final
