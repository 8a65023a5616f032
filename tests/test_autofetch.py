"""The model comes by itself: the first run that needs C3D weights fetches them
(from a loopback mirror here), offline refuses with the ways round, and
``phd model fetch`` takes short names, local files and file:// URLs.

The weights are the session's RANDOM mmaction2 file; the registry entry is
given its sha256 (``registered``), as the real entry carries the real file's.
The converted copy is planted (``converted_weights``) so that no test pays
for a conversion; tests/test_weights.py covers converting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from runphd import one_error, run_cli, serve

from phdcli import fsutil, paths
from phdcli.errors import WeightsError
from phdcli.features import registry
from phdcli.features.registry import DEFAULT_WEIGHTS, REGISTRY
from phdcli.fsutil import contenthash
from phdcli.history.store import History
from tests import media

MM = REGISTRY[DEFAULT_WEIGHTS]


@dataclass
class Mirror:
    """A loopback mirror: serves ``files`` by name, honours Range, logs requests."""

    url: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    cut_after: int | None = None  # the next answer stops after this many bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    state = Mirror()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            file = state.files.get(self.path.lstrip("/"))
            if file is None:
                self.send_error(404)
                return
            size = file.stat().st_size
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            left = size - start if state.cut_after is None else state.cut_after
            state.cut_after = None
            with open(file, "rb") as fh:
                fh.seek(start)
                while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
                    self.wfile.write(chunk)
                    left -= len(chunk)

        def log_message(self, *_args: object) -> None:
            pass

    with serve(Handler) as url:
        state.url = url
        monkeypatch.setenv("PHD_MODEL_MIRROR", url)
        yield state


@pytest.fixture(scope="module")
def weights_sha256(mmaction2_weights: Path) -> str:
    return fsutil.sha256_file(mmaction2_weights)


@pytest.fixture
def registered(mmaction2_weights: Path, weights_sha256: str, mirror: Mirror,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default registry entry is the RANDOM file (its sha256 and size), and the
    mirror holds it under the entry's file name."""
    entry = replace(MM, sha256=weights_sha256, size_bytes=mmaction2_weights.stat().st_size)
    monkeypatch.setitem(REGISTRY, DEFAULT_WEIGHTS, entry)
    mirror.files[entry.filename] = mmaction2_weights
    return mmaction2_weights


@pytest.fixture
def home(phd_home: Path, converted_weights: object, mmaction2_weights: Path) -> Path:
    converted_weights.seed(phd_home, mmaction2_weights)  # type: ignore[attr-defined]
    return phd_home


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.5 s: one segment, few clips."""
    return media.lavfi_video(tmp_path_factory.mktemp("autofetch") / "clip.mp4", duration_s=2.5,
                             size="160x120")


def _weights_files() -> list[str]:
    folder = paths.weights_cache_dir()
    """The weights folder's files, but the lock that lets one phd fetch at a time."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != ".fetch.lock")


def _fetch_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "fetching" in line]


def test_first_suggest_fetches_the_weights_once_and_a_cached_run_fetches_nothing(
        home: Path, registered: Path, mirror: Mirror, video: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], one_gif_history: Path) -> None:
    # A history: C3D is needed (a cold start with the bundled model needs none).
    history = ["--history", str(one_gif_history)]
    code, _, err = run_cli(["suggest", str(video), "-k", "1", "--out", str(tmp_path / "a"),
                            *history], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "a").glob("*.gif"))) == 1
    # One line before the fetch: what, how big, from where, where to.
    [line] = _fetch_lines(err)
    assert MM.name in line and "312 MB" in line
    assert f"{mirror.url}/{MM.filename}" in line and str(paths.weights_cache_dir()) in line
    assert mirror.requests == [(f"/{MM.filename}", None)]
    fetched = paths.weights_cache_dir() / MM.filename
    assert fetched.stat().st_size == registered.stat().st_size
    assert registry.resolve_weights_path() == fetched

    # Features cached: the next run needs no weights, so it fetches none even
    # when the file has gone.
    fetched.unlink()
    code, _, err = run_cli(["suggest", str(video), "-k", "1", "--out", str(tmp_path / "b"),
                            *history], capsys)
    assert code == 0, err
    assert not _fetch_lines(err) and len(mirror.requests) == 1
    assert len(list((tmp_path / "b").glob("*.gif"))) == 1


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_offline_refuses_naming_the_url_and_the_ways_and_writes_nothing(
        home: Path, registered: Path, mirror: Mirror, video: Path, tmp_path: Path, how: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        one_gif_history: Path) -> None:
    flag = ["--offline"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("PHD_OFFLINE", "1")
    if how == "config":
        (home / "config").mkdir()
        (home / "config" / "config.toml").write_text("[suggest]\noffline = true\n")
    gif = media.gif_from(video, tmp_path / "liked.gif", 0.0, 2.0)
    out = tmp_path / "out"
    for args in (["suggest", str(video), "--out", str(out), "--history", str(one_gif_history),
                  *flag],
                 ["history", "add", str(gif), *flag]):
        message = one_error(run_cli(args, capsys))
        for part in (MM.url, "--c3d-weights", "PHD_C3D_WEIGHTS", "phd model fetch --from",
                     "--offline"):
            assert part in message, (part, message)
    assert mirror.requests == []
    assert not out.exists() and _weights_files() == []
    assert History.for_user("default").items() == []
    with pytest.raises(WeightsError):
        registry.resolve_weights_path()


def test_a_fetch_cut_midway_resumes_from_the_part(
        home: Path, registered: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]) -> None:
    mirror.cut_after = 100_000_000
    message = one_error(run_cli(["model", "fetch", "mmaction2"], capsys))
    assert "interrupted after 100000000 bytes" in message and "resume" in message
    part = paths.weights_cache_dir() / f"{MM.filename}.part"
    assert part.stat().st_size == 100_000_000
    assert not (paths.weights_cache_dir() / MM.filename).exists()

    code, out, err = run_cli(["model", "fetch", "mmaction2"], capsys)
    assert code == 0, err
    assert mirror.requests[-1] == (f"/{MM.filename}", "bytes=100000000-")
    assert Path(out.strip()) == registry.resolve_weights_path() and not part.exists()
    assert contenthash.cached_sha256(Path(out.strip())) == REGISTRY[DEFAULT_WEIGHTS].sha256


