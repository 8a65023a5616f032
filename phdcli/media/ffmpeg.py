"""The one place that knows where ffmpeg is and how to run it.

Every ffmpeg invocation in phdcli goes through :func:`run_ffmpeg`, so the
binary choice (``PHD_FFMPEG``, else the one bundled with imageio-ffmpeg) and
the error handling (one readable line, the full stderr kept for ``--debug``)
live here and nowhere else. The process itself is started by
:func:`phdcli.procs.child`: its own process group, killed on SIGINT, SIGTERM
and SIGHUP, so an interrupted run never leaves an ffmpeg writing behind it.
"""

from __future__ import annotations

import os
import re
import subprocess

from phdcli import procs
from phdcli.errors import FfmpegError, Interrupted

# Lines ffmpeg prints at loglevel "error" that say nothing about the cause;
# the line before them is the one worth showing.
_NOISE_PREFIXES = (
    "Conversion failed",
    "Error while filtering",
    "Exiting normally",
    "Error opening output files",
    "Error opening output file",
    "Error initializing output stream",
    "Error while opening encoder",
    "Nothing was written into output file",
)

# "[out#0/gif @ 0x55e3f44dcd40] " says which component spoke; noise to a user.
_CONTEXT_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*")


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``$PHD_FFMPEG`` first, else imageio-ffmpeg's."""
    override = os.environ.get("PHD_FFMPEG")
    if override:
        return override
    # Imported lazily: `phd --help` must not pay for it.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _summary(stderr: str, returncode: int) -> str:
    """The last meaningful stderr line, as one line."""
    lines = [_CONTEXT_PREFIX.sub("", line.strip()) for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    meaningful = [line for line in lines if not line.startswith(_NOISE_PREFIXES)]
    pick = meaningful or lines
    if not pick:
        return f"ffmpeg failed (exit code {returncode})"
    return f"ffmpeg failed: {pick[-1]}"


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg with ``args``; raise :class:`FfmpegError` if it fails.

    ``-loglevel error`` (never ``panic``) keeps stderr short but still says
    why a run failed; ``-nostdin`` stops ffmpeg from eating the terminal's
    input; ``-y`` because callers always write to fresh temp paths.
    """
    exe = ffmpeg_exe()
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        with procs.child(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) as proc:
            _, err = proc.communicate()
    except OSError as exc:  # missing or non-executable binary
        raise FfmpegError(f"cannot run ffmpeg at {exe}: {exc.strerror or exc}") from exc
    if procs.stopping():
        raise Interrupted()  # killed by our own signal handler: not ffmpeg's failure
    stderr = err.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise FfmpegError(_summary(stderr, proc.returncode), stderr=stderr)
