"""Published C3D weights: registry, download, safe loading, one-time conversion.

Download like whisper, but safer: stream to ``<file>.part`` (resumable with a
Range request), verify sha256 while streaming, rename. Load with
``torch.load(weights_only=True)`` only, map the format's keys onto our
canonical names, refuse any shape that does not fit, and convert once to
safetensors under the cache so that later runs read plain tensors.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli import paths
from phdcli.c3d_spec import C3D_PARAM_SHAPES, C3DInput
from phdcli.errors import DownloadError, UsageError, WeightsError
from phdcli.fsutil import atomic_path, atomic_write_text, cached_sha256, remember_sha256

if TYPE_CHECKING:
    import torch

    from phdcli.c3d import C3D
    from phdcli.device import Runtime

log = logging.getLogger("phd")

ENV_WEIGHTS = "PHD_C3D_WEIGHTS"
FAMILY = "c3d-sports1m"
FORMATS = ("mmaction2", "davidea")
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

# What each format's weights expect as input (docs/c3d.md). mmaction2's mean
# is applied to RGB frames there; whether its conv1 really is RGB-ordered is
# unverified until compared with DavideA's conv1 on real weights.
INPUT_SPECS: dict[str, C3DInput] = {
    "mmaction2": C3DInput(channel_order="RGB", mean=(104.0, 117.0, 128.0), pool5_padding="both"),
    "davidea": C3DInput(channel_order="BGR", mean=(90.25, 97.66, 101.41), pool5_padding="both"),
}

# ---------------------------------------------------------------- hash index


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed once per (path, size, mtime): see fsutil.cached_sha256."""
    return cached_sha256(path)


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
    return src.sha256 is None or file_sha256(path) == src.sha256


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


# ------------------------------------------------------------------- loading

# DavideA names the single convs of blocks 1 and 2 without the "a".
_DAVIDEA_RENAMES = {"conv1": "conv1a", "conv2": "conv2a"}
_META_KEYS = ("channel_order", "mean", "pool5_padding")


def _canonical_key(key: str, fmt: str) -> str | None:
    """The canonical name of a source key; None for keys we deliberately drop."""
    layer, _, param = key.rpartition(".")
    if fmt == "mmaction2":
        if key.startswith("cls_head."):
            return None  # a recognizer's classifier head, like fc8
        layer = layer.removesuffix(".conv")  # "conv1a.conv" -> "conv1a"
    else:
        if layer == "fc8":
            return None  # Sports-1M classifier: we only want features
        layer = _DAVIDEA_RENAMES.get(layer, layer)
    return f"{layer}.{param}"


