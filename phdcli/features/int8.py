"""int8 C3D on the CPU: OpenVINO runs it, NNCF builds it, the user's video vouches for it.

Why OpenVINO (with NNCF for post-training quantization): measured here on
C3D (README, "Performance"), it gave the largest int8 speed-up of the three
runtimes that install from PyPI without a compiler, and it is maintained for
CPUs, where PyTorch's own eager int8 (``torch.ao.quantization``) is
deprecated.

The quantized model is built once per weights file (per-channel int8
weights, activations calibrated on clips of the user's own video), saved
next to the converted weights with a sha256 of each file, and checked before
each load. Whether ``auto`` uses it is the precision probe's call
(``phdcli.features.precision_probe``): int8 must pass the self-check against fp32 on
other clips of the video and be the fastest candidate; the verdict names the
model it judged by the sha256 of its weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli import paths
from phdcli.fsutil import atomic_write_text, sha256_file, temp_dir
from phdcli.fsutil.cachefile import WEIGHTS_MAX, RefusedEntry, discard, read_entry, read_entry_text

if TYPE_CHECKING:
    from phdcli.features.c3d_spec import C3DInput
    from phdcli.features.spec import FeatureSpec
    from phdcli.features.weights import LoadedC3D
    from phdcli.media.probe import VideoInfo

log = logging.getLogger("phd")

BACKEND = "openvino-nncf"
# Clips of the user's video that calibrate the activations; the self-check
# (the probe) grades int8 on others, never on the data it was fit on. NNCF's
# time grows with them, but with 4 the int8 model lost a top-3 neighbour on a
# 10 s video (min cosine 0.9994 against 0.9996 with 8) and was refused.
CALIBRATION_CLIPS = 8


class Int8C3D:
    """The compiled int8 network: preprocessed float32 (N, 3, 16, 112, 112) -> (N, D)."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._compiled(np.ascontiguousarray(x, dtype=np.float32))[0],
                          dtype=np.float32)


# ---------------------------------------------------------------- files


def _int8_dir() -> Path:
    return paths.weights_cache_dir() / "converted"


def model_files(weights_sha256: str, layer: str) -> tuple[Path, Path, Path]:
    """(xml, bin, manifest) of the int8 model, beside the converted weights."""
    # Not with_suffix: it would take ".int8-{layer}" for the suffix and drop the layer.
    stem = _int8_dir() / f"{weights_sha256}.int8-{layer}"
    return Path(f"{stem}.xml"), Path(f"{stem}.bin"), Path(f"{stem}.json")


def _load_model(weights_sha256: str, layer: str) -> tuple[Any, str] | None:
    """The cached int8 model (an openvino.Model) and the sha256 of its weights,
    verified; None if absent or damaged.

    Both files are read once, through the cache opener (a FIFO or a link to
    ``/dev/zero`` is refused, not read), checked, and handed to OpenVINO as
    bytes: what was checked is what is loaded.
    """
    xml, bin_, manifest = model_files(weights_sha256, layer)
    if not os.path.lexists(manifest):
        return None
    why = "checksum mismatch"
    try:
        sums = json.loads(read_entry_text(manifest))["sha256"]
        xml_bytes, bin_bytes = read_entry(xml, WEIGHTS_MAX), read_entry(bin_, WEIGHTS_MAX)
        ok = (hashlib.sha256(xml_bytes).hexdigest() == sums["xml"]
              and hashlib.sha256(bin_bytes).hexdigest() == sums["bin"])
    except RefusedEntry as exc:
        ok, why = False, f"{Path(str(exc.filename)).name}: {exc.strerror}"
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("warning: the cached int8 C3D model is damaged (%s): building it again",
                    why)
        for path in (manifest, xml, bin_):
            discard(path)
        return None
    import openvino as ov

    return ov.Core().read_model(xml_bytes, bin_bytes), sums["bin"]


def _save_model(model: Any, weights_sha256: str, layer: str) -> str:
    """xml + bin written in a temp folder, moved in place; the manifest last.
    Returns the sha256 of the weights (bin)."""
    import openvino as ov

    xml, bin_, manifest = model_files(weights_sha256, layer)
    with temp_dir(xml.parent, "int8") as tmp:
        ov.save_model(model, str(tmp / "m.xml"), compress_to_fp16=False)
        sums = {"xml": sha256_file(tmp / "m.xml"), "bin": sha256_file(tmp / "m.bin")}
        os.replace(tmp / "m.xml", xml)
        os.replace(tmp / "m.bin", bin_)
        atomic_write_text(manifest, json.dumps({"backend": BACKEND, "sha256": sums}))
    return sums["bin"]


# ---------------------------------------------------------------- build


