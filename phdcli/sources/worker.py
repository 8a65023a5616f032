"""yt-dlp in a watched worker process: the limits yt-dlp cannot enforce itself.

yt-dlp cannot be stopped from outside: its ``max_filesize`` only checks the
headers, and a blocking read of a server that trickles a byte every few
seconds never returns to call a progress hook (nor lets a socket timeout
fire). So yt-dlp runs in a child process, and this process watches it: the
bytes that arrive (from the child's progress reports *and* from the files
in the work folder), the time since the last KiB, the time since the start.
Past ``--max-filesize`` (also capped inside the child with RLIMIT_FSIZE),
after ``--stall-timeout`` seconds without 1 KiB or ``--download-timeout``
in all, the child's whole process group is killed; on SIGINT, SIGTERM and
SIGHUP too (:mod:`phdcli.procs`).

A worker serves a process's downloads one after another (starting one and
loading yt-dlp's extractors costs about a second); threads that download
at once get one each. A worker that was killed or misbehaved is never
reused. Dataset builds (``phdcli.training.download``) use the same worker,
so a video server that never ends cannot hang a multi-day build either.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from phdcli import procs
from phdcli.errors import DownloadError
from phdcli.sources.options import DownloadOptions, Progress

STALL_MIN_BYTES = 1024  # less than this in --stall-timeout seconds is a stall
_POLL_S = 0.2
_FSIZE_SLACK_BYTES = 1 << 20  # the child's file size cap sits just above the limit


class _Worker:
    def __init__(self) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the worker
        cmd = [sys.executable, "-c",
               "from phdcli.sources.worker import worker_main; worker_main()"]
        self.proc = procs.start(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self.stderr)
        self.buffer = b""

    def close(self) -> None:
        procs.reap(self.proc)
        with contextlib.suppress(OSError):
            self.stderr.close()

    def last_stderr_line(self) -> str:
        with contextlib.suppress(OSError):
            self.stderr.seek(0)
            lines = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""


_lock = threading.Lock()
_idle: list[_Worker] = []  # started workers between downloads; threads take one each


def _take_worker() -> _Worker:
    with _lock:
        while _idle:
            worker = _idle.pop()
            if worker.proc.poll() is None:
                return worker
            worker.close()
    return _Worker()


def _return_worker(worker: _Worker) -> None:
    with _lock:
        _idle.append(worker)


def fetch_watched(url: str, work: Path, options: DownloadOptions, progress: Progress | None
                  ) -> tuple[Path, str, Any]:
    """Download ``url`` into ``work`` under the limits; return (file, remote title,
    yt-dlp's heatmap as it came: unchecked). Threads may call it at once: each gets a worker."""
    job = {"url": url, "work": str(work), "max_height": options.max_height,
           "max_filesize_bytes": options.max_filesize_bytes,
           "archive": None if options.archive is None else str(options.archive)}
    outcome: dict[str, Any] | None = None
    worker: _Worker | None = None
    for _attempt in range(2):  # an idle worker may have died: one fresh start
        worker = _take_worker()
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(json.dumps(job).encode() + b"\n")
            worker.proc.stdin.flush()
        except BrokenPipeError:
            worker.close()
            worker = None
            continue
        try:
            outcome = _watch(worker, url, work, options, progress)
        except BaseException:
            worker.close()  # killed mid-download: never reused
            raise
        break
    if outcome is None or outcome.get("error") == "too-large":
        last = worker.last_stderr_line() if worker is not None else ""
        if worker is not None:
            worker.close()
        if outcome is None:
            code = "" if last == "" else f": {last}"
            raise DownloadError(f"{url}: download failed (the download worker died{code})")
    else:
        assert worker is not None
        _return_worker(worker)
    if "error" in outcome:
        if outcome["error"] == "too-large":
            raise too_large(url, options)
        raise DownloadError(str(outcome["error"]))
    downloaded = Path(outcome["result"]["file"])
    if not downloaded.resolve().is_relative_to(Path(work).resolve()) or not downloaded.is_file():
        raise DownloadError(f"{url}: download failed: file landed outside the cache")
    return downloaded, str(outcome["result"]["title"]), outcome["result"].get("heatmap")


def too_large(url: str, options: DownloadOptions) -> DownloadError:
    return DownloadError(f"{url}: larger than --max-filesize ({options.max_filesize_text})")


def _tree_bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for root, _, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
    return total


def _watch(worker: _Worker, url: str, work: Path, options: DownloadOptions,
           progress: Progress | None) -> dict[str, Any] | None:
    """Relay the worker's messages until its outcome (None if it died); enforce
    the limits meanwhile. Raises DownloadError for a broken limit."""
    assert worker.proc.stdout is not None
    fd = worker.proc.stdout.fileno()
    start = mark_t = time.monotonic()
    arrived = mark = last_size = 0
    limit = options.max_filesize_bytes
    while True:
        ready, _, _ = select.select([fd], [], [], _POLL_S)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            worker.buffer += chunk
            *lines, worker.buffer = worker.buffer.split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "progress" in message:
                    if progress is not None:
                        progress(*message["progress"])
                elif "ready" in message:  # the stall clock starts at the network
                    mark_t = time.monotonic()
                else:
                    return dict(message)
        now = time.monotonic()
        size = _tree_bytes(work)
        if limit is not None and size > limit:
            raise too_large(url, options)
        arrived += max(0, size - last_size)  # a merge shrinking the folder is no progress
        last_size = size
        if arrived - mark >= STALL_MIN_BYTES:
            mark, mark_t = arrived, now
        elif now - mark_t > options.stall_timeout_s:
            raise DownloadError(
                f"{url}: download stalled (under {STALL_MIN_BYTES} bytes in "
                f"{options.stall_timeout_s:g} s; --stall-timeout changes the limit)")
        if now - start > options.timeout_s:
            raise DownloadError(
                f"{url}: download not finished after {options.timeout_s:g} s "
                "(--download-timeout changes the limit)")


def worker_main() -> None:
    """The worker: one JSON job per stdin line; JSON messages on stdout."""
    import resource

    from phdcli.sources.heatmap import MAX_SPANS
    from phdcli.sources.ytdlp import fetch, one_line

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # yt-dlp's stray prints go nowhere

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    parent = os.getppid()

    def exit_with_parent() -> None:  # a SIGKILLed phd must not leave us downloading
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    import yt_dlp  # noqa: F401 - loaded before the first job: start-up is not a stall

    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for line in sys.stdin:
        job = json.loads(line)
        limit = job["max_filesize_bytes"]
        # The kernel's cap on any file we write: EFBIG (Python ignores
        # SIGXFSZ) even where no hook is ever called.
        cap = hard if limit is None else limit + _FSIZE_SLACK_BYTES
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, hard))
        send({"ready": True})
        last_sent = [0.0]

        def on_progress(done: int, total: int | None, limit: int | None = limit,
                        last_sent: list[float] = last_sent) -> None:
            if limit is not None and done > limit:
                send({"error": "too-large"})
                os._exit(3)
            now = time.monotonic()
            if now - last_sent[0] >= 0.1 or (total is not None and done >= total):
                last_sent[0] = now
                send({"progress": [done, total]})

        archive = job.get("archive")
        options = DownloadOptions(max_height=job["max_height"], max_filesize_bytes=limit,
                                  archive=None if archive is None else Path(archive))
        try:
            path, title, heatmap = fetch(job["url"], Path(job["work"]), options, on_progress)
        except DownloadError as exc:
            send({"error": "too-large" if os.strerror(errno.EFBIG) in str(exc) else str(exc)})
            continue
        except OSError as exc:
            send({"error": "too-large" if exc.errno == errno.EFBIG else
                  f"{job['url']}: download failed: {one_line(str(exc))}"})
            continue
        # The heatmap goes to phd as yt-dlp gave it (phd checks it, once); only a
        # size that no real heatmap has, or one that is not JSON, stops here.
        if not isinstance(heatmap, list) or len(heatmap) > MAX_SPANS:
            heatmap = None
        try:
            send({"result": {"file": str(path), "title": title, "heatmap": heatmap}})
        except (TypeError, ValueError):
            send({"result": {"file": str(path), "title": title, "heatmap": None}})
