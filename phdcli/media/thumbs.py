"""A small still of a GIF (or any clip): what a page shows of a history GIF.

A history GIF is often hundreds of KB; a page that embeds several whole is
MBs and cannot be mailed. A thumbnail is one representative frame (ffmpeg's
``thumbnail`` filter over the first frames), scaled to fit ``MAX_WIDTH`` x
``MAX_HEIGHT`` (twice the report's 128 x 72 box, for high-density screens),
as a baseline JPEG: every browser and mail client shows it. It is at most
``max_bytes`` (quality steps down until it fits; ``None`` if it never does).

Thumbnails are cached under the cache folder by the source's sha256 and the
settings that made them, so a history GIF is thumbnailed once; a cached file
is used only if it still looks like a whole JPEG of at most ``max_bytes``
(a truncated or foreign file is made again).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

from phdcli import paths
from phdcli.errors import PhdError
from phdcli.fsutil import atomic_path, temp_dir
from phdcli.fsutil.cachefile import read_entry
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.media.ffmpeg import run_ffmpeg

log = logging.getLogger("phd")

MAX_BYTES = 50_000
MAX_WIDTH, MAX_HEIGHT = 256, 144
_QUALITIES = (5, 9, 15, 24, 31)  # ffmpeg's -q:v for mjpeg: 2 best .. 31 smallest
_FRAMES = 50  # the thumbnail filter picks the most typical of this many frames
MIME = "image/jpeg"


def thumbs_dir() -> Path:
    return paths.cache_dir() / "thumbs"


def _looks_whole(data: bytes, max_bytes: int) -> bool:
    """A JPEG from start (SOI) to end (EOI), within the size limit."""
    return 0 < len(data) <= max_bytes and data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"


def thumbnail(source: Path, max_bytes: int = MAX_BYTES, cache: Path | None = None) -> bytes | None:
    """A JPEG still of ``source``, at most ``max_bytes``; None if ``source`` cannot be read.

    ``cache``: the folder of cached thumbnails (default: ``thumbs/`` in phd's
    cache). A read-only or full cache only costs the ffmpeg run.
    """
    source = Path(source)
    folder = thumbs_dir() if cache is None else Path(cache)
    try:
        digest = cached_sha256(source)
    except OSError as exc:
        log.debug("no thumbnail of %s: %s", source, exc)
        return None
    cached = folder / f"{digest}-{MAX_WIDTH}x{MAX_HEIGHT}-{max_bytes}.jpg"
    with contextlib.suppress(OSError):
        data = read_entry(cached, max_bytes)  # the one cache opener: never a FIFO
        if _looks_whole(data, max_bytes):
            return data
        log.debug("thumbnail cache: %s is damaged; making it again", cached)
    data = _make(source, max_bytes, folder)
    if data is not None:
        with contextlib.suppress(OSError), atomic_path(cached) as tmp:
            tmp.write_bytes(data)
    return data


def _make(source: Path, max_bytes: int, folder: Path) -> bytes | None:
    graph = (f"thumbnail={_FRAMES},scale=w={MAX_WIDTH}:h={MAX_HEIGHT}"
             ":force_original_aspect_ratio=decrease:flags=lanczos,format=yuvj420p")
    try:
        with contextlib.ExitStack() as stack:
            try:
                work = stack.enter_context(temp_dir(folder, "thumb"))
            except OSError:  # a read-only cache: work in the system's temp folder
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="phd-")))
            for quality in _QUALITIES:
                out = work / f"q{quality}.jpg"
                run_ffmpeg(["-i", str(source), "-vf", graph, "-frames:v", "1",
                            "-q:v", str(quality), str(out)])
                data = out.read_bytes()
                if _looks_whole(data, max_bytes):
                    return data
    except (PhdError, OSError) as exc:  # an unreadable history file is named, not shown
        log.debug("no thumbnail of %s: %s", source, exc)
        return None
    log.debug("no thumbnail of %s under %d bytes", source, max_bytes)
    return None
