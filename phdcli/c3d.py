"""The C3D network (Tran et al., ICCV 2015) as a feature extractor: pure torch, no I/O.

Parameter names are our canonical ones (``conv1a.weight`` ... ``fc7.bias``);
``phdcli.weights`` maps each published format onto them. See
docs/c3d.md for the architecture and the facts about the public weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CLIP_FRAMES = 16
CROP_SIZE = 112
# The decoder resizes frames to 128x171 (the C3D / Sports-1M convention).
FRAME_HEIGHT, FRAME_WIDTH = 128, 171
# Centre crop: rows 8:120 and cols 29:141. 171 - 112 = 59 is odd, so the
# crop is half a pixel off centre either way; 29 is what both the original
# Caffe/Lasagne pipeline ([8:120, 29:141], used by Video2GIF) and
# mmaction2's CenterCrop ((171 - 112) // 2 = 29) take, so we match them.
CROP_TOP = (FRAME_HEIGHT - CROP_SIZE) // 2
CROP_LEFT = (FRAME_WIDTH - CROP_SIZE) // 2

FEATURE_LAYERS = ("pool5", "fc6", "fc7")
FEATURE_DIMS = {"pool5": 8192, "fc6": 4096, "fc7": 4096}

_CONVS: tuple[tuple[str, int, int], ...] = (
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
    for name, cin, cout in _CONVS:
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


class C3D(nn.Module):
    """C3D up to fc7, for inference (no dropout, no fc8).

    ``forward(x, layer)``: x (N, 3, 16, 112, 112) float -> (N, D), D = 8192
    for pool5 (flattened channel-major, as every port does), 4096 for fc6 and
    fc7 (after ReLU).
    """

    def __init__(self, pool5_padding: str = "both") -> None:
        super().__init__()
        for name, cin, cout in _CONVS:
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        # pool1 keeps time: the first layer must not collapse motion early.
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        # conv5b gives 2x7x7; both variants give 1x4x4 but window differently
        # (see docs/c3d.md): the weights only fit the one they were ported with.
        if pool5_padding == "both":
            self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        elif pool5_padding == "right":
            self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)
        else:
            raise ValueError(f"pool5_padding must be 'both' or 'right', not {pool5_padding!r}")
        self.pool5_padding = pool5_padding
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, layer: str = "fc6") -> torch.Tensor:
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"layer must be one of {FEATURE_LAYERS}, not {layer!r}")
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, CLIP_FRAMES, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"C3D wants (N, 3, 16, 112, 112), got {tuple(x.shape)}")
        relu = self.relu
        h = self.pool1(relu(self.conv1a(x)))
        h = self.pool2(relu(self.conv2a(h)))
        h = self.pool3(relu(self.conv3b(relu(self.conv3a(h)))))
        h = self.pool4(relu(self.conv4b(relu(self.conv4a(h)))))
        h = self.pool5(relu(self.conv5b(relu(self.conv5a(h)))))
        # reshape, not view: channels_last_3d inputs give a non-contiguous h.
        h = h.reshape(h.shape[0], -1)
        if layer == "pool5":
            return h
        h = relu(self.fc6(h))
        if layer == "fc6":
            return h
        return relu(self.fc7(h))


def preprocess(clips: torch.Tensor, spec: C3DInput) -> torch.Tensor:
    """uint8 clips (N, 16, 128, 171, 3) RGB -> float32 (N, 3, 16, 112, 112).

    Centre crop (rows 8:120, cols 29:141), reorder channels to what the
    weights expect, subtract their mean. Runs on the clips' device; the crop
    and the channel flip happen on uint8, so the float copy is the small one.
    """
    expected = (CLIP_FRAMES, FRAME_HEIGHT, FRAME_WIDTH, 3)
    if clips.dim() != 5 or tuple(clips.shape[1:]) != expected:
        raise ValueError(f"clips must be (N, {', '.join(map(str, expected))}), "
                         f"got {tuple(clips.shape)}")
    if clips.dtype != torch.uint8:
        raise ValueError(f"clips must be uint8, got {clips.dtype}")
    x = clips[:, :, CROP_TOP:CROP_TOP + CROP_SIZE, CROP_LEFT:CROP_LEFT + CROP_SIZE, :]
    if spec.channel_order == "BGR":
        x = x.flip(-1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=clips.device)
    x = x.to(torch.float32) - mean
    # (N, T, H, W, C) -> (N, C, T, H, W), made contiguous for the convs.
    return x.permute(0, 4, 1, 2, 3).contiguous()
