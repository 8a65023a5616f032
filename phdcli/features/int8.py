"""int8 C3D on the CPU: OpenVINO runs it, NNCF builds it, the user's video vouches for it.

Why OpenVINO (with NNCF for post-training quantization): measured here on
C3D (README, "Performance"), it gave the largest int8 speed-up of the three
runtimes that install from PyPI without a compiler, and it is maintained for
CPUs, where PyTorch's own eager int8 (``torch.ao.quantization``) is
deprecated.

The quantized model is built once per weights file (per-channel int8
weights, activations calibrated on clips of the user's own video), saved
next to the converted weights with a sha256 of each file, and checked before
each load. Whether ``auto`` may use it is decided by a self-check: clips of
the video at hand (not those it was calibrated on) go through fp32 and int8,
and int8 is used only if every clip's features agree (cosine >= 0.99) and
the clips rank the same way (see ``compare``). The verdict is kept per
weights file and CPU, so the check runs once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli import paths
from phdcli.fsutil import atomic_write_text, sha256_file, temp_dir
from phdcli.fsutil.cachefile import WEIGHTS_MAX, RefusedEntry, discard, read_entry, read_entry_text

if TYPE_CHECKING:
    from phdcli.features.c3d_spec import C3DInput
    from phdcli.features.device import Runtime
    from phdcli.features.spec import FeatureSpec
    from phdcli.features.weights import LoadedC3D
    from phdcli.media.probe import VideoInfo

log = logging.getLogger("phd")

BACKEND = "openvino-nncf"
# Clips of the user's video: half calibrate the activations, the other half
# are the self-check's, so the check never grades the data it was fit on.
CALIBRATION_CLIPS = 8
CHECK_CLIPS = 8
MIN_COSINE = 0.99
# Ranking agreement: each check clip's TOP_K nearest other clips (centred
# cosine, as the ranking model compares segments with history GIFs). A clip
# whose k-th and (k+1)-th neighbours are closer than TIE in fp32 has no
# top-k to keep (a static shot, a repeated scene): it is not graded, so
# that a verdict, which is cached, never hangs on a coin flip.
TOP_K = 3
TIE = 0.01


@dataclass(frozen=True)
class Verdict:
    ok: bool
    min_cosine: float
    topk_agree: int  # graded clips whose top-k neighbours are the same in int8
    topk_graded: int  # clips with a clear fp32 top-k (no near-tie at the k-th)
    clips: int
    video: str
    cpu: str
    checked_at: float

    def summary(self) -> str:
        return (f"min cosine {self.min_cosine:.4f} over {self.clips} clips, same top-{TOP_K} "
                f"for {self.topk_agree}/{self.topk_graded}")


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


def verdict_file(weights_sha256: str, layer: str, cpu: str) -> Path:
    return _int8_dir() / f"{weights_sha256}.int8-{layer}.check-{cpu}.json"


def read_verdict(path: Path) -> Verdict | None:
    try:
        doc = json.loads(read_entry_text(path))
        return Verdict(**{k: doc[k] for k in Verdict.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_model(weights_sha256: str, layer: str) -> Any | None:
    """The cached int8 model (an openvino.Model), verified; None if absent or damaged.

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

    return ov.Core().read_model(xml_bytes, bin_bytes)


def _save_model(model: Any, weights_sha256: str, layer: str) -> None:
    """xml + bin written in a temp folder, moved in place; the manifest last."""
    import openvino as ov

    xml, bin_, manifest = model_files(weights_sha256, layer)
    with temp_dir(xml.parent, "int8") as tmp:
        ov.save_model(model, str(tmp / "m.xml"), compress_to_fp16=False)
        sums = {"xml": sha256_file(tmp / "m.xml"), "bin": sha256_file(tmp / "m.bin")}
        os.replace(tmp / "m.xml", xml)
        os.replace(tmp / "m.bin", bin_)
        atomic_write_text(manifest, json.dumps({"backend": BACKEND, "sha256": sums}))


# ---------------------------------------------------------------- build


def _torch_reference(net: LoadedC3D, layer: str, x: np.ndarray) -> np.ndarray:
    """fp32 features, exactly as phd computes them without int8."""
    import torch

    with torch.inference_mode():
        return net.model(torch.from_numpy(x), layer=layer).float().numpy()


def build(net: LoadedC3D, layer: str, calibration: np.ndarray) -> Any:
    """An int8 openvino.Model of C3D up to ``layer``, calibrated on ``calibration``
    (preprocessed float32 clips)."""
    import nncf
    import openvino as ov
    import torch

    class _UpTo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x, layer=layer)

    # NNCF draws progress bars on stdout, which must stay phd's (--json);
    # what it has to say about failures comes back as exceptions.
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), \
            contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")  # tracer warnings about the shape check
        model = ov.convert_model(_UpTo().eval(), example_input=torch.from_numpy(calibration[:1]),
                                 input=[(-1, *calibration.shape[1:])])
        nncf.set_log_level(logging.ERROR)
        samples = [calibration[i:i + 1] for i in range(len(calibration))]
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                             fast_bias_correction=True)


