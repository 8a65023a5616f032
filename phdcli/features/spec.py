"""What a feature vector is: written into model files, cache keys and the feature store.

A segment's feature is the mean of the C3D features of ``clips_per_segment``
clips of ``clip_frames`` frames sampled at ``clip_fps`` inside it, taken at
``layer`` of a ``family`` backbone, then L2-normalised (method.md,
"Representation"). Two features compare only when their specs are equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FeatureSpec:
    family: str = "c3d-sports1m"
    layer: str = "fc6"
    clip_fps: float = 25.0
    clips_per_segment: int = 2
    clip_frames: int = 16

    @property
    def clip_s(self) -> float:
        """How long one clip lasts, in seconds."""
        return self.clip_frames / self.clip_fps

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        return cls(
            family=str(data["family"]),
            layer=str(data["layer"]),
            clip_fps=float(data["clip_fps"]),  # type: ignore[arg-type]
            clips_per_segment=int(data["clips_per_segment"]),  # type: ignore[call-overload]
            clip_frames=int(data.get("clip_frames", 16)),  # type: ignore[call-overload]
        )
