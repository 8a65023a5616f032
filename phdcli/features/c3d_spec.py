"""What C3D is, without torch: shapes, input conventions, crop geometry.

Kept apart from ``phdcli.features.c3d`` (the torch module) so that resolving and
validating weights, and every warm run that reads features from the cache,
never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# Clips of 16 frames resized to 128x171 (the C3D / Sports-1M convention),
# which is what the decoder makes.
from phdcli.media.decode import CLIP_FRAMES, FRAME_HEIGHT, FRAME_WIDTH  # noqa: F401 - C3D facts too

CROP_SIZE = 112
# Centre crop: rows 8:120 and cols 29:141. 171 - 112 = 59 is odd, so the
# crop is half a pixel off centre either way; 29 is what both the original
# Caffe/Lasagne pipeline ([8:120, 29:141], used by Video2GIF) and
# mmaction2's CenterCrop ((171 - 112) // 2 = 29) take, so we match them.
CROP_TOP = (FRAME_HEIGHT - CROP_SIZE) // 2
CROP_LEFT = (FRAME_WIDTH - CROP_SIZE) // 2

FEATURE_LAYERS = ("pool5", "fc6", "fc7")
FEATURE_DIMS = {"pool5": 8192, "fc6": 4096, "fc7": 4096}

CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv1a", 3, 64),
    ("conv2a", 64, 128),
    ("conv3a", 128, 256),
    ("conv3b", 256, 256),
    ("conv4a", 256, 512),
    ("conv4b", 512, 512),
    ("conv5a", 512, 512),
    ("conv5b", 512, 512),
)


def _param_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in CONV_LAYERS:
        shapes[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        shapes[f"{name}.bias"] = (cout,)
    shapes["fc6.weight"] = (4096, 8192)
    shapes["fc6.bias"] = (4096,)
    shapes["fc7.weight"] = (4096, 4096)
    shapes["fc7.bias"] = (4096,)
    return shapes


# The 20 tensors of a C3D feature extractor (no fc8: we never classify).
C3D_PARAM_SHAPES: dict[str, tuple[int, ...]] = _param_shapes()


@dataclass(frozen=True)
class C3DInput:
    """How a set of weights expects its input.

    ``mean`` is in ``channel_order`` order, on the 0-255 scale;
    ``pool5_padding`` is "both" (Keras/mmaction2 ports) or "right" (Caffe).
    """

    channel_order: str
    mean: tuple[float, float, float]
    pool5_padding: str = "both"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.pool5_padding not in ("both", "right"):
            raise ValueError(f"pool5_padding must be both or right, not {self.pool5_padding!r}")
        if len(self.mean) != 3:
            raise ValueError(f"mean needs 3 values, got {self.mean!r}")
