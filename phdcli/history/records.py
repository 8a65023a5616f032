"""What phd remembers about the files ``phd suggest`` wrote, so that keeping one costs nothing.

After ``phd suggest`` writes a GIF (or mp4 / WebP) it records, in the cache
and keyed by the file's content hash, where the file came from (the source
video's input and content hash, the span ``start_s``-``end_s``) and the span's
C3D feature exactly as ``phd suggest`` computed it from the original video
(what made it, and the vector checked by ``phdcli.history.vectors``).
``phd history add`` looks every file up by its content hash: a record that
passes every check gives the history item its provenance and its feature
with no decoding and no C3D; anything else (no record, a GIF edited since,
a record from other weights, a damaged record) falls back to decoding the
GIF, and says so.

Keyed by content, the record follows the file wherever the user moves or
renames it; it lives in the cache because it can be recreated (by running
``phd suggest`` again), and losing it only costs the shortcut.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli import paths
from phdcli.fsutil import atomic_write_text
from phdcli.fsutil.cachefile import read_entry_text
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.history import vectors

if TYPE_CHECKING:
    from phdcli.features.extractor import FeatureExtractor

log = logging.getLogger("phd")

# 2: the vector is stored as .npy bytes, like a history folder's. 1 (raw
# little-endian floats) is still read: the files phd wrote then can still be kept.
RECORD_FORMAT = "phd-output/2"
_FORMAT_1 = "phd-output/1"
RECORDS_DIR = "outputs"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Provenance:
    """Where a kept GIF came from: the source video and the span, in seconds."""

    video: str  # the input as given: a URL, or the local file's absolute path
    video_sha256: str  # content hash of the video file the span was cut from
    start_s: float
    end_s: float

    @classmethod
    def from_dict(cls, data: Any) -> Provenance:
        """Validated: raises ValueError on anything but a sane record."""
        if not isinstance(data, dict):
            raise ValueError("provenance is not an object")
        video, digest = data.get("video"), data.get("video_sha256")
        start_s, end_s = data.get("start_s"), data.get("end_s")
        if not isinstance(video, str) or not video or not isinstance(digest, str):
            raise ValueError("provenance has no video")
        if not _SHA256.match(digest):
            raise ValueError("provenance has no valid video hash")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (start_s, end_s)):
            raise ValueError("provenance has no valid span")
        if not 0 <= float(start_s) < float(end_s):  # type: ignore[arg-type]
            raise ValueError("provenance span is empty")
        return cls(video, digest, float(start_s), float(end_s))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {"video": self.video, "video_sha256": self.video_sha256,
                "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


@dataclass(frozen=True)
class SpanFeature:
    """A span's (D,) feature and what made it (``FeatureExtractor.backbone_id``, spec)."""

    vector: np.ndarray
    backbone: str
    spec: dict[str, Any]

    def fits(self, extractor: FeatureExtractor) -> bool:
        return vectors.made_by(extractor, self.backbone, self.spec)


@dataclass(frozen=True)
class OutputRecord:
    provenance: Provenance
    feature: SpanFeature | None  # None: the run computed none (a cold start skips C3D)


def record_path(file_sha256: str) -> Path:
    return paths.cache_dir() / RECORDS_DIR / file_sha256[:2] / f"{file_sha256}.json"


def remember(file: Path, provenance: Provenance, feature: SpanFeature | None) -> None:
    """Record a written output; a cache that cannot be written only costs the shortcut.

    Without a feature (a cold start ran no C3D) the provenance alone is kept:
    ``history add`` then decodes the GIF, and still knows the span was kept.
    """
    try:
        digest = cached_sha256(file)
        feature_doc = None
        if feature is not None:
            blob, blob_sha = vectors.encode(feature.vector)
            feature_doc = {"backbone": feature.backbone, "spec": feature.spec,
                           "dims": int(feature.vector.shape[0]), "sha256": blob_sha,
                           "npy_base64": base64.b64encode(blob).decode("ascii")}
        doc = {
            "format": RECORD_FORMAT,
            "file": file.name,  # for people reading the cache; never used as a path
            "file_sha256": digest,
            "source": provenance.to_dict(),
            "feature": feature_doc,
        }
        atomic_write_text(record_path(digest), json.dumps(doc) + "\n")
    except OSError as exc:
        log.warning("could not remember %s for `phd history add` (%s)", file.name, exc)


def lookup(file_sha256: str) -> tuple[OutputRecord | None, str]:
    """The record of a file phd wrote, checked; or (None, why not) in words."""
    path = record_path(file_sha256)
    if not _SHA256.match(file_sha256) or not path.is_file():
        return None, "not a file phd suggest wrote here (no record)"
    try:
        doc = json.loads(read_entry_text(path))
        if doc.get("format") not in (RECORD_FORMAT, _FORMAT_1):
            raise ValueError(f"format {doc.get('format')!r} is not one this phd reads")
        if doc.get("file_sha256") != file_sha256:
            raise ValueError("record is for another file")
        provenance = Provenance.from_dict(doc.get("source"))
        meta = doc["feature"]
        if meta is None and doc["format"] == RECORD_FORMAT:
            return OutputRecord(provenance, None), ""
        if doc["format"] == _FORMAT_1:
            vector = vectors.decode_float32_le(
                base64.b64decode(meta["float32_le_base64"], validate=True),
                meta["sha256"], int(meta["dims"]))
        else:
            vector = vectors.decode(base64.b64decode(meta["npy_base64"], validate=True),
                                    meta["sha256"], int(meta["dims"]))
        if not isinstance(meta["backbone"], str) or not isinstance(meta["spec"], dict):
            raise ValueError("feature does not say what made it")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"its phd record is damaged ({exc})"
    return OutputRecord(provenance, SpanFeature(vector, meta["backbone"], meta["spec"])), ""


def orphaned_records() -> Iterator[Path]:
    """Records :func:`lookup` can never use: damaged, misfiled, or of a format it does not read."""
    folder = paths.cache_dir() / RECORDS_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*/*")):
        if path.name.startswith("."):  # a temp file: its owner decides (fsutil.stale_temps)
            continue
        digest = path.name.removesuffix(".json")
        if not _SHA256.match(digest) or record_path(digest) != path or lookup(digest)[0] is None:
            yield path