def compile_model(model: Any) -> Int8C3D:
    import openvino as ov

    return Int8C3D(ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"}))


# ---------------------------------------------------------------- the check


def compare(ref: np.ndarray, low: np.ndarray, k: int = TOP_K) -> tuple[float, int, int]:
    """(min cosine of matching rows, rows whose top-k neighbours agree, rows graded).

    Neighbours are ranked by cosine after centring on the clips' mean (what
    the ranking model does with a video's segments and the history): row i's
    k most similar other rows must be the same set in ``low`` as in ``ref``.
    Rows without a clear top-k in ``ref`` (a gap under TIE after the k-th)
    are not graded.
    """
    def unit(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    cosines = (unit(ref) * unit(low)).sum(axis=1)
    k = max(1, min(k, len(ref) - 2))

    def similarities(a: np.ndarray) -> np.ndarray:
        c = unit(a - a.mean(axis=0))
        sims = c @ c.T
        np.fill_diagonal(sims, -np.inf)
        return sims

    ref_sims, low_sims = similarities(ref), similarities(low)
    agree = graded = 0
    for r, q in zip(ref_sims, low_sims, strict=True):
        order = np.argsort(-r, kind="stable")
        if r[order[k - 1]] - r[order[k]] < TIE:
            continue
        graded += 1
        agree += set(order[:k].tolist()) == set(np.argsort(-q, kind="stable")[:k].tolist())
    return float(cosines.min()), agree, graded


def spread_clips(video: VideoInfo, spec: FeatureSpec, count: int) -> np.ndarray:
    """``count`` uint8 clips spread evenly over ``video``, decoded as phd decodes them."""
    from phdcli.media.decode import decode_clips

    span = spec.clip_s
    latest = max(video.duration_s - span, 0.0)
    starts = [latest * (i + 0.5) / count for i in range(count)]
    return np.stack(list(decode_clips(video.path, starts, spec.clip_fps, spec.clip_frames)))


def _user_clips(video: VideoInfo, spec: FeatureSpec, count: int,
                input_spec: C3DInput) -> np.ndarray:
    """``count`` preprocessed clips spread evenly over the user's video."""
    import torch

    from phdcli.features.c3d import preprocess

    clips = spread_clips(video, spec, count)
    return preprocess(torch.from_numpy(clips), input_spec).numpy()


def prepare(runtime: Runtime, video: VideoInfo, spec: FeatureSpec, weights_sha256: str,
            input_spec: C3DInput, reference: Callable[[], LoadedC3D],
            ) -> tuple[Int8C3D | None, Runtime]:
    """The int8 network and the runtime to report, or (None, fp32 runtime)
    when ``auto``'s self-check refuses int8 (now or in a cached verdict).

    ``reference()`` gives the fp32 network; it is called only to build the
    int8 model or to run the self-check, so a run with both cached never
    loads the fp32 weights.
    """
    from phdcli.features.device import cpu_id

    sha, layer, cpu = weights_sha256, spec.layer, cpu_id()
    vfile = verdict_file(sha, layer, cpu)
    verdict = read_verdict(vfile)
    if verdict is not None and not verdict.ok and not runtime.needs_self_check:
        log.warning("warning: int8 forced although the self-check refused it for these "
                    "weights on this CPU (%s)", verdict.summary())
    elif verdict is not None and not verdict.ok:
        return None, _fp32(runtime, f"int8 refused by the self-check for these weights on this "
                                    f"CPU ({verdict.summary()}; on {verdict.video}, cached)")

    model = _load_model(sha, layer)
    clips: np.ndarray | None = None
    if model is None or (runtime.needs_self_check and verdict is None):
        clips = _user_clips(video, spec, CALIBRATION_CLIPS + CHECK_CLIPS, input_spec)
    if model is None:
        assert clips is not None
        log.info("building the int8 C3D model (once for these weights) from %s", video.path.name)
        # A failure here (NNCF/OpenVINO) is the caller's to handle: auto falls
        # back to fp32, --precision int8 stops with a one-line error.
        model = build(reference(), layer, clips[0::2])
        _save_model(model, sha, layer)
        # Calibrated on this video, it is not the model a cached verdict judged.
        verdict = None
    engine = compile_model(model)

    if not runtime.needs_self_check:
        return engine, replace(runtime, reason=f"{runtime.reason}; self-check not run")
    assert verdict is None or verdict.ok
    if verdict is None:
        assert clips is not None
        check = clips[1::2]
        min_cos, agree, graded = compare(_torch_reference(reference(), layer, check),
                                         engine.forward(check))
        ok = min_cos >= MIN_COSINE and agree == graded
        verdict = Verdict(ok, min_cos, agree, graded, len(check), video.path.name, cpu,
                          time.time())
        try:
            atomic_write_text(vfile, json.dumps(asdict(verdict)))
        except OSError as exc:  # a read-only cache: the check runs again next time
            log.warning("warning: could not cache the int8 self-check's verdict (%s)", exc)
        how = f"on {video.path.name}"
    else:
        how = f"on {verdict.video}, cached"
    if not verdict.ok:
        return None, _fp32(runtime, f"int8 refused by the self-check ({verdict.summary()}; {how})")
    return engine, replace(runtime, needs_self_check=False,
                           reason=f"int8 self-check passed ({verdict.summary()}; {how})")


def _fp32(runtime: Runtime, why: str) -> Runtime:
    return replace(runtime, precision="fp32", needs_self_check=False, reason=why)
