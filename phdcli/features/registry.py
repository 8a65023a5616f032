"""Published C3D weights: the registry, downloading them, and which file a run uses.

Download like whisper, but safer: stream to ``<file>.part`` (resumable with a
Range request), verify sha256 while streaming, rename. A run uses
``--c3d-weights``, else ``$PHD_C3D_WEIGHTS``, else what ``phd model fetch``
fetched last (``resolve_weights_path``). Loading and converting the file is
``phdcli.features.weights``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phdcli import paths
from phdcli.errors import DownloadError, UsageError, WeightsError
from phdcli.fsutil import atomic_write_text, cached_sha256, remember_sha256

ENV_WEIGHTS = "PHD_C3D_WEIGHTS"
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 30.0
_USER_AGENT = "phd (phdcli weights fetch)"
_DEFAULT_POINTER = "fetched.json"  # `phd model fetch --url`: which file later runs use
_STALL_S = 60.0  # less than 1 KiB in this long: give up (the .part stays for a resume)
_MAX_UNKNOWN_BYTES = 2_000_000_000  # C3D weights are 312 MB; an endless body is not them


@dataclass(frozen=True)
class WeightsSource:
    name: str
    url: str
    filename: str
    format: str  # "mmaction2" | "davidea" ("auto" for a --url download: detected on load)
    sha256: str | None
    size_bytes: int | None


REGISTRY: dict[str, WeightsSource] = {
    "c3d-sports1m-mmaction2": WeightsSource(
        name="c3d-sports1m-mmaction2",
        url="https://download.openmmlab.com/mmaction/recognition/c3d/"
        "c3d_sports1m_pretrain_20201016-dcc47ddc.pth",
        filename="c3d_sports1m_pretrain_20201016-dcc47ddc.pth",
        format="mmaction2",
        # As reported in docs/c3d.md, *unverified*: the file name's suffix is
        # its prefix (OpenMMLab convention). Check on first real download.
        sha256="dcc47ddcdc7dd62eabc24bc70491b47c82b3b1045b864c52f6bdb669243dfcff",
        size_bytes=311_985_866,
    ),
    "c3d-sports1m-davidea": WeightsSource(
        name="c3d-sports1m-davidea",
        url="http://imagelab.ing.unimore.it/files/c3d_pytorch/c3d.pickle",
        filename="c3d.pickle",
        format="davidea",
        sha256=None,  # no published checksum
        size_bytes=None,
    ),
}
DEFAULT_WEIGHTS = "c3d-sports1m-mmaction2"

# ------------------------------------------------------------------ download


def _source(source: WeightsSource | str) -> WeightsSource:
    if isinstance(source, WeightsSource):
        return source
    if source not in REGISTRY:
        raise UsageError(f"unknown weights {source!r}: known are {', '.join(REGISTRY)}")
    return REGISTRY[source]


def cached_path(source: WeightsSource | str) -> Path:
    """Where ``fetch`` puts a source's file (it may not exist yet)."""
    return paths.weights_cache_dir() / _source(source).filename


def _is_verified(path: Path, src: WeightsSource) -> bool:
    if src.size_bytes is not None and path.stat().st_size != src.size_bytes:
        return False
    return src.sha256 is None or cached_sha256(path) == src.sha256


def fetch(source: WeightsSource | str,
          progress: Callable[[int, int | None], None] | None = None,
          force: bool = False) -> Path:
    """Download a registry entry into the weights cache and return its path.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive.
    A cached file that verifies is returned without touching the network;
    ``force`` downloads again from scratch.
    """
    src = _source(source)
    final = cached_path(src)
    part = final.with_name(final.name + ".part")
    if force:
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if final.exists():
        if _is_verified(final, src):
            return final
        final.unlink()  # damaged or replaced: download again

    final.parent.mkdir(parents=True, exist_ok=True)
    digest = _download(src, part, progress)
    size = part.stat().st_size
    if src.sha256 is not None and digest != src.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{src.name}: sha256 mismatch: expected {src.sha256}, got {digest} "
                            f"(download deleted)")
    if src.size_bytes is not None and size != src.size_bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{src.name}: expected {src.size_bytes} bytes, got {size} "
                            f"(download deleted)")
    os.replace(part, final)
    # Remember the hash we just computed: the first load needs no re-hash.
    remember_sha256(final, digest)
    return final


def fetch_weights(name: str | None = None, url: str | None = None, sha256: str | None = None,
                  force: bool = False,
                  progress: Callable[[int, int | None], None] | None = None) -> Path:
    """``phd model fetch``: a registry entry (default DEFAULT_WEIGHTS), or any URL.

    A URL is saved under its own file name; its format is detected on load.
    """
    if url is None:
        if sha256 is not None:
            raise UsageError("--sha256 goes with --url (registry entries carry their own)")
        src = _source(name or DEFAULT_WEIGHTS)
        return _remember_default(fetch(src, progress=progress, force=force), src.url)
    if name is not None:
        raise UsageError("give a registry name or --url, not both")
    filename = Path(urllib.parse.urlsplit(url).path).name
    if not filename or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"not an http(s) URL of a file: {url}")
    if filename.startswith(".") or filename == _DEFAULT_POINTER:
        raise UsageError(f"cannot save {url} under the name {filename!r}")
    source = WeightsSource(name=filename, url=url, filename=filename, format="auto",
                           sha256=sha256.lower() if sha256 else None, size_bytes=None)
    return _remember_default(fetch(source, progress=progress, force=force), url)


