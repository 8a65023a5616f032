"""Downloads with limits, against hostile loopback servers (issue rows 3, 4, 10, 15).

Real yt-dlp (in phd's watched worker) against servers that never end, that
trickle a byte every few seconds, that serve HTML as video/mp4. Each test
uses small limits (a 1 s stall: the trickle's byte comes every 5 s) so that
it ends in seconds. No mocks, no internet.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runphd import home_with_cache, json_doc, one_error, phd, processes_mentioning, serve

from phdcli import paths
from phdcli.cli import main
from phdcli.errors import DownloadError, WeightsError
from phdcli.features import download, registry
from phdcli.sources.inputs import resolve_input
from phdcli.sources.options import DownloadOptions
from tests import media


class Hostile(http.server.BaseHTTPRequestHandler):
    """/endless: 64 KiB blocks forever, no Content-Length. /trickle: one byte
    every ``trickle_s``. /steady: 4 KiB a second forever. /v.mp4: HTML as
    video/mp4 while ``html_left`` > 0, then the real clip. Everything else 404."""

    protocol_version = "HTTP/1.0"
    clip = b""
    html_left = 0
    trickle_s = 5.0
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        cls = type(self)
        cls.requests.append(self.path)
        path = self.path.split("?")[0]
        try:
            if path.endswith("/v.mp4"):
                body = cls.clip
                if cls.html_left > 0:
                    cls.html_left -= 1
                    body = b"<html><body>Please log in to the Wi-Fi</body></html>" * 20
                self._head(len(body))
                self.wfile.write(body)
            elif path.startswith("/endless"):
                self._head(None)
                block = os.urandom(1 << 16)
                while True:
                    self.wfile.write(block)
            elif path.startswith("/trickle"):
                self._head(None)
                while True:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(cls.trickle_s)
            elif path.startswith("/steady"):
                self._head(None)
                while True:
                    self.wfile.write(b"\0" * 4096)
                    self.wfile.flush()
                    time.sleep(1.0)
            else:
                self.send_error(404)
        except OSError:
            pass  # the client hung up: what the limits are for

    def _head(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return media.lavfi_video(tmp_path_factory.mktemp("dl") / "v.mp4", duration_s=1.0,
                             size="96x72").read_bytes()


@pytest.fixture
def server(clip: bytes) -> Iterator[str]:
    Hostile.clip, Hostile.html_left, Hostile.trickle_s = clip, 0, 5.0
    Hostile.requests = []
    with serve(Hostile) as base:
        yield base


def _left_in_cache() -> list[str]:
    root = paths.downloads_cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_an_endless_body_is_cut_at_max_filesize(phd_home: Path, server: str) -> None:
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"larger than --max-filesize \(2 MB\)"):
        resolve_input(f"{server}/endless.mp4", DownloadOptions(max_filesize_bytes=2_000_000))
    assert time.monotonic() - started < 30
    assert _left_in_cache() == []  # no .part, no folder


def test_a_trickling_download_is_a_stall_and_a_steady_endless_one_hits_the_deadline(
    phd_home: Path, server: str
) -> None:
    for url, options, words in (
        (f"{server}/trickle.mp4", DownloadOptions(stall_timeout_s=1.0), "stalled"),
        # 4 KiB a second: never a stall, yet never done.
        (f"{server}/steady.mp4", DownloadOptions(stall_timeout_s=30.0, timeout_s=2.0),
         "not finished after 2 s"),
    ):
        started = time.monotonic()
        with pytest.raises(DownloadError, match=words) as info:
            resolve_input(url, options)
        assert "\n" not in str(info.value) and url in str(info.value)
        assert time.monotonic() - started < 20
        assert _left_in_cache() == []
    defaults = DownloadOptions()  # every limit is on by default
    assert defaults.max_filesize_bytes and defaults.stall_timeout_s and defaults.timeout_s


def test_dataset_downloads_have_the_same_limits(server: str, tmp_path: Path) -> None:
    """A multi-day dataset build must not hang on one video: its downloads run
    in the same watched worker, and a trickling server is a failed attempt."""
    from phdcli.training.download import fetch_with_retries

    videos = tmp_path / "videos"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="stalled") as info:
        fetch_with_retries("trickle", videos, f"{server}/{{id}}.mp4", attempts=2,
                           backoff_s=0.0, limits=DownloadOptions(stall_timeout_s=1.0))
    assert "after 2 attempts" in str(info.value)
    assert time.monotonic() - started < 60  # each attempt is cut after its 1 s stall
    assert [p.name for p in videos.iterdir()] == []  # no partial file, no temp folder


def test_download_flags_reach_the_download(server: str, tmp_path: Path,
                                           mmaction2_weights: Path) -> None:
    url = f"{server}/trickle.mp4"
    result = phd("suggest", url, "--stall-timeout", "1", "--json", "--device", "cpu",
                 home=tmp_path / "home", weights=mmaction2_weights, timeout=60)
    assert "stalled" in one_error(result) and "1 s" in result.stderr
    assert json_doc(result.stdout)["errors"][0]["input"] == url


def test_a_killed_download_is_cleaned_by_the_next_run(
    server: str, tmp_path: Path, mmaction2_weights: Path, clip: bytes
) -> None:
    home = tmp_path / "home"
    url = f"{server}/trickle.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "phdcli", "suggest", url, "--device", "cpu"],
                            env={"PATH": "/usr/bin:/bin", "PHD_HOME": str(home),
                                 "PHD_C3D_WEIGHTS": str(mmaction2_weights)},
                            stderr=subprocess.DEVNULL)
    downloads = home / "cache" / "downloads"
    deadline = time.monotonic() + 60
    while not list(downloads.glob("*/.dl.phd*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    stale = list(downloads.glob("*/.dl.phd*"))
    assert stale, "the download never started"
    deadline = time.monotonic() + 10
    while processes_mentioning(f"PHD_HOME={home}", in_environment=True):
        assert time.monotonic() < deadline, "the download worker outlived its killed phd"
        time.sleep(0.05)  # it checks for its parent every 0.5 s
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PHD_HOME", str(home))
        assert resolve_input(f"{server}/v.mp4").path.read_bytes() == clip
    assert not any(p.exists() for p in stale)


def test_html_served_as_video_is_never_cached(phd_home: Path, server: str,
                                                    clip: bytes) -> None:
    Hostile.html_left = 2  # the generic extractor sniffs, then downloads: both get HTML
    url = f"{server}/v.mp4"
    with pytest.raises(DownloadError, match="not a readable video.*nothing was cached"):
        resolve_input(url)
    assert _left_in_cache() == []
    assert resolve_input(url).path.read_bytes() == clip  # downloads again, then caches


def test_a_bad_cached_download_names_refresh(
    server: str, tmp_path: Path, shared_cache: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Converted weights and features from the shared cache, downloads private.
    home = home_with_cache(tmp_path, shared_cache, private=("downloads",))
    monkeypatch.setenv("PHD_HOME", str(home))
    url = f"{server}/v.mp4"
    args = ["suggest", url, "--dry-run", "--json", "--device", "cpu",
            "--c3d-weights", str(mmaction2_weights)]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    cached = resolve_input(url).path
    cached.write_bytes(b"<html>damaged on disk later</html>")
    fetched = Hostile.requests.count("/v.mp4")
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    assert info.value.code == 1 and "--refresh" in err and "Traceback" not in err
    assert "--refresh" in json_doc(out)["errors"][0]["error"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--refresh"])
    assert info.value.code == 0, capsys.readouterr().err
    assert Hostile.requests.count("/v.mp4") > fetched


def test_the_url_model_fetch_got_is_what_later_runs_use(
    phd_home: Path, server: str, capsys: pytest.CaptureFixture[str], clip: bytes
) -> None:
    url = f"{server}/v.mp4"  # any bytes will do: finding them is the point
    digest = hashlib.sha256(clip).hexdigest()
    # Not C3D weights: `phd model fetch` would refuse them at the format check.
    fetched = registry.fetch_weights(url=url, sha256=digest, check_format=False)
    assert registry.resolve_weights_path() == fetched  # not "weights not found"
    # The pointer is read back as a plain name inside the cache, nothing else.
    pointer = paths.weights_cache_dir() / "fetched.json"
    for hostile in ("../../etc/hostname", "/etc/hostname", ".."):
        pointer.write_text(f'{{"file": "{hostile}"}}')
        with pytest.raises(WeightsError, match="phd model fetch"):
            registry.resolve_weights_path()


def test_model_fetch_has_limits_too(phd_home: Path, server: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`phd model fetch --url`: a trickle is a stall (the .part stays for a resume),
    an endless body is not C3D weights (deleted)."""
    monkeypatch.setattr(download, "_STALL_S", 1.5)
    monkeypatch.setattr(download, "_MAX_UNKNOWN_BYTES", 3_000_000)
    Hostile.trickle_s = 1.0
    started = time.monotonic()
    with pytest.raises(DownloadError, match="stalled"):
        registry.fetch_weights(url=f"{server}/trickle.pth")
    assert time.monotonic() - started < 20
    with pytest.raises(DownloadError, match="not C3D weights"):
        registry.fetch_weights(url=f"{server}/endless.pth")
    assert not (paths.weights_cache_dir() / "endless.pth.part").exists()
