"""Signals: nothing keeps running, nothing is left behind (issue rows 8 and 19).

A real ``phd suggest`` is stopped while its ffmpeg children write GIFs (or
while yt-dlp downloads), the way a terminal, a service manager or a closed
SSH session would. RANDOM C3D weights; the video's features are cached in
the session's shared cache first, so each run reaches the GIF writing in a
second or two.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runphd import hidden_files, home_with_cache, processes_mentioning, serve
from test_robust_downloads import Hostile

from phdcli.cli import main
from tests import media


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that each GIF takes ffmpeg a few seconds."""
    return media.lavfi_video(tmp_path_factory.mktemp("sig") / "wide.mp4", duration_s=10.0,
                             size="960x540", source="testsrc2")


@pytest.fixture
def home(big: Path, tmp_path: Path, shared_cache: Path, mmaction2_weights: Path,
         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    with pytest.raises(SystemExit) as info:  # the features, once per session
        main(["suggest", str(big), "-k", "2", "--dry-run", "--device", "cpu",
              "--c3d-weights", str(mmaction2_weights)])
    assert info.value.code == 0, capsys.readouterr().err
    return home


def _start(args: list[str], home: Path, weights: Path) -> subprocess.Popen[str]:
    # Its own session, like a shell job: a signal to the group is what Ctrl-C sends.
    return subprocess.Popen([sys.executable, "-m", "phdcli", *args],
                            env={"PATH": "/usr/bin:/bin", "PHD_HOME": str(home),
                                 "PHD_C3D_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_ffmpeg(marker: str, proc: subprocess.Popen[str], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if [p for p in processes_mentioning(marker) if p != proc.pid]:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("ffmpeg never started")


def _gone(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while processes_mentioning(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "phd: interrupted"),  # Ctrl-C (row 19)
    (signal.SIGTERM, 143, "phd: interrupted (SIGTERM)"),  # row 8
    (signal.SIGHUP, 129, "phd: interrupted (SIGHUP)"),
])
def test_a_signal_during_gif_writing_ends_ffmpeg_and_leaves_nothing(
    sig: signal.Signals, code: int, said: str, big: Path, home: Path, tmp_path: Path,
    mmaction2_weights: Path,
) -> None:
    out = tmp_path / f"out-{sig.name}"
    proc = _start(["suggest", str(big), "-k", "2", "--width", "960", "--out", str(out),
                   "--device", "cpu"], home, mmaction2_weights)
    _wait_for_ffmpeg(str(out), proc)
    os.killpg(proc.pid, sig)  # the whole group, as a terminal does
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == said and "Traceback" not in stderr
    assert _gone(str(out), seconds=2), "an ffmpeg child outlived phd"
    assert not out.exists() or list(out.iterdir()) == []  # no .part.gif, no GIF


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next(
    big: Path, home: Path, tmp_path: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    proc = _start(["suggest", str(big), "-k", "2", "--width", "960", "--out", str(out),
                   "--device", "cpu"], home, mmaction2_weights)
    _wait_for_ffmpeg(str(out), proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    # Its orphaned ffmpeg would finish a 960-wide GIF on its own (seconds): end it
    # too, as a reboot or the OOM killer would. Either way the temp folder stays.
    for pid in processes_mentioning(str(out)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert _gone(str(out), seconds=10)
    stale = hidden_files(out)
    assert stale, "a SIGKILLed run leaves its temp folder"
    # A live run's temp files are not touched: fake one with our own pid.
    live = out / f".gifs.phd{os.getpid()}-{stale[0].split('-')[1]}-abcdefgh"
    live.mkdir()
    with pytest.raises(SystemExit) as info:
        main(["suggest", str(big), "-k", "1", "--out", str(out), "--device", "cpu",
              "--c3d-weights", str(mmaction2_weights)])
    assert info.value.code == 0, capsys.readouterr().err
    assert hidden_files(out) == sorted([".phd", live.name])  # and the record of what phd wrote
    assert len(list(out.glob("*.gif"))) == 1


def test_sigterm_during_a_download_removes_the_partial_file(
    tmp_path: Path, mmaction2_weights: Path
) -> None:
    Hostile.trickle_s = 0.5
    home = tmp_path / "home"
    with serve(Hostile) as base:
        proc = _start(["suggest", f"{base}/trickle.mp4", "--device", "cpu"], home,
                      mmaction2_weights)
        downloads = home / "cache" / "downloads"
        deadline = time.monotonic() + 60
        while not list(downloads.glob("*/.dl.phd*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(downloads.glob("*/.dl.phd*")), "the download never started"
        time.sleep(1.0)  # yt-dlp is reading the trickle now
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143 and stderr.strip().endswith("phd: interrupted (SIGTERM)")
    assert not downloads.exists() or not list(downloads.rglob("*"))
    deadline = time.monotonic() + 3
    while processes_mentioning(f"PHD_HOME={home}", in_environment=True):  # the worker
        assert time.monotonic() < deadline, "the download worker outlived phd"
        time.sleep(0.05)
