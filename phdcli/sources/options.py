"""How videos are downloaded: the limits (all on by default) and the progress callback.

Shared by the input resolver (``phdcli.sources.inputs``), the watched
download worker (``phdcli.sources.worker``) and dataset builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phdcli.errors import UsageError

Progress = Callable[[int, int | None], None]
"""``progress(downloaded_bytes, total_bytes_or_None)``."""

# Defaults of the download limits (all on unless raised): yt-dlp's own
# --max-filesize has no default, but "never fill the disk" needs one.
MAX_FILESIZE_BYTES = 4_000_000_000
STALL_TIMEOUT_S = 60.0
DOWNLOAD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class DownloadOptions:
    max_height: int = 720
    max_filesize_bytes: int | None = MAX_FILESIZE_BYTES  # None: no limit
    stall_timeout_s: float = STALL_TIMEOUT_S
    timeout_s: float = DOWNLOAD_TIMEOUT_S  # the whole download, extraction included
    refresh: bool = False  # download again even if cached
    archive: Path | None = None  # yt-dlp's download archive (dataset builds)
    offline: bool = False  # --offline: a URL not yet in the cache is refused, not fetched

    def __post_init__(self) -> None:
        if self.max_height < 1:
            raise UsageError(f"--max-height must be at least 1, got {self.max_height}")
        if self.max_filesize_bytes is not None and self.max_filesize_bytes <= 0:
            raise UsageError("--max-filesize must be positive")
        for flag, value in (("--stall-timeout", self.stall_timeout_s),
                            ("--download-timeout", self.timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} must be a positive number of seconds, got {value}")

    @property
    def max_filesize_text(self) -> str:
        """The size limit as the flag says it (MB, 10**6 bytes)."""
        return f"{(self.max_filesize_bytes or 0) / 1_000_000:g} MB"
