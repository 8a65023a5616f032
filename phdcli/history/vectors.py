"""A feature vector kept on disk, and the one way it is checked before use.

History folders keep a kept GIF's feature as a ``.npy`` file; the records of
``phd suggest``'s outputs carry the same bytes, base64-encoded, in JSON.
Both record the sha256 of those bytes and what made the vector (the
extractor's backbone id and feature spec), and both read it back through
:func:`decode`: checksum, then a finite 1-D float32 array, or ValueError.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from phdcli.features.extractor import FeatureExtractor


def encode(vector: np.ndarray) -> tuple[bytes, str]:
    """(.npy bytes of ``vector`` as float32, their sha256)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def decode(blob: bytes, sha256: str, dims: int | None = None) -> np.ndarray:
    """The vector in ``blob`` if its checksum and contents are sound; ValueError (why) if not."""
    _check_sum(blob, sha256)
    return _checked(np.load(io.BytesIO(blob), allow_pickle=False), dims)


def decode_float32_le(raw: bytes, sha256: str, dims: int) -> np.ndarray:
    """The vector in raw little-endian float32 bytes, checked as :func:`decode` checks.

    Read, never written: output records of format 1 (before the vector became
    ``.npy`` bytes) stored it this way, and a GIF written then can still be kept.
    """
    _check_sum(raw, sha256)
    if len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    return _checked(np.frombuffer(raw, dtype="<f4").astype(np.float32), dims)


def _check_sum(blob: bytes, sha256: str) -> None:
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError("checksum mismatch")


def _checked(vector: np.ndarray, dims: int | None) -> np.ndarray:
    if vector.ndim != 1 or vector.dtype != np.float32 or not np.isfinite(vector).all():
        raise ValueError("not a finite float32 vector")
    if dims is not None and vector.shape != (dims,):
        raise ValueError(f"{vector.shape[0]} values where the record says {dims}")
    return vector


def made_by(extractor: FeatureExtractor, backbone: str, spec: dict[str, Any]) -> bool:
    """True when a vector recorded as made by ``backbone`` and ``spec`` fits ``extractor``."""
    return backbone == extractor.backbone_id and spec == extractor.spec.to_dict()
