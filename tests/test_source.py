"""phdcli.sources: real yt-dlp against a loopback HTTP server (no mocks, no internet)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from media import lavfi_video

from phdcli import paths
from phdcli.errors import DownloadError
from phdcli.sources.inputs import is_url, resolve_input, safe_stem
from phdcli.sources.options import DownloadOptions


class _Server:
    """Serves one mp4 at every path ending in ``.mp4``; 404 otherwise. Counts requests."""

    def __init__(self, video: bytes) -> None:
        self.video = video
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                if self.path.endswith(".html"):  # a page with no video, or with two
                    videos = '<video src="/a.mp4"></video><video src="/b.mp4"></video>'
                    body = f"<html><body>{videos if 'multi' in self.path else 'hi'}</body></html>"

                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                    return
                if not self.path.split("?")[0].endswith(".mp4"):
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(server.video)))
                self.end_headers()
                self.wfile.write(server.video)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "v.mp4"
    return lavfi_video(path, duration_s=1.0, size="160x120").read_bytes()


@pytest.fixture
def server(clip: bytes) -> Iterator[_Server]:
    srv = _Server(clip)
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _downloads(phd_home: Path) -> list[Path]:
    root = paths.downloads_cache_dir()
    assert root.is_relative_to(phd_home)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_then_cache_hit(phd_home: Path, server: _Server) -> None:
    url = f"{server.base}/v.mp4"
    seen: list[tuple[int, int | None]] = []
    first = resolve_input(url, progress=lambda done, total: seen.append((done, total)))
    assert first.downloaded and first.input == url and first.stem == "v"
    assert first.path.is_file() and first.path.is_relative_to(paths.downloads_cache_dir())
    with av.open(str(first.path)) as container:
        assert container.streams.video[0].codec_context.width == 160
    meta = json.loads((first.path.parent / "source.json").read_text())
    assert meta["url"] == url and meta["file"] == first.path.name
    assert seen and seen[-1] == (len(server.video), len(server.video))
    assert server.requests  # the generic extractor sniffs, then downloads

    server.requests.clear()
    second = resolve_input(url)
    assert server.requests == []  # no network at all on a cache hit
    assert second == first


def test_local_path_is_taken_as_is(tmp_path: Path) -> None:
    resolved = resolve_input(str(tmp_path / "missing clip.mp4"))  # probing comes later
    assert resolved.path == tmp_path / "missing clip.mp4"
    assert not resolved.downloaded and resolved.stem == "missing_clip"


def test_http_404_is_one_line(phd_home: Path, server: _Server) -> None:
    url = f"{server.base}/gone.webm"
    with pytest.raises(DownloadError) as err:
        resolve_input(url)
    message = str(err.value)
    assert "\n" not in message and "404" in message and url in message
    assert not message.startswith("ERROR") and "\x1b" not in message
    assert _downloads(phd_home) == []


def test_unreachable_host_is_one_line(phd_home: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v.mp4"
    with pytest.raises(DownloadError) as err:
        resolve_input(url)
    message = str(err.value)
    assert "\n" not in message and url in message and "cannot connect" in message
    assert _downloads(phd_home) == []


def test_unsupported_scheme_is_a_download_error(phd_home: Path) -> None:
    with pytest.raises(DownloadError) as err:
        resolve_input("gopher://127.0.0.1:1/v.mp4")
    assert "\n" not in str(err.value) and "gopher://" in str(err.value)


def test_page_without_video_is_unsupported(phd_home: Path, server: _Server) -> None:
    url = f"{server.base}/page.html"
    with pytest.raises(DownloadError, match="unsupported URL") as err:
        resolve_input(url)
    assert "\n" not in str(err.value) and url in str(err.value)
    assert _downloads(phd_home) == []


def test_page_with_two_videos_fetches_one(phd_home: Path, server: _Server) -> None:
    resolved = resolve_input(f"{server.base}/multi.html")
    assert resolved.path.is_file() and "/" not in resolved.stem
    assert [r for r in server.requests if r.endswith(".mp4")] == ["/a.mp4"]


def test_stale_cache_is_refetched_and_a_failed_retry_clears_it(
    phd_home: Path, server: _Server
) -> None:
    first = resolve_input(f"{server.base}/v.mp4")
    first.path.unlink()  # the user cleaned the cache by hand
    assert resolve_input(f"{server.base}/v.mp4") == first and first.path.is_file()
    first.path.unlink()
    server.video = b""  # now the server gives an empty body: the retry fails
    with pytest.raises(DownloadError):
        resolve_input(f"{server.base}/v.mp4")
    assert _downloads(phd_home) == []  # no source.json pointing at nothing


def test_file_url_is_a_local_path(tmp_path: Path) -> None:
    resolved = resolve_input((tmp_path / "my clip.mp4").as_uri())
    assert resolved.path == tmp_path / "my clip.mp4" and not resolved.downloaded


def test_max_filesize_leaves_nothing(phd_home: Path, server: _Server) -> None:
    url = f"{server.base}/v.mp4"
    with pytest.raises(DownloadError, match=r"larger than --max-filesize \(0\.001 MB\)"):
        resolve_input(url, DownloadOptions(max_filesize_bytes=1000))
    assert _downloads(phd_home) == []
    # The limit did not poison the cache: without it the same URL downloads.
    assert resolve_input(url).path.is_file()


@pytest.mark.parametrize("hostile", ["..%2F..%2Fevil.mp4", "%2Fetc%2Fpasswd.mp4",
                                     "..%5C..%5Cwin.mp4", ".hidden.mp4"])
def test_hostile_titles_cannot_steer_paths(phd_home: Path, server: _Server, hostile: str) -> None:
    # The generic extractor takes the URL-decoded basename as the title, so
    # "..%2F..%2Fevil.mp4" really arrives as the title "../../evil".
    resolved = resolve_input(f"{server.base}/{hostile}")
    meta = json.loads((resolved.path.parent / "source.json").read_text())
    assert "/" in meta["title"] or "\\" in meta["title"] or meta["title"].startswith(".")
    assert "/" not in resolved.stem and "\\" not in resolved.stem
    assert not resolved.stem.startswith(".")
    assert resolved.path.resolve().parent == resolved.path.parent.resolve()
    assert resolved.path.parent.parent == paths.downloads_cache_dir()
    assert resolved.path.name == "video.mp4"


@pytest.mark.parametrize("above", ["$HOME-x", "%(id)s"])
def test_a_download_lands_in_the_cache_whatever_the_folders_above_are_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: _Server, above: str
) -> None:
    """yt-dlp expands $NAME and ~ in its output folder and fields in its template: none of
    the cache's folders may reach it, or the file lands elsewhere for good."""
    home = tmp_path / above / "phd-home"
    monkeypatch.setenv("PHD_HOME", str(home))
    resolved = resolve_input(f"{server.base}/v.mp4")
    assert resolved.path.is_file() and resolved.path.is_relative_to(home)
    assert resolved.path.parent.parent == paths.downloads_cache_dir()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()
            and not p.is_relative_to(resolved.path.parent)] == []


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("../x", "x"),
        ("/etc/passwd", "etc_passwd"),
        ("..", "video"),
        ("", "video"),
        ("...", "video"),
        ("a/b\\c", "a_b_c"),
        ("C:\\Windows\\x", "C_Windows_x"),
        ("Café – déjà vu!", "Caf_d_j_vu"),
        ("日本語のタイトル", "video"),
        ("My Video (2024).final", "My_Video_2024_.final"),
        ("ok-name_1.2", "ok-name_1.2"),
    ],
)
def test_safe_stem(title: str, expected: str) -> None:
    assert safe_stem(title) == expected


