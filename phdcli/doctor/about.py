"""What phd is running with, for bug reports: ``phd --version`` and ``phd doctor --json``.

phd's version, the ranking model (bundled unless ``--model``) and what it was
trained on, torch and its build, the device and precision ``auto`` picks and
why, and whether the C3D weights are present and verified. Collecting it
imports torch (to ask it about devices); ``phd --help`` never comes here.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from phdcli import __version__
from phdcli.errors import PhdError


@dataclass(frozen=True)
class WeightsStatus:
    """The C3D weights phd would use: ``verified`` is None where no checksum is published."""

    path: str | None
    present: bool
    verified: bool | None
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.present and self.verified is not False


@dataclass(frozen=True)
class About:
    phd: str
    model: dict[str, Any]  # name, path, trained_on (or error)
    torch: dict[str, Any]  # version, build (or error)
    runtime: dict[str, Any]  # requested, device, precision, reason (or error)
    c3d_weights: WeightsStatus
    python: str
    platform: str
    installed_at: str  # the phdcli package folder: a wheel's, a pipx venv's or a checkout's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The human form, one fact a line (``phd --version``)."""
        m, t, r, w = self.model, self.torch, self.runtime, self.c3d_weights
        model = m.get("error") or f"{m['name']}: {m['trained_on']}"
        torch_line = t.get("error") or f"{t['version']} ({t['build']} build)"
        runtime = r.get("error") or f"{r['device']}, precision {r['precision']} ({r['reason']})"
        c3d = w.detail + (f" (fix: {w.fix})" if w.fix and w.fix not in w.detail else "")
        return [f"phd {self.phd} ({self.installed_at})", f"model:   {model}",
                f"torch:   {torch_line}", f"device:  {r['requested']} -> {runtime}",
                f"C3D:     {c3d}", f"python:  {self.python} on {self.platform}"]


def collect(device: str = "auto", weights: Path | None = None, model: Path | None = None) -> About:
    """Everything :class:`About` holds; a part that fails says why instead of raising."""
    return About(
        phd=__version__, model=model_info(model), torch=torch_info(), runtime=runtime_info(device),
        c3d_weights=c3d_weights_status(weights), python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        installed_at=str(Path(__file__).resolve().parents[1]),  # the phdcli package
    )


def trained_on(provenance: dict[str, Any]) -> str:
    """One line: what a ranking model's terms were trained on, from its provenance."""
    data = provenance.get("training_data")
    if isinstance(data, dict):  # written by `phd train content`
        return (f"PHD-CA and SVM-D trained on {data.get('annotations')} "
                f"({data.get('n_train_users')} users, {provenance.get('backbone')} "
                f"{provenance.get('layer')} features); prior {provenance.get('h_time', 'absent')}")
    parts = [str(provenance["h_time"])] if "h_time" in provenance else []
    for key, term in (("h_svm", "SVM-D"), ("h_fnn", "PHD-CA")):
        if key in provenance:  # "untrained: ...", "absent: ..." -> the state only
            parts.append(f"{term} {str(provenance[key]).split(':', 1)[0]}")
    return "; ".join(parts) or "no provenance recorded in the file"


def model_info(path: Path | None = None) -> dict[str, Any]:
    from phdcli.ranking.model import default_model_path, load_model

    try:
        path = Path(path) if path is not None else default_model_path()
        loaded = load_model(path)
    except (PhdError, OSError, ModuleNotFoundError) as exc:
        return {"name": None, "path": None if path is None else str(path), "error": str(exc)}
    return {"name": path.name.removesuffix(".safetensors"), "path": str(path),
            "trained_on": trained_on(loaded.provenance)}


def torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return {"version": None, "build": None, "error": f"torch is not installed ({exc})"}
    if torch.version.cuda is not None:
        build = f"CUDA {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip}"
    elif torch.backends.mps.is_built():
        build = "MPS"
    else:
        build = "CPU"
    return {"version": torch.__version__, "build": build}


def runtime_info(device: str = "auto") -> dict[str, Any]:
    """The device and precision ``device`` resolves to here (``auto``: what phd picks)."""
    from phdcli.features.device import resolve_runtime

    try:
        rt = resolve_runtime(device)
    except (PhdError, ImportError) as exc:
        return {"requested": device, "device": None, "precision": None, "error": str(exc)}
    # "auto" on a CPU with candidates: the probe chooses among them on first use.
    return {"requested": device, "device": rt.device,
            "precision": "auto" if rt.needs_probe else rt.precision,
            "candidates": list(rt.candidates), "reason": rt.reason}


def c3d_weights_status(explicit: Path | None = None) -> WeightsStatus:
    """Where the C3D weights are and whether their sha256 matches the published one.

    Hashes the file (memoised per path, size and mtime); it does not load it:
    ``phd doctor`` also checks every tensor's shape.
    """
    from phdcli.features.registry import REGISTRY, resolve_weights_path
    from phdcli.fsutil.contenthash import cached_sha256

    try:
        path = resolve_weights_path(explicit)
    except PhdError as exc:
        return WeightsStatus(None, False, None, str(exc), "phd model fetch")
    source = {s.filename: s for s in REGISTRY.values()}.get(path.name)
    if source is None or source.sha256 is None:
        return WeightsStatus(str(path), True, None, f"{path} (no published checksum to verify)")
    if cached_sha256(path) != source.sha256:
        return WeightsStatus(str(path), True, False,
                             f"{path}: sha256 does not match {source.name}",
                             "phd model fetch --force")
    return WeightsStatus(str(path), True, True, f"{path} (sha256 verified, {source.name})")