def test_a_file_with_the_wrong_sha256_is_refused_and_nothing_is_installed(
        home: Path, mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, DEFAULT_WEIGHTS, replace(MM, sha256="0" * 64, size_bytes=None))
    impostor = tmp_path / MM.filename
    impostor.write_bytes(os.urandom(200_000))
    mirror.files[MM.filename] = impostor
    for args in (["model", "fetch"], ["model", "fetch", "--from", str(impostor)],
                 ["model", "fetch", "--url", impostor.as_uri()]):
        message = one_error(run_cli(args, capsys))
        assert "sha256 mismatch" in message and "0" * 64 in message, message
        assert _weights_files() == [], args
    # Not C3D weights at all, under a name the registry does not know: the
    # format check refuses it, and it is not kept either.
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(200_000))
    message = one_error(run_cli(["model", "fetch", "--from", str(junk)], capsys))
    assert "not a readable PyTorch weights file" in message and "nothing installed" in message
    assert _weights_files() == []
    with pytest.raises(WeightsError):
        registry.resolve_weights_path()


def test_model_fetch_takes_short_names_local_files_and_file_urls(
        home: Path, registered: Path, mirror: Mirror, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["model", "fetch", "mmaction2"], capsys)
    assert code == 0, err
    assert Path(out.strip()) == paths.weights_cache_dir() / MM.filename
    assert mirror.requests == [(f"/{MM.filename}", None)]

    # A file downloaded by hand, under a name the registry does not know.
    mine = tmp_path / "mine.pth"
    os.link(registered, mine)
    code, out, err = run_cli(["model", "fetch", "--from", str(mine)], capsys)
    assert code == 0, err
    assert Path(out.strip()) == paths.weights_cache_dir() / "mine.pth"
    assert registry.resolve_weights_path() == Path(out.strip())  # the last one fetched

    other = tmp_path / "other.pth"
    os.link(registered, other)
    code, out, err = run_cli(["model", "fetch", "--url", other.as_uri()], capsys)
    assert code == 0, err
    assert registry.resolve_weights_path() == paths.weights_cache_dir() / "other.pth"
    assert len(mirror.requests) == 1  # local files never touch the network
    # The cached file itself, even with --force: checked, not deleted.
    cached = paths.weights_cache_dir() / "other.pth"
    code, _, err = run_cli(["model", "fetch", "--from", str(cached), "--force"], capsys)
    assert code == 0 and cached.stat().st_size == registered.stat().st_size, err
    assert mine.read_bytes()[:64] == registered.read_bytes()[:64]  # sources left as they were

    message = one_error(run_cli(["model", "fetch", "c3d"], capsys), code=2)
    assert "mmaction2" in message and "davidea" in message


def test_an_unreachable_mirror_names_the_url_and_the_offline_ways(
        home: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHD_MODEL_MIRROR", f"{mirror.url}/nowhere")
    message = one_error(run_cli(["model", "fetch"], capsys))
    assert f"{mirror.url}/nowhere/{MM.filename}" in message and "HTTP 404" in message
    assert MM.url in message and "--c3d-weights" in message and "--from" in message
