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

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

from phdcli.errors import Interrupted

_children: set[subprocess.Popen[bytes]] = set()
_stopping = threading.Event()
_exit_hard = False
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


@contextlib.contextmanager
def keep_handlers() -> Iterator[None]:
    """For a call that installs signal handlers of its own (``ray.init`` makes SIGTERM a bare
    ``sys.exit(15)``): the handlers from before are back when it returns or fails, and a
    SIGTERM that its handler turned into ``SystemExit(15)`` ends phd as ours would have
    (:class:`~phdcli.errors.Interrupted`: the usual line, exit 143)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}

    def put_back() -> None:
        for sig, old in previous.items():
            # After a handled signal, clean-up runs under the quiet handler, as in _handler.
            signal.signal(sig, _quiet if _stopping.is_set() and old is _handler else
                          old if old is not None else signal.SIG_DFL)

    try:
        yield
    except SystemExit as exc:
        put_back()
        if exc.code == signal.SIGTERM and previous[signal.SIGTERM] is _handler:
            _handler(signal.SIGTERM, None)  # raises Interrupted
        raise
    except BaseException:
        put_back()
        raise
    put_back()


def exit_hard_at_end() -> None:
    """Ray's core worker keeps C++ threads running past ``ray.shutdown``: in the C-level
    teardown of a normal exit they can crash on freed objects (SIGSEGV after phd's last
    line; a third of the Ctrl-Cs a few seconds into a Ray build did). Called once Ray is
    imported: :func:`end_process` then skips that teardown."""
    global _exit_hard
    _exit_hard = True


def end_process(code: int) -> NoReturn:
    """The last step of phd's own process: ``sys.exit``, or after Ray, the atexit handlers
    and ``os._exit`` (no C-level teardown for Ray's threads to crash in)."""
    if not _exit_hard:
        sys.exit(code)
    atexit._run_exitfuncs()  # what sys.exit would run: Ray's shutdown, our resource files
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
