"""The C3D network (Tran et al., ICCV 2015) as a feature extractor: pure torch, no I/O.

Parameter names are our canonical ones (``conv1a.weight`` ... ``fc7.bias``);
``phdcli.features.weights`` maps each published format onto them. See
docs/c3d.md for the architecture and the facts about the public weights.
"""

from __future__ import annotations

import torch
from torch import nn

from phdcli.features.c3d_spec import (  # noqa: F401 - re-exported: the network's facts
    C3D_PARAM_SHAPES,
    CLIP_FRAMES,
    CONV_LAYERS,
    CROP_LEFT,
    CROP_SIZE,
    CROP_TOP,
    FEATURE_DIMS,
    FEATURE_LAYERS,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    C3DInput,
)


class C3D(nn.Module):
    """C3D up to fc7, for inference (no dropout, no fc8).

    ``forward(x, layer)``: x (N, 3, 16, 112, 112) float -> (N, D), D = 8192
    for pool5 (flattened channel-major, as every port does), 4096 for fc6 and
    fc7 (after ReLU).
    """

    def __init__(self, pool5_padding: str = "both") -> None:
        super().__init__()
        for name, cin, cout in CONV_LAYERS:
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
