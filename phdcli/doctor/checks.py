"""``phd doctor``: check each part phd needs and say how to fix what is missing."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phdcli.doctor.torchbuild import (
    Fixes,
    Gpu,
    TorchBuild,
    find_gpu,
    fixes_for,
    installed_torch,
    verdict,
)
from phdcli.errors import PhdError

# 0.5 s of ffmpeg's moving test pattern: enough frames for a palette and a GOP.
_TEST_SOURCE = "testsrc2=size=96x64:rate=10:duration=0.5"


@dataclass(frozen=True)
class Check:
    """``ok`` False: phd cannot work until fixed (``doctor`` exits 1). ``warning``:
    phd works, but not as it should (a torch build that does not suit the machine)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False

    @property
    def status(self) -> str:
        return "MISSING" if not self.ok else "WARN" if self.warning else "ok"


def _ffmpeg() -> Check:
    """Write a tiny clip in each format with the very command lines ``phd suggest`` runs."""
    from phdcli.errors import FfmpegError
    from phdcli.media.ffgraph import ClipEncoding, clip_args
    from phdcli.media.ffmpeg import ffmpeg_exe, run_ffmpeg
    from phdcli.media.gifs import FORMAT_SUFFIX, MP4_CRF_LADDER, WEBP_QUALITY_LADDER, GifOptions

    exe = ffmpeg_exe()
    quality = {"gif": GifOptions().colors, "mp4": MP4_CRF_LADDER[0],
               "webp": WEBP_QUALITY_LADDER[0]}
    with tempfile.TemporaryDirectory(prefix="phd-doctor-") as tmp:
        for fmt, suffix in FORMAT_SUFFIX.items():
            out = Path(tmp) / f"probe{suffix}"
            args = clip_args(_TEST_SOURCE, 0.0, 0.5, out, ClipEncoding(fmt, 10.0, 64, quality[fmt]),
                             source_format="lavfi")
            try:
                run_ffmpeg(args)
            except FfmpegError as exc:
                if isinstance(exc.__cause__, OSError):  # the binary itself does not run
                    return Check("ffmpeg", False, str(exc),
                                 "pip install --force-reinstall imageio-ffmpeg, or set PHD_FFMPEG")
                return Check("ffmpeg", False, f"{exe} cannot write {fmt}: {exc}",
                             "use imageio-ffmpeg's bundled binary (unset PHD_FFMPEG)")
    return Check("ffmpeg", True, f"{exe} (wrote gif, mp4, webp: palettegen, paletteuse, "
                                 "libx264, libwebp_anim)")


def _versions() -> Check:
    from importlib.metadata import PackageNotFoundError, version

    found, missing = [], []
    for package in ("av", "ffmpeg-python", "imageio-ffmpeg", "yt-dlp", "scenedetect-headless",
                    "safetensors", "torch"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            missing.append(package)
    if missing:
        return Check("packages", False, f"missing {', '.join(missing)}",
                     f"pip install {' '.join(missing)} (torch: see the README)")
    return Check("packages", True, ", ".join(found))


def torch_build_check(build: TorchBuild | None, gpu: Gpu, fixes: Fixes | None) -> Check:
    """Whether the torch build suits the machine: a warning, not a failure, when it
    does not (a CUDA build runs on the CPU; a CPU build leaves the GPU idle)."""
    if build is None or fixes is None:
        return Check("torch build", False, "torch is not installed",
                     "install the build for your machine (README, Installing)")
    got = verdict(build, gpu, fixes)
    return Check("torch build", True, got.detail, got.fix, warning=not got.suits)


def _torch_build() -> Check:
    build = installed_torch()  # torch is imported by the device check anyway
    return torch_build_check(build, find_gpu(), None if build is None else fixes_for(build))


def _device(device: str) -> Check:
    from phdcli.features.device import resolve_runtime

    try:
        runtime = resolve_runtime(device)
    except PhdError as exc:
        return Check("device", False, str(exc), "use --device auto or cpu")
    return Check("device", True, runtime.describe())


def _c3d(weights: Path | None) -> Check:
    from phdcli.doctor.about import c3d_weights_status
    from phdcli.features.weights import load_c3d_state

    status = c3d_weights_status(weights)
    if not status.ok or status.path is None:
        return Check("C3D weights", False, status.detail, status.fix)
    try:
        load_c3d_state(Path(status.path))  # every shape validated
    except PhdError as exc:
        return Check("C3D weights", False, str(exc), "phd model fetch --force")
    detail = status.detail
    if status.verified is None:
        detail = f"{status.path} (shapes valid; no published checksum to verify)"
    return Check("C3D weights", True, detail)


def _model(model: Path | None) -> Check:
    from phdcli.ranking.model import default_model_path, load_model

    path = model or default_model_path()
    try:
        loaded = load_model(path)
    except PhdError as exc:
        return Check("ranking model", False, str(exc), "reinstall phd or pass --model FILE")
    spec = loaded.spec
    return Check("ranking model", True, f"{path.name}: {spec.family}/{spec.layer}, k={loaded.k}")


def _history(user: str) -> Check:
    from phdcli.fsutil import sha256_file
    from phdcli.history.store import History

    try:
        history = History.for_user(user)
        items = history.items()
    except PhdError as exc:
        return Check("history", False, str(exc), "fix or remove the manifest file")
    broken = [it.name for it in items
              if not it.path_in(history.folder).is_file()
              or sha256_file(it.path_in(history.folder)) != it.sha256]
    if broken:
        return Check("history", False, f"{len(broken)} GIF(s) missing or changed: "
                     f"{', '.join(broken[:3])}", "phd history remove NAME, then add it again")
    return Check("history", True, f"{len(items)} GIFs in {history.folder} (all intact)")


def run_checks(
    user: str = "default", device: str = "auto", weights: Path | None = None,
    model: Path | None = None,
) -> list[Check]:
    """Every check, each isolated: one failing never hides the others."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("ffmpeg", _ffmpeg),
        ("packages", _versions),
        ("torch build", _torch_build),
        ("device", lambda: _device(device)),
        ("C3D weights", lambda: _c3d(weights)),
        ("ranking model", lambda: _model(model)),
        ("history", lambda: _history(user)),
    ]
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as exc:  # a doctor reports, it does not crash
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    return results
