"""Child processes (ffmpeg, the download worker) and the signals that end them.

Each child starts in its own process group and is registered while it runs.
On SIGINT, SIGTERM or SIGHUP the handler kills every registered group at
once (ffmpeg's own children and yt-dlp's ffmpeg included) and raises
:class:`~phdcli.errors.Interrupted` in the main thread; the ``finally`` and
``except BaseException`` blocks on the way out remove the temp files. A
child started after the signal is killed at birth, so no thread can slip one
past the handler.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from phdcli.errors import Interrupted

_children: set[subprocess.Popen[bytes]] = set()
_stopping = threading.Event()
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stopping() -> bool:
    """True once a signal asked phd to stop (until the next :func:`handle_signals`)."""
    return _stopping.is_set()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: grandchildren too


def stop_all() -> None:
    """Kill every registered child's process group; later starts are refused."""
    _stopping.set()
    for proc in list(_children):
        _kill(proc)


def start(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, registered until :func:`reap`."""
    if _stopping.is_set():
        raise Interrupted()
    # Its own group: the terminal's Ctrl-C goes to phd alone, which then ends
    # the children itself (and theirs) instead of racing them.
    proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, process_group=0, **popen_kwargs)
    _children.add(proc)
    if _stopping.is_set():  # the signal came between the check and Popen
        _kill(proc)
    return proc


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``'s group if it still runs, wait for it, close its pipes."""
    if proc.poll() is None:
        _kill(proc)
    with contextlib.suppress(Exception):
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    _children.discard(proc)


@contextlib.contextmanager
def child(cmd: list[str], **popen_kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group; it is killed (group and all) if the
    body leaves while it still runs, and on any handled signal."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = start(cmd, **popen_kwargs)
        yield proc
    finally:
        if proc is not None:
            reap(proc)


def _quiet(signum: int, frame: object) -> None:
    stop_all()  # a second signal during clean-up: end children again, let clean-up finish


def _handler(signum: int, frame: object) -> None:
    stop_all()
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _quiet)
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into Interrupted for the body (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stopping.clear()
    previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
