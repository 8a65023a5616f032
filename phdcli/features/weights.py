"""Loading C3D weights safely, and converting them once for every later run.

Load with ``torch.load(weights_only=True)`` only, map the published
format's keys onto our canonical names, refuse any shape that does not fit,
and convert once to safetensors under the cache (with a sha256 of the
tensors, checked at every load) so that later runs read plain tensors.
Which file to load, and fetching it, is ``phdcli.features.registry``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli import paths
from phdcli.errors import UsageError, WeightsError
from phdcli.features.c3d_spec import C3D_PARAM_SHAPES, C3DInput
from phdcli.fsutil import atomic_path
from phdcli.fsutil.cachefile import WEIGHTS_MAX, RefusedEntry, checked_path, discard
from phdcli.fsutil.contenthash import cached_sha256

if TYPE_CHECKING:
    import torch

    from phdcli.features.c3d import C3D
    from phdcli.features.device import Runtime

log = logging.getLogger("phd")

FAMILY = "c3d-sports1m"
FORMATS = ("mmaction2", "davidea")

# What each format's weights expect as input (docs/c3d.md). mmaction2's mean
# is applied to RGB frames there; whether its conv1 really is RGB-ordered is
# unverified until compared with DavideA's conv1 on real weights.
INPUT_SPECS: dict[str, C3DInput] = {
    "mmaction2": C3DInput(channel_order="RGB", mean=(104.0, 117.0, 128.0), pool5_padding="both"),
    "davidea": C3DInput(channel_order="BGR", mean=(90.25, 97.66, 101.41), pool5_padding="both"),
}

# ------------------------------------------------------------------- loading

# DavideA names the single convs of blocks 1 and 2 without the "a".
_DAVIDEA_RENAMES = {"conv1": "conv1a", "conv2": "conv2a"}


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


def _spec_from_metadata(meta: dict[str, str]) -> C3DInput:
    m = json.loads(meta["mean"])
    return C3DInput(channel_order=meta["channel_order"],
                    mean=(float(m[0]), float(m[1]), float(m[2])),
                    pool5_padding=meta["pool5_padding"])


def _read_converted(path: Path) -> tuple[dict[str, torch.Tensor], C3DInput, str] | str:
    """Our converted file, verified against its checksum; else why it is not usable."""
    from safetensors import safe_open

    try:
        # The one cache opener: a FIFO, device or link here is refused, never read.
        with (checked_path(path, WEIGHTS_MAX) as checked,
              safe_open(str(checked), framework="pt", device="cpu") as fh):
            meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        spec = _spec_from_metadata(meta)
        fmt = meta["source_format"]
        expected = meta["content_sha256"]  # files from before checksums: made again
    except RefusedEntry as exc:
        return str(exc.strerror)
    except Exception as exc:  # damaged cache entry: re-creatable, so just redo it
        return f"unreadable ({type(exc).__name__})"
    if {k: tuple(v.shape) for k, v in state.items()} != C3D_PARAM_SHAPES:
        return "wrong tensor shapes"
    if state_sha256(state) != expected:
        return "checksum mismatch"
    return state, spec, fmt


def converted_input_spec(weights_sha256: str) -> C3DInput | None:
    """The input the weights expect, from their converted file's header alone
    (no tensor is read); None when there is no readable converted file.

    For a cached int8 network, which needs the input convention but not the
    312 MB of fp32 tensors.
    """
    from safetensors import safe_open

    try:
        with (checked_path(converted_path(weights_sha256), WEIGHTS_MAX) as checked,
              safe_open(str(checked), framework="np") as fh):
            return _spec_from_metadata(fh.metadata() or {})
    except Exception:  # absent, damaged or refused: the caller loads the weights instead
        return None


def _load(path: Path, format: str | None) -> tuple[dict[str, torch.Tensor], C3DInput, str]:
    """(canonical state, input spec, sha256 of the source file)."""
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown weights format {format!r}: use {' or '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"C3D weights file not found: {path}")
    sha256 = cached_sha256(path)
    converted = converted_path(sha256)
    if os.path.lexists(converted):  # a FIFO or link there is reported, then replaced
        cached = _read_converted(converted)
        if not isinstance(cached, str):
            state, spec, fmt = cached
            if format is not None and format != fmt:
                raise WeightsError(f"{path}: this is a {fmt} file, not {format}")
            return state, spec, sha256
        log.warning("warning: converted C3D weights in the cache are damaged (%s): "
                    "converting %s again",
                    cached, path.name)
        discard(converted)

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

    from phdcli.features.c3d import C3D

    state, spec, sha256 = _load(path, None)
    # Built on the meta device, then handed the loaded tensors (assign): a CPU
    # build draws 78 M random initial values only to overwrite them (fc6 and
    # fc7 most of it). Measured 0.67 -> 0.30 s a load on a 2-core Xeon.
    with torch.device("meta"):
        model = C3D(pool5_padding=spec.pool5_padding)
    model.load_state_dict(state, strict=True, assign=True)
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