def _detect_format(keys: set[str]) -> str | None:
    if "conv1a.conv.weight" in keys:
        return "mmaction2"
    if "conv1.weight" in keys:
        return "davidea"
    return None


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        # weights_only: a downloaded pickle must never run code.
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any loader failure means "not usable weights"
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise WeightsError(f"{path}: not a readable PyTorch weights file "
                           f"({type(exc).__name__}: {detail})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # mmcv/mmengine checkpoints wrap it
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"{path}: not a state dict of named tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in ("backbone.", "module."):  # recognizer / DataParallel wrappers
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _to_canonical(raw: dict[str, torch.Tensor], fmt: str,
                  path: Path) -> dict[str, torch.Tensor]:
    import torch

    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = _canonical_key(key, fmt)
        if name is None:
            continue
        expected = C3D_PARAM_SHAPES.get(name)
        if expected is None:
            raise WeightsError(f"{path}: unexpected key {key!r} for {fmt} C3D weights")
        if tuple(value.shape) != expected:
            raise WeightsError(f"{path}: {key!r} has shape {tuple(value.shape)}, "
                               f"expected {expected}")
        if not value.is_floating_point():
            raise WeightsError(f"{path}: {key!r} is {value.dtype}, expected floating point")
        state[name] = value.to(torch.float32).contiguous()
    missing = [name for name in C3D_PARAM_SHAPES if name not in state]
    if missing:
        raise WeightsError(f"{path}: missing {len(missing)} C3D tensor(s), first {missing[0]!r} "
                           f"(as a {fmt} file)")
    return state


def _spec_to_metadata(spec: C3DInput, fmt: str, sha256: str,
                      content_sha256: str) -> dict[str, str]:
    return {"family": FAMILY, "source_format": fmt, "source_sha256": sha256,
            "channel_order": spec.channel_order, "mean": json.dumps(list(spec.mean)),
            "pool5_padding": spec.pool5_padding, "content_sha256": content_sha256}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors' bytes in canonical order (C3D_PARAM_SHAPES).

    Written into the converted file's metadata when it is made, and checked
    each time a process loads it: 0.24 s for the 312 MB here (hashlib uses
    the CPU's SHA instructions), on the thread that loads C3D while the
    decoder already runs; a warm run, which never loads C3D, never pays it.
    """
    digest = hashlib.sha256()
    for name in C3D_PARAM_SHAPES:
        # numpy's buffer, not .tobytes(): no 312 MB copy.
        digest.update(state[name].contiguous().numpy())
    return digest.hexdigest()


def _read_converted(path: Path) -> tuple[dict[str, torch.Tensor], C3DInput, str] | str:
    """Our converted file, verified against its checksum; else why it is not usable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        m = json.loads(meta["mean"])
        spec = C3DInput(channel_order=meta["channel_order"],
                        mean=(float(m[0]), float(m[1]), float(m[2])),
                        pool5_padding=meta["pool5_padding"])
        fmt = meta["source_format"]
        expected = meta["content_sha256"]  # files from before checksums: made again
    except Exception as exc:  # damaged cache entry: re-creatable, so just redo it
        return f"unreadable ({type(exc).__name__})"
    if {k: tuple(v.shape) for k, v in state.items()} != C3D_PARAM_SHAPES:
        return "wrong tensor shapes"
    if state_sha256(state) != expected:
        return "checksum mismatch"
    return state, spec, fmt


def _load(path: Path, format: str | None) -> tuple[dict[str, torch.Tensor], C3DInput, str]:
    """(canonical state, input spec, sha256 of the source file)."""
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown weights format {format!r}: use {' or '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"C3D weights file not found: {path}")
    sha256 = file_sha256(path)
    converted = converted_path(sha256)
    if converted.is_file():
        cached = _read_converted(converted)
        if not isinstance(cached, str):
            state, spec, fmt = cached
            if format is not None and format != fmt:
                raise WeightsError(f"{path}: this is a {fmt} file, not {format}")
            return state, spec, sha256
        log.warning("warning: converted C3D weights in the cache are damaged (%s): "
                    "converting %s again",
                    cached, path.name)
        converted.unlink(missing_ok=True)

    raw = _read_torch_file(path)
    fmt = _detect_format(set(raw))
    if fmt is None:
        sample = ", ".join(sorted(raw)[:3]) or "none"
        raise WeightsError(f"{path}: not C3D weights in a known format (keys: {sample}, ...)")
    if format is not None and format != fmt:
        raise WeightsError(f"{path}: this is a {fmt} file, not {format}")
    state = _to_canonical(raw, fmt, path)
    spec = INPUT_SPECS[fmt]

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = _spec_to_metadata(spec, fmt, sha256, state_sha256(state))
    try:
        with atomic_path(converted, suffix=".tmp") as tmp:
            save_file(state, str(tmp), metadata=meta)
    except (OSError, SafetensorError) as exc:  # disk full: the cache only saves time
        log.warning("warning: could not cache the converted C3D weights (%s)",
                    getattr(exc, "strerror", None) or exc)
    return state, spec, sha256


def converted_path(sha256: str) -> Path:
    """Where the safetensors conversion of the weights with this sha256 lives."""
    return paths.weights_cache_dir() / "converted" / f"{sha256}.safetensors"


def load_c3d_state(path: Path,
                   format: str | None = None) -> tuple[dict[str, torch.Tensor], C3DInput]:
    """Canonical C3D tensors (C3D_PARAM_SHAPES names, float32, CPU) and the
    input the weights expect. ``format`` is detected from the keys when None.

    The first load of a file converts it to safetensors in the cache; later
    loads read that. The source file is only ever read.
    """
    state, spec, _ = _load(path, format)
    return state, spec


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


@dataclass
class LoadedC3D:
    model: C3D
    input_spec: C3DInput
    weights_sha256: str
    family: str = FAMILY


def load_c3d(path: Path, runtime: Runtime) -> LoadedC3D:
    """A ready C3D: eval mode, no grad, fp32 parameters on runtime's device
    (bf16 comes from ``runtime.autocast()``, which keeps fp32 accumulation)."""
    import torch

    from phdcli.c3d import C3D

    state, spec, sha256 = _load(path, None)
    model = C3D(pool5_padding=spec.pool5_padding)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    # channels_last_3d: measured 0.34 -> 0.54 clips/s fp32 on a 2-core AVX2
    # CPU (oneDNN prefers NDHWC), and 2149 -> 2297 clips/s bf16 on an H200
    # (batch 32); outputs agree to float error. Inputs may stay contiguous:
    # the convs follow the weights' layout.
    model = model.to(device=runtime.device, memory_format=torch.channels_last_3d)
    return LoadedC3D(model=model, input_spec=spec, weights_sha256=sha256)


def backbone_id(loaded: LoadedC3D) -> str:
    """Names the features a model makes, e.g. "c3d-sports1m@dcc47ddcdc7d"."""
    return f"{loaded.family}@{loaded.weights_sha256[:12]}"
