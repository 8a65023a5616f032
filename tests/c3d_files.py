"""Weights files in both published C3D formats, filled with RANDOM values.

Nothing here is a trained model: the tensors are He-initialised noise (so
activations neither vanish nor explode through the 8 convs), with the real
names and shapes, for testing loading, conversion and the feature pipeline
offline. Each file is full size (about 312 MB): write it once per session.
"""

from __future__ import annotations

from pathlib import Path

import torch

from phdcli.features.c3d import C3D_PARAM_SHAPES

_STATES: dict[int, dict[str, torch.Tensor]] = {}


def random_c3d_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical-named float32 tensors: weights N(0, 2/fan_in), biases N(0, 0.01).

    Drawn once per seed and process (a second each); every call gets its own
    copies, which a test may change.
    """
    return {name: tensor.clone() for name, tensor in _shared_state(seed).items()}


def _shared_state(seed: int) -> dict[str, torch.Tensor]:
    """The drawn tensors themselves: for callers that only read them."""
    if seed not in _STATES:
        _STATES[seed] = _draw_c3d_state(seed)
    return _STATES[seed]


def _draw_c3d_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in C3D_PARAM_SHAPES.items():
        if name.endswith(".weight"):
            fan_in = 1
            for dim in shape[1:]:
                fan_in *= dim
            state[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            # Non-zero and distinct, so that a swapped bias would be noticed.
            state[name] = torch.randn(shape, generator=gen) * 0.1
    return state


def write_mmaction2_pth(path: Path, seed: int = 0, bad_shape: bool = False) -> Path:
    """A flat state dict with mmaction2's keys (``conv1a.conv.weight``, ``fc6.weight``).

    ``bad_shape`` gives ``conv3b.conv.weight`` 128 input channels instead of 256.
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in _shared_state(seed).items():
        layer, param = name.rsplit(".", 1)
        key = f"{layer}.conv.{param}" if layer.startswith("conv") else name
        state[key] = tensor
    if bad_shape:
        state["conv3b.conv.weight"] = state["conv3b.conv.weight"][:, :128].clone()
    torch.save(state, path)
    return Path(path)


def write_davidea_pickle(path: Path, seed: int = 0) -> Path:
    """DavideA's ``c3d.pickle`` layout: ``conv1``, ``conv2``, ``conv3a``... plus fc8
    (487 Sports-1M classes), in torch's legacy (pre-1.6, non-zip) format as that
    2017 file is."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in _shared_state(seed).items():
        layer, param = name.rsplit(".", 1)
        layer = {"conv1a": "conv1", "conv2a": "conv2"}.get(layer, layer)
        state[f"{layer}.{param}"] = tensor
    gen = torch.Generator().manual_seed(seed + 1)
    state["fc8.weight"] = torch.randn(487, 4096, generator=gen) * (2.0 / 4096) ** 0.5
    state["fc8.bias"] = torch.zeros(487)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return Path(path)