def _remember_default(path: Path, url: str) -> Path:
    """What ``phd model fetch`` fetched last is what later runs use."""
    atomic_write_text(paths.weights_cache_dir() / _DEFAULT_POINTER,
                      json.dumps({"file": path.name, "url": url}) + "\n")
    return path


def _fetched_default() -> Path | None:
    """The file ``phd model fetch --url`` saved last, if it is still there.

    The name is read from a file a user could edit: only a plain file name
    inside the weights cache is accepted.
    """
    folder = paths.weights_cache_dir()
    try:
        name = json.loads((folder / _DEFAULT_POINTER).read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (not isinstance(name, str) or not name or name != Path(name).name
            or name.startswith(".") or "\\" in name):
        return None
    path = folder / name
    return path if path.is_file() else None


def _download(src: WeightsSource, part: Path,
              progress: Callable[[int, int | None], None] | None) -> str:
    """Stream ``src.url`` into ``part``, resuming what is there; return sha256."""
    offset = part.stat().st_size if part.exists() else 0
    if src.size_bytes is not None and offset > src.size_bytes:
        offset = 0  # longer than the real file: cannot be a prefix of it
    try:
        response = _open(src.url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or offset == 0:
            raise _http_error(src.url, exc) from None
        # 416: our .part is no prefix the server recognises (or already whole,
        # but we cannot tell which): start over.
        offset = 0
        response = _open_or_raise(src.url, 0)
    if offset > 0 and not _resumes_at(response, offset):
        if response.status != 200:
            # A partial answer that does not start where we asked: start over.
            response.close()
            response = _open_or_raise(src.url, 0)
        offset = 0  # a 200 is the whole file: the server ignored Range
    with response:
        digest = hashlib.sha256()
        if offset > 0:
            # Hash the prefix we already have, then keep hashing as we append.
            with open(part, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    digest.update(chunk)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else src.size_bytes
        done = offset
        cap = total if total is not None else _MAX_UNKNOWN_BYTES
        mark, mark_t = done, time.monotonic()
        try:
            with open(part, "ab" if offset > 0 else "wb") as out:
                if progress is not None:
                    progress(done, total)
                # read1: whatever arrived, so that a server trickling a byte every
                # few seconds is noticed (read(n) would wait for all n bytes).
                while chunk := response.read1(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                    if done > cap:
                        part.unlink(missing_ok=True)
                        raise DownloadError(f"{src.url}: more than {cap} bytes; not C3D weights "
                                            "(download deleted)")
                    now = time.monotonic()
                    if done - mark >= 1024:
                        mark, mark_t = done, now
                    elif now - mark_t > _STALL_S:
                        raise _interrupted(src.url, done, f"stalled: under 1 KiB in {_STALL_S:g} s")
        except (OSError, http.client.HTTPException) as exc:
            raise _interrupted(src.url, done, type(exc).__name__) from None
    # http.client just stops at EOF when the server hangs up early: compare
    # with what was announced. Keep the .part: the next fetch resumes from it.
    if total is not None and done < total:
        raise _interrupted(src.url, done, f"expected {total}")
    return digest.hexdigest()


def _interrupted(url: str, done: int, why: str) -> DownloadError:
    return DownloadError(f"download of {url} interrupted after {done} bytes ({why}); "
                         f"run it again to resume")


def _http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    return DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}")


def _open_or_raise(url: str, offset: int) -> http.client.HTTPResponse:
    try:
        return _open(url, offset)
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc) from None


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {host}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot download {url}: {type(exc).__name__}: {exc}") from None


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when the server answered our Range with the bytes from ``offset``."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return start == offset


def resolve_weights_path(explicit: Path | None = None) -> Path:
    """--c3d-weights, else $PHD_C3D_WEIGHTS, else a cached download."""
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise WeightsError(f"C3D weights file not found: {explicit}")
        return explicit
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        from_env = Path(env).expanduser()
        if not from_env.is_file():
            raise WeightsError(f"C3D weights file not found: {from_env} (from {ENV_WEIGHTS})")
        return from_env
    fetched = _fetched_default()
    if fetched is not None:
        return fetched
    for name in (DEFAULT_WEIGHTS, *REGISTRY):
        candidate = cached_path(name)
        if candidate.is_file():
            return candidate
    raise WeightsError("C3D weights not found: run `phd model fetch` "
                       f"(or pass --c3d-weights FILE / set {ENV_WEIGHTS})")


class Backbone:
    """The C3D weights file a run uses, resolved on first use, and the names its features carry.

    Resolving raises WeightsError when there are no weights, which is how a
    batch fails once, up front. The hash is memoised by path, size and
    mtime (``fsutil.cached_sha256``): a warm run does not re-hash 312 MB.
    """

    def __init__(self, family: str, explicit: Path | None = None) -> None:
        self.family = family
        self._explicit = explicit
        self._path: Path | None = None
        self._sha256: str | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_weights_path(self._explicit)
        return self._path

    @property
    def sha256(self) -> str:
        """The full sha256 of the weights file (what model files and the feature store record)."""
        if self._sha256 is None:
            self._sha256 = cached_sha256(self.path)
        return self._sha256

    @property
    def id(self) -> str:
        """``family@sha256-prefix``: names the features these weights make."""
        return f"{self.family}@{self.sha256[:12]}"
