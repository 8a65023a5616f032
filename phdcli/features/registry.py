"""Published C3D weights: the registry, fetching them, and which file a run uses.

Fetch like whisper, but safer: stream to ``<file>.part`` (resumable with a
Range request; ``phdcli.features.download``), verify sha256 while streaming,
check the format by converting once, rename. ``PHD_MODEL_MIRROR`` sends
registry downloads to a mirror holding the same file names, still checked
against the registry's sha256. A run uses ``--c3d-weights``, else
``$PHD_C3D_WEIGHTS``, else what ``phd model fetch`` fetched last
(``resolve_weights_path``); a run that needs weights and has none fetches
the default ones, or refuses when offline (``fetch_for_run``: the one place
that decides). Loading and converting the file is ``phdcli.features.weights``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from phdcli import NOTICE, config, paths
from phdcli.errors import DownloadError, UsageError, WeightsError
from phdcli.features.download import ByteProgress, NotReached, download, local_path
from phdcli.fsutil import atomic_write_text, locked
from phdcli.fsutil.cachefile import read_entry_text
from phdcli.fsutil.contenthash import cached_sha256, remember_sha256

log = logging.getLogger("phd")

ENV_WEIGHTS = "PHD_C3D_WEIGHTS"
ENV_MIRROR = "PHD_MODEL_MIRROR"
_DEFAULT_POINTER = "fetched.json"  # `phd model fetch --url`: which file later runs use
_FETCH_LOCK = ".fetch.lock"  # one fetch at a time (a hidden name no fetch can take)
_LOCK_WAIT_S = 3600.0  # another phd fetching the same file: wait for it, then use it


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
# Short names for the command line (`phd model fetch mmaction2`).
ALIASES = {"mmaction2": "c3d-sports1m-mmaction2", "davidea": "c3d-sports1m-davidea"}

# ------------------------------------------------------------------ fetching


def _source(source: WeightsSource | str) -> WeightsSource:
    if isinstance(source, WeightsSource):
        return source
    name = ALIASES.get(source, source)
    if name not in REGISTRY:
        known = ", ".join(f"{short} ({full})" for short, full in ALIASES.items())
        raise UsageError(f"unknown weights {source!r}: known are {known}")
    return REGISTRY[name]


def cached_path(source: WeightsSource | str) -> Path:
    """Where ``fetch`` puts a source's file (it may not exist yet)."""
    return paths.weights_cache_dir() / _source(source).filename


def _is_registered(src: WeightsSource) -> bool:
    return any(entry is src for entry in REGISTRY.values())


