"""``phd doctor``: check each part phd needs and say how to fix what is missing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phdcli.errors import PhdError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _ffmpeg() -> Check:
    from phdcli.ffmpeg import ffmpeg_exe

    exe = ffmpeg_exe()
    try:
        filters = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True,
                                  text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", False, f"{exe} does not run ({exc})",
                     "pip install --force-reinstall imageio-ffmpeg, or set PHD_FFMPEG")
    missing = [f for f in ("palettegen", "paletteuse") if f" {f} " not in filters]
    missing += [e for e in ("libx264", "libwebp") if e not in encoders]
    if missing:
        return Check("ffmpeg", False, f"{exe} lacks {', '.join(missing)}",
                     "use imageio-ffmpeg's bundled binary (unset PHD_FFMPEG)")
    return Check("ffmpeg", True, f"{exe} (palettegen, paletteuse, libx264, libwebp)")


def _versions() -> Check:
    from importlib.metadata import PackageNotFoundError, version

    found, missing = [], []
    for package in ("av", "yt-dlp", "scenedetect-headless", "safetensors", "torch"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            missing.append(package)
    if missing:
        return Check("packages", False, f"missing {', '.join(missing)}",
                     f"pip install {' '.join(missing)} (torch: see the README)")
    return Check("packages", True, ", ".join(found))


def _device(device: str) -> Check:
    from phdcli.device import resolve_runtime

    try:
        runtime = resolve_runtime(device)
    except PhdError as exc:
        return Check("device", False, str(exc), "use --device auto or cpu")
    return Check("device", True, runtime.describe())


def _c3d(weights: Path | None) -> Check:
    from phdcli.weights import REGISTRY, file_sha256, load_c3d_state, resolve_weights_path

    try:
        path = resolve_weights_path(weights)
        load_c3d_state(path)  # every shape validated
    except PhdError as exc:
        return Check("C3D weights", False, str(exc), "phd model fetch")
    known = {s.filename: s for s in REGISTRY.values()}
    source = known.get(path.name)
    if source is not None and source.sha256:
        if file_sha256(path) != source.sha256:
            return Check("C3D weights", False, f"{path}: sha256 does not match {source.name}",
                         "phd model fetch --force")
        return Check("C3D weights", True, f"{path} (sha256 verified, {source.name})")
    return Check("C3D weights", True, f"{path} (shapes valid; no published checksum to verify)")


def _model(model: Path | None) -> Check:
    from phdcli.model import default_model_path, load_model

    path = model or default_model_path()
    try:
        loaded = load_model(path)
    except PhdError as exc:
        return Check("ranking model", False, str(exc), "reinstall phd or pass --model FILE")
    spec = loaded.spec
    return Check("ranking model", True, f"{path.name}: {spec.family}/{spec.layer}, k={loaded.k}")


def _history(user: str) -> Check:
    from phdcli.fsutil import sha256_file
    from phdcli.history import History

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
