"""Keeping suggestions: what phd remembers about the files it wrote.

After ``phd suggest`` writes a GIF (or mp4 / WebP) it records, in the cache
and keyed by the file's content hash, where the file came from (the source
video's input and content hash, the span ``start_s``-``end_s``) and the span's
C3D feature exactly as ``phd suggest`` computed it from the original video
(the backbone id and feature spec that made it, the vector, and the vector's
own checksum). ``phd history add`` looks every file up by its content hash:
a record that passes every check gives the history item its provenance and
its feature with no decoding and no C3D; anything else (no record, a GIF
edited since, a record from other weights, a damaged record) falls back to
decoding the GIF, and says so.

Keyed by content, the record follows the file wherever the user moves or
renames it; it lives in the cache because it can be recreated (by running
``phd suggest`` again), and losing it only costs the shortcut.

With the history knowing where its kept GIFs came from, ``phd suggest`` on
the same video leaves those spans out (unless ``--include-kept``): a segment
is *a kept span* when their overlap is at least half of the shorter of the two.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli import paths
from phdcli.fsutil import atomic_write_text, cached_sha256

if TYPE_CHECKING:
    from phdcli.features import SegmentFeatures
    from phdcli.history import History
    from phdcli.results import Suggestion

log = logging.getLogger("phd")

RECORD_FORMAT = "phd-output/1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A segment and a kept span are "the same span" when they share at least
# this fraction of the shorter one.
SAME_SPAN_OVERLAP = 0.5


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

    def matches(self, backbone: str, spec: dict[str, Any]) -> bool:
        return self.backbone == backbone and self.spec == spec


@dataclass(frozen=True)
class OutputRecord:
    file_sha256: str
    provenance: Provenance
    feature: SpanFeature


# -- computing a span's feature from what suggest already has ----------------
def span_feature(feats: SegmentFeatures, segment: int, start_s: float, end_s: float,
                 segment_bounds_s: tuple[float, float], clip_s: float) -> np.ndarray:
    """(D,) feature of [start_s, end_s] from the segment and clip rows of the cache.

    The whole segment gives its own row (what the ranking used); a shorter
    ``--gif-length`` window gives the mean of the clips that lie inside it
    (the clip nearest its centre when none does).
    """
    from phdcli.features import l2_normalise

    if abs(start_s - segment_bounds_s[0]) < 1e-3 and abs(end_s - segment_bounds_s[1]) < 1e-3:
        return np.asarray(feats.segments[segment], dtype=np.float32)
    clip_starts = np.asarray(feats.clip_starts_s, dtype=np.float64)
    inside = (clip_starts >= start_s - 1e-3) & (clip_starts + clip_s <= end_s + 1e-3)
    if not inside.any():
        centre = (start_s + end_s) / 2
        inside = np.zeros(len(clip_starts), dtype=bool)
        inside[int(np.argmin(np.abs(clip_starts + clip_s / 2 - centre)))] = True
    return l2_normalise(feats.clips[inside].mean(axis=0)).astype(np.float32)


# -- records ------------------------------------------------------------------
def record_path(file_sha256: str) -> Path:
    return paths.cache_dir() / "outputs" / file_sha256[:2] / f"{file_sha256}.json"


def _vector_to_text(vector: np.ndarray) -> tuple[str, str]:
    raw = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return base64.b64encode(raw).decode("ascii"), hashlib.sha256(raw).hexdigest()


def remember(file: Path, provenance: Provenance, feature: SpanFeature) -> None:
    """Record a written output; a cache that cannot be written only costs the shortcut."""
    try:
        digest = cached_sha256(file)
        text, vector_sha = _vector_to_text(feature.vector)
        doc = {
            "format": RECORD_FORMAT,
            "file": file.name,  # for people reading the cache; never used as a path
            "file_sha256": digest,
            "source": provenance.to_dict(),
            "feature": {"backbone": feature.backbone, "spec": feature.spec,
                        "dims": int(feature.vector.shape[0]), "sha256": vector_sha,
                        "float32_le_base64": text},
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
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != RECORD_FORMAT or doc.get("file_sha256") != file_sha256:
            raise ValueError("record is for another file or format")
        provenance = Provenance.from_dict(doc.get("source"))
        meta = doc["feature"]
        raw = base64.b64decode(meta["float32_le_base64"], validate=True)
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise ValueError("feature checksum mismatch")
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if vector.shape != (int(meta["dims"]),) or not np.isfinite(vector).all():
            raise ValueError("feature has the wrong shape or non-finite values")
        if not isinstance(meta["backbone"], str) or not isinstance(meta["spec"], dict):
            raise ValueError("feature does not say what made it")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"its phd record is damaged ({exc})"
    return OutputRecord(file_sha256, provenance, SpanFeature(vector, meta["backbone"],
                                                             meta["spec"])), ""


# -- leaving kept spans out ---------------------------------------------------
def kept_spans(provenances: Iterable[Provenance | None], video_sha256: str,
               video: str) -> list[tuple[float, float]]:
    """Spans already kept from this video (same content, or the same URL)."""
    same_url = "://" in video  # a URL downloaded again may differ in bytes, not in content
    return sorted(
        (p.start_s, p.end_s) for p in provenances
        if p is not None and (p.video_sha256 == video_sha256 or (same_url and p.video == video))
    )


def same_span(starts_s: Sequence[float] | np.ndarray, ends_s: Sequence[float] | np.ndarray,
              spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """(n,) bool: the segment is one of ``spans`` (overlap >= half the shorter)."""
    starts = np.asarray(starts_s, dtype=np.float64)[:, None]
    ends = np.asarray(ends_s, dtype=np.float64)[:, None]
    if not spans:
        return np.zeros(len(starts), dtype=bool)
    kept = np.asarray(spans, dtype=np.float64)
    overlap = np.clip(np.minimum(ends, kept[:, 1]) - np.maximum(starts, kept[:, 0]), 0.0, None)
    shorter = np.minimum(ends - starts, kept[:, 1] - kept[:, 0])
    return (overlap >= SAME_SPAN_OVERLAP * shorter - 1e-9).any(axis=1)


# -- hooks for phd suggest ----------------------------------------------------
def spans_kept_from(history: History, video_sha256: str, video: str
                    ) -> tuple[tuple[float, float], ...]:
    """The spans of this video that the profile already kept (a managed history only)."""
    if not history.managed:
        return ()  # a plain --history folder has no provenance
    return tuple(kept_spans((it.source for it in history.items()), video_sha256, video))


def remember_picks(picks: Sequence[Suggestion], order: Sequence[int], feats: SegmentFeatures,
                   clip_s: float, video: str, video_sha256: str, backbone: str,
                   spec: dict[str, Any]) -> None:
    """Record every written pick; the pick of rank r came from segment ``order[r - 1]``."""
    for pick in picks:
        if pick.path is None:
            continue
        vector = span_feature(feats, int(order[pick.rank - 1]), pick.start_s, pick.end_s,
                              (pick.segment_start_s, pick.segment_end_s), clip_s)
        remember(Path(pick.path), Provenance(video, video_sha256, pick.start_s, pick.end_s),
                 SpanFeature(vector, backbone, spec))