def source_url(src: WeightsSource) -> str:
    """Where a source is fetched from: ``$PHD_MODEL_MIRROR/<file name>`` for a
    registry entry when a mirror is set, else its own URL."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror or not _is_registered(src):
        return src.url
    if urllib.parse.urlsplit(mirror).scheme.lower() not in ("http", "https", "file"):
        raise UsageError(f"{ENV_MIRROR}={mirror}: expected an http(s):// or file:// URL "
                         "of a folder")
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(src.filename)}"


def hand_fetch_hint(url: str) -> str:
    """The ways to give phd weights without it downloading them."""
    return (f"download {url} by hand, then use it with --c3d-weights FILE, {ENV_WEIGHTS}=FILE "
            "or `phd model fetch --from FILE`")


def _is_verified(path: Path, src: WeightsSource) -> bool:
    if src.size_bytes is not None and path.stat().st_size != src.size_bytes:
        return False
    return src.sha256 is None or cached_sha256(path) == src.sha256


def fetch(source: WeightsSource | str, progress: ByteProgress | None = None,
          force: bool = False) -> Path:
    """Download a registry entry (or any source) into the weights cache; return its path.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive.
    A cached file that verifies is returned without touching the network;
    ``force`` downloads again from scratch. Two phds fetching the same file
    take turns: the second finds it verified.
    """
    src = _source(source)
    final = cached_path(src)
    final.parent.mkdir(parents=True, exist_ok=True)
    with locked(final.parent / _FETCH_LOCK, f"fetching {final.name}", timeout_s=_LOCK_WAIT_S):
        return _fetch_locked(src, final, progress, force)


def _fetch_locked(src: WeightsSource, final: Path, progress: ByteProgress | None,
                  force: bool) -> Path:
    part = final.with_name(final.name + ".part")
    url = source_url(src)
    local = local_path(url)
    if local is not None and final.exists() and local.resolve() == final.resolve():
        # The cached file itself (`--from` a file in the cache): check, never delete.
        if _is_verified(final, src):
            return final
        raise DownloadError(f"{final}: not {src.name} (sha256 or size differ)")
    if force:
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if final.exists():
        if _is_verified(final, src):
            return final
        final.unlink()  # damaged or replaced: download again
    try:
        digest = download(url, part, src.size_bytes, progress)
    except NotReached as exc:
        raise DownloadError(f"{exc}; {hand_fetch_hint(src.url)}") from None
    size = part.stat().st_size
    if src.sha256 is not None and digest != src.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 mismatch: expected {src.sha256} ({src.name}), "
                            f"got {digest} (download deleted, nothing installed)")
    if src.size_bytes is not None and size != src.size_bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: expected {src.size_bytes} bytes, got {size} "
                            f"(download deleted, nothing installed)")
    os.replace(part, final)
    # Remember the hash we just computed: the first load needs no re-hash.
    remember_sha256(final, digest)
    return final


def fetch_weights(name: str | None = None, url: str | None = None, sha256: str | None = None,
                  force: bool = False, progress: ByteProgress | None = None,
                  from_file: Path | None = None, check_format: bool = True) -> Path:
    """``phd model fetch``: a registry entry (default DEFAULT_WEIGHTS), any
    http(s) or file:// URL, or a local file (``from_file``, copied in).

    A URL or file whose name is a registry entry's file name (or that ``name``
    says it is) is checked against that entry's sha256 and size; any other
    is saved under its own name, checked against ``sha256`` when given. Then
    the format is checked by converting it once (``check_format``): a file
    that is not C3D weights is deleted and the weights in use stay as they
    were. What was fetched last is what later runs use.
    """
    if from_file is not None:
        if url is not None:
            raise UsageError("give --from or --url, not both")
        file = Path(from_file).expanduser()
        if not file.is_file():
            raise UsageError(f"--from {from_file}: no such file")
        url = file.resolve().as_uri()
    entry = _source(name) if name is not None else None
    if url is None:
        if sha256 is not None:
            raise UsageError("--sha256 goes with --url or --from (registry entries carry their "
                             "own)")
        src = entry or _source(DEFAULT_WEIGHTS)
    else:
        src = _source_at(url, entry, sha256)
    path = fetch(src, progress=progress, force=force)
    if check_format:
        _check_format(path)
    return _remember_default(path, src.url)


def _source_at(url: str, entry: WeightsSource | None, sha256: str | None) -> WeightsSource:
    """The source for a URL given on the command line."""
    split = urllib.parse.urlsplit(url)
    local = local_path(url)
    filename = local.name if local is not None else Path(split.path).name
    if not filename or split.scheme.lower() not in ("http", "https", "file"):
        raise UsageError(f"not an http(s):// or file:// URL of a file: {url}")
    if filename.startswith(".") or filename == _DEFAULT_POINTER or filename.endswith(".part"):
        raise UsageError(f"cannot save {url} under the name {filename!r}")
    known = entry or {s.filename: s for s in REGISTRY.values()}.get(filename)
    wanted = sha256.lower() if sha256 else None
    if known is not None:
        if wanted and known.sha256 and wanted != known.sha256:
            raise UsageError(f"--sha256 {wanted} is not {known.name}'s ({known.sha256})")
        return replace(known, url=url, sha256=known.sha256 or wanted)
    return WeightsSource(name=filename, url=url, filename=filename, format="auto",
                         sha256=wanted, size_bytes=None)


def _check_format(path: Path) -> None:
    """Convert the file once (the format and shape checks); delete it when it is not
    C3D weights, so that nothing unusable is installed."""
    from phdcli.features.weights import load_c3d_state

    try:
        load_c3d_state(path)
    except WeightsError as exc:
        path.unlink(missing_ok=True)
        raise WeightsError(f"{exc} (deleted from the cache, nothing installed)") from None


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
        name = json.loads(read_entry_text(folder / _DEFAULT_POINTER))["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (not isinstance(name, str) or not name or name != Path(name).name
            or name.startswith(".") or "\\" in name):
        return None
    path = folder / name
    return path if path.is_file() else None


# ------------------------------------------------------------ a run's weights


@dataclass(frozen=True)
class AutoFetch:
    """How a run that needs C3D weights and has none gets them.

    ``offline``: never download (``--offline``; ``PHD_OFFLINE=1`` counts too).
    ``progress`` sees the bytes as they arrive.
    """

    offline: bool = False
    progress: ByteProgress | None = None


def fetch_for_run(policy: AutoFetch) -> Path:
    """No weights anywhere and a run needs them: fetch the default ones (after
    one line saying what, how big and where), or refuse when offline.

    The one place that decides; a file:// mirror is no download, so it is
    allowed offline.
    """
    src = _source(DEFAULT_WEIGHTS)
    url = source_url(src)
    if policy.offline and local_path(url) is None:
        env = config.env_var("offline")
        raise WeightsError(f"no C3D weights, and downloads are off (--offline, {env} or "
                           f"offline = true in the config file): {hand_fetch_hint(src.url)}")
    size = f"{src.size_bytes / 1e6:.0f} MB" if src.size_bytes else "size unknown"
    log.log(NOTICE, "no C3D weights yet: fetching %s (%s, once) from %s into %s",
            src.name, size, url, paths.weights_cache_dir())
    try:
        # A file that matched the registry's sha256 is known weights: the run's
        # own load converts it (once), with no second read here.
        return fetch_weights(DEFAULT_WEIGHTS, progress=policy.progress,
                             check_format=src.sha256 is None)
    except DownloadError as exc:
        # Weights are what every input shares: their failure stops the batch.
        raise WeightsError(str(exc)) from None


class MissingWeights(WeightsError):
    """No weights given and none fetched: what ``fetch_for_run`` is for."""


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
    raise MissingWeights("C3D weights not found: run `phd model fetch` "
                         f"(or pass --c3d-weights FILE / set {ENV_WEIGHTS})")


class Backbone:
    """The C3D weights file a run uses, resolved on first use, and the names its features carry.

    With ``auto_fetch``, a run that has no weights fetches the default ones
    when it first needs the file (``fetch_for_run``), and not before: until
    then the registry's sha256 names the features, so a run whose features
    are all cached neither fetches nor loads C3D. Without it, resolving
    raises WeightsError when there are no weights. The hash is memoised by
    path, inode, size, mtime and ctime (``contenthash.cached_sha256``): a warm run does not
    re-hash 312 MB.
    """

    def __init__(self, family: str, explicit: Path | None = None,
                 auto_fetch: AutoFetch | None = None) -> None:
        self.family = family
        self._explicit = explicit
        self._auto_fetch = auto_fetch
        self._path: Path | None = None
        self._sha256: str | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            try:
                self._path = resolve_weights_path(self._explicit)
            except MissingWeights:
                if self._auto_fetch is None:
                    raise
                self._path = fetch_for_run(self._auto_fetch)
        return self._path

    @property
    def sha256(self) -> str:
        """The full sha256 of the weights file (what model files and the feature store record)."""
        if self._sha256 is None:
            self._sha256 = self._sha256_without_fetching() or cached_sha256(self.path)
        return self._sha256

    def _sha256_without_fetching(self) -> str | None:
        """The registry's sha256 of the weights a missing file would be fetched as
        (the fetch checks that the file has it); None when there is a file."""
        if self._path is not None or self._auto_fetch is None:
            return None
        try:
            self._path = resolve_weights_path(self._explicit)
        except MissingWeights:
            return _source(DEFAULT_WEIGHTS).sha256
        return None

    @property
    def id(self) -> str:
        """``family@sha256-prefix``: names the features these weights make."""
        return f"{self.family}@{self.sha256[:12]}"