def test_safe_stem_bounds() -> None:
    long = safe_stem("a" * 500)
    assert long == "a" * 80
    for title in ["../" * 100, "/" + "x" * 300, ". . . .", "\x00\n\t", "..\\..\\a"]:
        stem = safe_stem(title)
        assert stem and len(stem) <= 80
        assert "/" not in stem and "\\" not in stem and not stem.startswith(".")
        assert stem not in (".", "..")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://example.com/v.mp4", True),
        ("https://www.youtube.com/watch?v=x", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("ftp://host/file.mp4", True),
        ("video.mp4", False),
        ("/home/u/video.mp4", False),
        ("./http://x", False),
        ("C:\\Users\\u\\video.mp4", False),
        ("C://Users/u/video.mp4", False),
        ("\\\\server\\share\\v.mp4", False),
        ("ytsearch:cats", False),
        ("", False),
    ],
)
def test_is_url(text: str, expected: bool) -> None:
    assert is_url(text) is expected


def test_is_url_prefers_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "http:").mkdir()
    (tmp_path / "http:" / "x.mp4").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert is_url("http://x.mp4") is False  # the path collapses "//": it is that file


def test_import_does_not_load_yt_dlp() -> None:
    code = "import sys, phdcli.sources.inputs; assert 'yt_dlp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
