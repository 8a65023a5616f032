"""The per-video feature store: each video's C3D features, computed once for every user.

One folder per (feature spec, exact backbone weights), under the store root
(``--store``, by default ``<dataset>/store``), so one root on a shared
filesystem serves a training and a test build, or two backbones, side by
side::

    <root>/<family>-<layer>-<key16>/
        key.json                      the feature spec and the weights' full sha256
        shards/<h2>/<video>.safetensors   one per finished video (h2: 2 hex of sha1(id))
        failed/<h2>/<video>.json          one per failed video: stage, reason, attempts
        manifest.json                 the last build's summary (counts, failures)

A shard holds, in fp16, up to three kinds of segment features with their
bounds in seconds: ``fixed`` (the 5 s test segments) and ``shots`` (the
training segments) for a video that is some user's last video, and
``spans`` (the union of each user's GIFs on it) for every user who has it in
their history. Its metadata (JSON, readable without the tensors) holds the
video's probed duration, what the shard covers, the key, and a sha256 of
the tensors.

Why files and not a database: many workers on many machines write at once,
often over NFS, where SQLite's locking is unsafe. Each shard is written to a
temp name in its final folder and renamed (atomic on POSIX and NFS), so a
reader sees a whole shard or none; a reader also checks the size against
the header and the tensors against their sha256, and moves a bad shard
aside (``*.bad-<time>``, one warning), so a half-written or damaged file is
never taken as done: the next build recomputes that video. Everything read
back is checked before it is used (:func:`_shard_meta`: a header that is
valid JSON but not what phd writes, a NaN or infinite duration; a failure
record or ``key.json`` that is not an object): a damaged file costs a
recomputation, never an internal error. Two writers of one video write the
same content; the last rename wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.errors import PhdError, UsageError
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import atomic_path, atomic_write_text
from phdcli.training.annotations import MAX_DURATION_S

log = logging.getLogger("phd")

STORE_FORMAT = "phd-store/1"
SHARD_FORMAT = "phd-shard/1"
KINDS = ("fixed", "shots", "spans")
SHARD_SUFFIX = ".safetensors"
STALE_TEMP_S = 24 * 3600  # a live writer renames within minutes
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def safe_name(ident: str) -> str:
    """A file stem for an id: the id itself when plain, else a safe stem plus a hash."""
    if _PLAIN.match(ident):
        return ident
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", ident)[:40].strip("_") or "id"
    return f"{stem}-{digest}"


def span_key(start_s: float, end_s: float) -> tuple[float, float]:
    """Spans are matched to the millisecond (the annotations' own precision is coarser)."""
    return (round(float(start_s), 3), round(float(end_s), 3))


@dataclass(frozen=True)
class StoreKey:
    spec: FeatureSpec
    backbone_sha256: str

    @property
    def digest(self) -> str:
        ident = json.dumps({"features": self.spec.to_dict(), "backbone": self.backbone_sha256},
                           sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()

    @property
    def folder(self) -> str:
        name = safe_name(f"{self.spec.family}-{self.spec.layer}")
        return f"{name}-{self.digest[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "features": self.spec.to_dict(),
                "backbone_sha256": self.backbone_sha256, "key": self.digest}


@dataclass
class Shard:
    """One video's features: kind -> rows (n, D) float16 and bounds (n, 2) seconds."""

    youtube_id: str
    duration_s: float
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    bounds: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # clips, runtime, video bytes...

    def has_segments(self) -> bool:
        return "fixed" in self.rows and "shots" in self.rows

    def span_index(self) -> dict[tuple[float, float], int]:
        bounds = self.bounds.get("spans", np.zeros((0, 2)))
        return {span_key(a, b): i for i, (a, b) in enumerate(bounds)}


@dataclass(frozen=True)
class ShardHeader:
    """What a shard covers, read from its header alone (no tensor is loaded)."""

    duration_s: float
    segments: bool
    spans: frozenset[tuple[float, float]]
    clips: int


def _tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _read_header(path: Path) -> tuple[dict[str, Any], int] | None:
    """(safetensors header, expected file size), or None when the file is short or garbled."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 64 << 20:
                return None
            header = json.loads(fh.read(n))
        size = os.path.getsize(path)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, struct.error, AttributeError, KeyError, TypeError, IndexError):
        return None  # AttributeError...IndexError: valid JSON, but not a safetensors header
    expected = 8 + n + max(ends, default=0)
    return (header, expected) if size == expected else None


def _number(value: object, low: float, high: float) -> bool:
    """A JSON number (not a bool) with low < value <= high; False for NaN and inf."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and low < value <= high)


def _shard_meta(header: dict[str, Any], key_digest: str) -> dict[str, Any] | None:
    """The shard's phd metadata if it is whole and of this key, else None (damaged or foreign).

    Every field a reader uses is checked here, once: a header that is valid
    JSON of the right size but says something else is a damaged shard.
    """
    try:
        meta = json.loads(header["__metadata__"]["phd"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT or (
            meta.get("key") != key_digest):
        return None
    spans, clips = meta.get("spans"), meta.get("clips", 0)
    ok = (_number(meta.get("duration_s"), 0.0, MAX_DURATION_S)
          and isinstance(meta.get("segments"), bool)
          and isinstance(spans, list)
          and all(isinstance(s, list) and len(s) == 2 and all(_number(t, -1e-9, MAX_DURATION_S)
                                                              for t in s) for s in spans)
          and isinstance(clips, int) and not isinstance(clips, bool) and clips >= 0
          and isinstance(meta.get("info", {}), dict)
          and isinstance(meta.get("sha256"), str))
    return meta if ok else None


def _tensors_ok(tensors: dict[str, np.ndarray]) -> bool:
    """Rows (n, D) with bounds (n, 2) of finite seconds for each kind, nothing else."""
    if set(tensors) - {*KINDS, *(f"{k}.bounds_s" for k in KINDS)}:
        return False
    for kind in KINDS:
        rows, bounds = tensors.get(kind), tensors.get(f"{kind}.bounds_s")
        if rows is None and bounds is None:
            continue
        if rows is None or bounds is None or rows.ndim != 2 or bounds.shape != (len(rows), 2):
            return False
        if not np.isfinite(bounds).all():
            return False
    return True


class FeatureStore:
    """A store folder for one key; see the module docstring for the layout."""

    def __init__(self, root: Path, key: StoreKey) -> None:
        self.root = Path(root)
        self.key = key
        self.dir = self.root / key.folder

    def open(self) -> FeatureStore:
        """Create the folder, or check that the one there is for this key."""
        key_file = self.dir / "key.json"
        found: object = None
        if key_file.is_file():
            try:
                found = json.loads(key_file.read_text(encoding="utf-8"))
            except OSError as exc:
                raise PhdError(f"{key_file}: unreadable ({exc.strerror or exc})") from None
            except ValueError:
                found = "damaged"
            if isinstance(found, dict) and isinstance(found.get("key"), str):
                if found["key"] != self.key.digest:
                    raise UsageError(f"{self.dir} holds features of another spec or backbone")
                return self
            # The folder's name carries the key: a damaged key.json is written again.
            log.warning("%s: damaged (not phd's key record); written again", key_file)
        atomic_write_text(key_file, json.dumps(self.key.to_dict(), indent=1) + "\n")
        return self

    # -- paths ------------------------------------------------------------
    def _sub(self, kind: str, youtube_id: str, suffix: str) -> Path:
        h2 = hashlib.sha1(youtube_id.encode("utf-8")).hexdigest()[:2]  # noqa: S324 (spread)
        return self.dir / kind / h2 / f"{safe_name(youtube_id)}{suffix}"

    def shard_path(self, youtube_id: str) -> Path:
        return self._sub("shards", youtube_id, SHARD_SUFFIX)

    def failure_path(self, youtube_id: str) -> Path:
        return self._sub("failed", youtube_id, ".json")

    # -- shards -----------------------------------------------------------
    def header(self, youtube_id: str) -> ShardHeader | None:
        """What the shard covers (None: no complete shard) without reading its tensors."""
        path = self.shard_path(youtube_id)
        if not path.exists():
            return None
        found = _read_header(path)
        meta = _shard_meta(found[0], self.key.digest) if found is not None else None
        if meta is None:
            self._quarantine(path)  # damaged: not done, and said once
            return None
        return ShardHeader(float(meta["duration_s"]), meta["segments"],
                           frozenset(span_key(a, b) for a, b in meta["spans"]),
                           int(meta.get("clips", 0)))

    def read(self, youtube_id: str) -> Shard | None:
        """The video's shard, verified (size, key, sha256); None if there is no good one."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = self.shard_path(youtube_id)
        if not path.is_file():
            return None
        found = _read_header(path)
        meta = _shard_meta(found[0], self.key.digest) if found else None
        try:
            tensors = load(path.read_bytes()) if meta is not None else None
        except (OSError, SafetensorError, ValueError):
            tensors = None
        if tensors is None or meta is None or _tensor_digest(tensors) != meta["sha256"] or (
                not _tensors_ok(tensors)):
            self._quarantine(path)
            return None
        shard = Shard(youtube_id, float(meta["duration_s"]), info=dict(meta.get("info", {})))
        for kind in KINDS:
            if kind in tensors:
                shard.rows[kind] = tensors[kind]
                shard.bounds[kind] = tensors[f"{kind}.bounds_s"]
        return shard

    def _quarantine(self, path: Path) -> None:
        bad = path.with_name(f"{path.name}.bad-{int(time.time())}")
        with contextlib.suppress(OSError):
            os.replace(path, bad)
            log.warning("%s: damaged or incomplete shard moved aside to %s", path.name, bad.name)

    def write(self, shard: Shard) -> Path:
        """Write a shard atomically (temp + rename) and clear the video's failure record."""
        from safetensors.numpy import save_file

        tensors: dict[str, np.ndarray] = {}
        for kind in KINDS:
            if kind in shard.rows and len(shard.rows[kind]):
                tensors[kind] = np.ascontiguousarray(shard.rows[kind], dtype=np.float16)
                tensors[f"{kind}.bounds_s"] = np.ascontiguousarray(shard.bounds[kind], np.float64)
        spans = shard.bounds.get("spans", np.zeros((0, 2)))
        meta = {
            "format": SHARD_FORMAT, "youtube_id": shard.youtube_id, "key": self.key.digest,
            "features": self.key.spec.to_dict(), "backbone_sha256": self.key.backbone_sha256,
            "duration_s": shard.duration_s, "segments": shard.has_segments(),
            "spans": [list(span_key(a, b)) for a, b in spans],
            "clips": int(shard.info.get("clips", 0)), "info": shard.info,
            "sha256": _tensor_digest(tensors),
        }
        path = self.shard_path(shard.youtube_id)
        with atomic_path(path, suffix=".part" + SHARD_SUFFIX) as tmp:
            save_file(tensors, str(tmp), metadata={"phd": json.dumps(meta)})
        self.failure_path(shard.youtube_id).unlink(missing_ok=True)
        return path

    # -- failures ---------------------------------------------------------
    def record_failure(self, youtube_id: str, stage: str, reason: str, attempts: int) -> None:
        path = self.failure_path(youtube_id)
        before = self.failure(youtube_id) or {}
        record = {"youtube_id": youtube_id, "stage": stage, "reason": " ".join(reason.split()),
                  "attempts": int(before.get("attempts", 0)) + attempts,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_text(path, json.dumps(record) + "\n")

    def failure(self, youtube_id: str) -> dict[str, Any] | None:
        """The video's failure record; None if there is none, or a damaged one (a warning)."""
        path = self.failure_path(youtube_id)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record = None
        if (isinstance(record, dict) and all(isinstance(record.get(k), str)
                                             for k in ("youtube_id", "stage", "reason"))
                and _number(record.get("attempts"), -1.0, 2**31)):
            return record
        log.warning("%s: damaged failure record, ignored", path)
        return None

    # -- housekeeping -----------------------------------------------------
    def _files(self, kind: str, suffix: str) -> Iterator[Path]:
        base = self.dir / kind
        if base.is_dir():
            for sub in sorted(base.iterdir()):
                if sub.is_dir():
                    yield from sorted(p for p in sub.iterdir() if p.name.endswith(suffix))

    def sweep_temp(self, older_than_s: float = STALE_TEMP_S) -> int:
        """Remove temp files a killed writer left (old enough that no live writer owns them)."""
        now, n = time.time(), 0
        for path in self._files("shards", ".part" + SHARD_SUFFIX):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    n += 1
        return n

    def write_manifest(self, summary: dict[str, Any]) -> None:
        doc = {**self.key.to_dict(), "summary": summary,
               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_text(self.dir / "manifest.json", json.dumps(doc, indent=1) + "\n")