def graph(net: LoadedC3D, layer: str) -> Any:
    """C3D up to ``layer`` as an fp32 openvino.Model, built op by op from the torch
    module's parameters and pooling settings.

    Tracing the module instead (``ov.convert_model``) took 16-21 s of the
    one-time build on 2 cores; this takes 0.2 s. The probe's self-check grades
    the int8 model against torch fp32, so a graph that drifted from the torch
    network would be refused, not used.
    """
    import openvino as ov
    import openvino.opset1 as ops1  # MaxPool with one output (values)
    import openvino.opset13 as ops

    from phdcli.features.c3d_spec import CLIP_FRAMES, CONV_LAYERS, CROP_SIZE

    m = net.model

    def const(t: Any) -> Any:
        return ops.constant(t.detach().float().contiguous().cpu().numpy())

    def three(v: int | tuple[int, ...]) -> list[int]:
        return list(v) if isinstance(v, tuple) else [v] * 3

    clips = ops.parameter([-1, 3, CLIP_FRAMES, CROP_SIZE, CROP_SIZE], np.float32, name="clips")
    pool_after = {"conv1a": m.pool1, "conv2a": m.pool2, "conv3b": m.pool3, "conv4b": m.pool4,
                  "conv5b": m.pool5}
    h = clips
    for name, _, _ in CONV_LAYERS:
        conv = getattr(m, name)
        pad = three(conv.padding)
        h = ops.convolution(h, const(conv.weight), three(conv.stride), pad, pad, [1, 1, 1])
        h = ops.relu(ops.add(h, const(conv.bias.reshape(1, -1, 1, 1, 1))))
        if name in pool_after:
            p = pool_after[name]
            h = ops1.max_pool(h, three(p.stride), three(p.padding), three(p.padding),
                              three(p.kernel_size), "ceil" if p.ceil_mode else "floor")
    # (N, C, D, H, W) -> (N, C*D*H*W), channel-major as torch's reshape.
    h = ops.reshape(h, ops.constant(np.array([0, -1], dtype=np.int64)), special_zero=True)
    for fc in {"pool5": (), "fc6": ("fc6",), "fc7": ("fc6", "fc7")}[layer]:
        linear = getattr(m, fc)
        h = ops.relu(ops.add(ops.matmul(h, const(linear.weight), False, True),
                             const(linear.bias)))
    return ov.Model([h], [clips], f"c3d-{layer}")


def build(net: LoadedC3D, layer: str, calibration: np.ndarray) -> Any:
    """An int8 openvino.Model of C3D up to ``layer``, calibrated on ``calibration``
    (preprocessed float32 clips)."""
    import nncf

    model = graph(net, layer)
    # NNCF draws progress bars on stdout, which must stay phd's (--json);
    # what it has to say about failures comes back as exceptions.
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), \
            contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        nncf.set_log_level(logging.ERROR)
        samples = [calibration[i:i + 1] for i in range(len(calibration))]
        # Fast bias correction kept: with RANDOM weights it changed nothing measurable
        # (same min cosine) and skipping it saved about half of quantize's time here,
        # but trained weights, with skewed activations, are what it is for.
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                             fast_bias_correction=True)


def compile_model(model: Any) -> Int8C3D:
    import openvino as ov

    return Int8C3D(ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"}))


# ---------------------------------------------------------------- clips and engines


def spread_clips(video: VideoInfo, spec: FeatureSpec, count: int) -> np.ndarray:
    """``count`` uint8 clips spread evenly over ``video``, decoded as phd decodes them."""
    from phdcli.media.decode import decode_clips

    span = spec.clip_s
    latest = max(video.duration_s - span, 0.0)
    starts = [latest * (i + 0.5) / count for i in range(count)]
    return np.stack(list(decode_clips(video.path, starts, spec.clip_fps, spec.clip_frames)))


def user_clips(video: VideoInfo, spec: FeatureSpec, count: int,
               input_spec: C3DInput) -> np.ndarray:
    """``count`` preprocessed clips spread evenly over the user's video."""
    import torch

    from phdcli.features.c3d import preprocess

    clips = spread_clips(video, spec, count)
    return preprocess(torch.from_numpy(clips), input_spec).numpy()


def cached_engine(weights_sha256: str, layer: str) -> tuple[Int8C3D, str] | None:
    """The cached int8 network, compiled, and the sha256 of its weights; None if
    there is none (or it was damaged: said, and removed)."""
    loaded = _load_model(weights_sha256, layer)
    if loaded is None:
        return None
    model, digest = loaded
    return compile_model(model), digest


def built_engine(weights_sha256: str, layer: str, net: LoadedC3D,
                 calibration: np.ndarray) -> tuple[Int8C3D, str]:
    """Build the int8 network from ``net`` on ``calibration`` (preprocessed
    clips of the user's video), cache it, compile it; with its weights' sha256.

    A failure here (NNCF/OpenVINO) is the caller's to handle: the probe goes
    on without int8, --precision int8 stops with a one-line error.
    """
    log.info("building the int8 C3D model (once for these weights)")
    model = build(net, layer, calibration)
    digest = _save_model(model, weights_sha256, layer)
    return compile_model(model), digest


def forced_engine(video: VideoInfo, spec: FeatureSpec, weights_sha256: str,
                  input_spec: C3DInput, reference: Callable[[], LoadedC3D]) -> Int8C3D:
    """--precision int8: the cached int8 network, or one built now on ``video``;
    no self-check (the user asked)."""
    cached = cached_engine(weights_sha256, spec.layer)
    if cached is not None:
        return cached[0]
    calibration = user_clips(video, spec, CALIBRATION_CLIPS, input_spec)
    return built_engine(weights_sha256, spec.layer, reference(), calibration)[0]
