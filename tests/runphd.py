"""Running the real ``phd`` as a user would, for the failure-behaviour tests.

``phd`` runs as a subprocess (``python -m phdcli``) with its own PHD_HOME.
``home_with_cache`` shares one cache folder (converted weights, features)
between the homes of a test module, so each test pays for C3D only where it
needs new features. ``without_root_powers`` makes permission bits bite even
when the tests run as root (CAP_DAC_OVERRIDE dropped), so read-only folders
can be tested anywhere.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Registry weights come from here in every test (conftest sets it for the
# tests' own process too): a run that lacks weights fails on this missing
# folder instead of downloading 312 MB. Tests about fetching set their own mirror.
NO_MIRROR = "file:///nonexistent/phd-tests-fetch-no-weights"


def run_cli(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``phd ARGS`` in this process (``main``): (exit code, stdout, stderr).

    ``capsys`` (or ``capfd``, which also sees what C libraries and child
    processes write to the file descriptors) is pytest's fixture; faster than
    a subprocess where a test needs neither signals nor its own environment.
    """
    import pytest

    from phdcli.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


# What a child phd gets beside its home: no model mirror to reach, and
# ``auto`` kept off int8 as in this process (conftest), so a fresh home does
# not build and probe int8 C3D first (tests/test_int8.py and
# tests/test_precision_probe.py test that).
CHILD_ENV = {"PATH": "/usr/bin:/bin", "PHD_MODEL_MIRROR": NO_MIRROR, "PHD_INT8": "0"}


def phd(*args: str, home: Path, weights: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None, timeout: float = 300, drop_root: bool = False,
        preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**CHILD_ENV, "PHD_HOME": str(home), "OMP_NUM_THREADS": "2",
                **({"PHD_C3D_WEIGHTS": str(weights)} if weights is not None else {}),
                **(env or {})}
    cmd = [sys.executable, "-m", "phdcli", *args]
    if drop_root:
        cmd = without_root_powers(cmd)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=full_env,
                          timeout=timeout, preexec_fn=preexec_fn)


def phd_popen(*args: str, home: Path, weights: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**CHILD_ENV, "PHD_HOME": str(home), "OMP_NUM_THREADS": "1",
                **({"PHD_C3D_WEIGHTS": str(weights)} if weights is not None else {}),
                **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "phdcli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env)


def without_root_powers(cmd: list[str]) -> list[str]:
    """``cmd`` unchanged for a normal user; for root, run without the
    capabilities that ignore file permissions."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        import pytest

        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return [setpriv, "--inh-caps=-all",
            "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable", *cmd]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def one_error(result: subprocess.CompletedProcess[str] | tuple[int, str, str],
              code: int = 1) -> str:
    """The single ``phd: error:`` line of a failed run (and no traceback): a
    process, or ``run_cli``'s (exit code, stdout, stderr)."""
    returncode, stderr = ((result[0], result[2]) if isinstance(result, tuple)
                          else (result.returncode, result.stderr))
    assert returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("phd: error: "), lines
    return lines[0]


def json_doc(stdout: str) -> dict[str, Any]:
    """stdout as strict JSON (NaN and Infinity are not JSON)."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-JSON number {token} on stdout")

    doc: dict[str, Any] = json.loads(stdout, parse_constant=refuse)
    return doc


def home_with_cache(tmp_path: Path, shared_cache: Path, private: tuple[str, ...] = ()) -> Path:
    """A new home whose cache is the shared one, except the ``private`` subfolders
    (e.g. ``downloads``, for a test that counts what is fetched)."""
    home = tmp_path / "home"
    home.mkdir()
    if not private:
        (home / "cache").symlink_to(shared_cache, target_is_directory=True)
        return home
    (home / "cache").mkdir()
    for sub in ("weights", "features", "hash-index", "outputs", "downloads"):
        if sub not in private:
            (shared_cache / sub).mkdir(exist_ok=True)
            (home / "cache" / sub).symlink_to(shared_cache / sub, target_is_directory=True)
    return home


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*")) if folder.exists() else []


def processes_mentioning(text: str, in_environment: bool = False) -> list[int]:
    """Pids of live processes whose command line (or environment) contains
    ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / ("environ" if in_environment else "cmdline")).read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in raw.replace(b"\0", b" ").decode("utf-8", "replace") and state != "Z":
            pids.append(int(entry.name))
    return pids


def ray_processes(title: str) -> list[int]:
    """Pids of processes whose title (Ray sets it per task, ``ray::Class.method``) starts
    with ``title``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(title):
                pids.append(int(entry))
    return pids


@contextmanager
def killing_the_first(title: str) -> Iterator[list[int]]:
    """SIGKILLs the first process whose title starts with ``title`` (a Ray actor mid-call)
    while the body runs; yields the list of the pid killed (empty: none was caught)."""
    import signal
    import time

    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid in ray_processes(title):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server running ``handler``; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
