"""The rows of a history manifest, and files ready to become rows.

``HistoryItem`` is one GIF of a profile (``history.json``); a kept GIF's row
also holds its ``Provenance`` and a ``StoredFeature`` (its feature from the
original video, in ``.features/<sha256>.npy``). Names read from a manifest
must be plain file names inside the folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phdcli.history.records import Provenance

MANIFEST = "history.json"
LOCK = ".history.lock"
PENDING = ".history.pending.json"  # rows an add is claiming (phdcli.history.pending)
FEATURES_DIR = ".features"
_FEATURE_FILE = re.compile(r"^\.features/[0-9a-f]{64}\.npy$")


@dataclass(frozen=True)
class StoredFeature:
    """A kept GIF's feature from its original video, stored in the history folder."""

    file: str  # relative to the folder: ".features/<gif sha256>.npy"
    backbone: str  # FeatureExtractor.backbone_id that made it
    spec: dict[str, Any]  # FeatureSpec.to_dict()
    sha256: str  # of the .npy file's bytes

    @classmethod
    def from_dict(cls, data: Any) -> StoredFeature:
        if not isinstance(data, dict) or not _FEATURE_FILE.match(str(data.get("file"))):
            raise ValueError(f"bad stored feature {data!r}")
        if not isinstance(data.get("spec"), dict):
            raise ValueError("stored feature has no spec")
        return cls(str(data["file"]), str(data["backbone"]), dict(data["spec"]),
                   str(data["sha256"]))


@dataclass(frozen=True)
class Precomputed:
    """What ``phd suggest`` knows of one of its outputs (``phdcli.history.records``)."""

    provenance: Provenance
    feature: np.ndarray | None  # (D,) from the original video; None: decode the file


@dataclass(frozen=True)
class HistoryItem:
    name: str
    sha256: str
    frames: int
    duration_s: float
    added: str  # ISO 8601, UTC
    source: Provenance | None = None  # where a kept GIF came from
    feature: StoredFeature | None = None

    def path_in(self, folder: Path) -> Path:
        return folder / self.name

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HistoryItem:
        row = dict(row)
        source, feature = row.pop("source", None), row.pop("feature", None)
        return cls(**row,
                   source=None if source is None else Provenance.from_dict(source),
                   feature=None if feature is None else StoredFeature.from_dict(feature))


@dataclass(frozen=True)
class PreparedFile:
    """A file that probed, decoded cleanly and has its feature (cached, or stored
    from ``phd suggest``): ready to be copied in, nothing written yet."""

    source: Path
    sha256: str
    frames: int
    duration_s: float
    provenance: Provenance | None = None  # a kept GIF's origin
    feature: StoredFeature | None = None
    feature_blob: bytes = b""  # the .npy bytes of ``feature``


def check_item_name(name: object) -> str:
    """``name`` if it is a plain file name that stays inside the history folder."""
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
            or any(c in name for c in "/\\\0") or name == MANIFEST
            or len(name.encode("utf-8", "surrogateescape")) > 255):
        raise ValueError(f"item name {name!r} is not a plain file name")
    return name
