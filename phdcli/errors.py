"""Exceptions that the CLI maps to exit codes.

Library code raises these with a message that is already one readable line;
the CLI prints ``phd: error: <message>`` and exits with ``exit_code``.
"""

from __future__ import annotations

from typing import Any


class PhdError(Exception):
    """Base class: a failure the user can understand and act on."""

    exit_code = 1


class UsageError(PhdError):
    """Bad flags or arguments (exit code 2, like click's usage errors)."""

    exit_code = 2


class InputError(PhdError):
    """A video, GIF or annotation file that cannot be used."""


class FfmpegError(PhdError):
    """ffmpeg failed; ``stderr`` holds its own words."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class WeightsError(PhdError):
    """Missing, corrupt or mismatched model weights."""


class DownloadError(PhdError):
    """A download (weights or video) failed or did not verify."""


class DeviceError(PhdError):
    """The requested compute device is not available."""


class ClusterError(PhdError):
    """The Ray cluster cannot be reached, started or joined, or was lost during a run."""


class HistoryError(PhdError):
    """The user's history cannot be read or changed as asked."""


class Stopped(PhdError):
    """A run that stopped part-way for ``cause`` (its message, its exit code); ``done`` is
    what it did before, for a ``--json`` reader (the Ray cluster lost mid-build)."""

    def __init__(self, cause: PhdError, done: dict[str, Any]) -> None:
        super().__init__(str(cause))
        self.done = done
        self.exit_code = cause.exit_code


class Interrupted(BaseException):  # noqa: N818 - named for what the user did
    """SIGINT, SIGTERM or SIGHUP arrived; raised in the main thread.

    A BaseException (like KeyboardInterrupt) so that no ``except Exception``
    swallows it, and not a KeyboardInterrupt so that click does not turn it
    into a silent exit: the CLI prints ``phd: interrupted`` and exits 128+N.
    """

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
