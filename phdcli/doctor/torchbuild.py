"""Which torch build suits this machine, and the command that puts it there.

A machine with an NVIDIA GPU wants a CUDA build; one without wants the CPU
build: the CUDA build's libraries (``nvidia-*``, ``triton``, ``cuda-*``: GBs)
can do nothing there. The GPU is found without torch, the way the driver
shows it: ``/proc/driver/nvidia/gpus`` (a folder per GPU), else ``nvidia-smi
-L``; ``PHD_NVIDIA_GPU=1`` or ``0`` says it instead.

Shared by ``phd doctor`` (``checks.py``) and the checkout's installer
(``scripts/install_torch.py``), which runs before phd's dependencies are
installed: the standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI_INDEX = "https://pypi.org/simple"
GPU_ENV = "PHD_NVIDIA_GPU"
_PROC_GPUS = Path("/proc/driver/nvidia/gpus")
_CUDA_DISTS = ("nvidia-", "triton", "cuda-")  # what torch's CUDA build pulls in beside it


@dataclass(frozen=True)
class Gpu:
    """Whether an NVIDIA GPU is here, and how that was found (one phrase)."""

    present: bool
    how: str


@dataclass(frozen=True)
class TorchBuild:
    """The installed torch: ``cuda`` is ``torch.version.cuda`` (None: not a CUDA build);
    ``cuda_libs`` the CUDA distributions installed beside it, with their bytes."""

    version: str
    cuda: str | None
    cuda_libs: tuple[str, ...] = ()
    cuda_libs_bytes: int = 0

    @property
    def release(self) -> str:
        """``2.13.0`` of ``2.13.0+cpu``: the pin that any build of it satisfies."""
        return self.version.split("+", 1)[0]


@dataclass(frozen=True)
class Verdict:
    """``suits``: the build fits the machine; else ``detail`` says what is wrong, ``fix`` how."""

    suits: bool
    detail: str
    fix: str = ""


def find_gpu(env: dict[str, str] | None = None) -> Gpu:
    """The NVIDIA GPU the driver sees, without importing torch (milliseconds when
    there is no driver; ``nvidia-smi`` runs only where it is installed)."""
    override = (os.environ if env is None else env).get(GPU_ENV, "").strip()
    if override in ("0", "1"):
        return Gpu(override == "1", f"{GPU_ENV}={override}")
    names = _proc_gpu_names()
    if names:
        return Gpu(True, ", ".join(names))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Gpu(False, "no /proc/driver/nvidia/gpus, no nvidia-smi")
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Gpu(False, f"nvidia-smi -L failed: {exc}")
    gpus = [line.split(" (UUID", 1)[0] for line in done.stdout.splitlines()
            if line.startswith("GPU ")]
    if done.returncode != 0 or not gpus:
        return Gpu(False, "nvidia-smi lists no GPU")
    return Gpu(True, ", ".join(g.split(": ", 1)[-1] for g in gpus))


def _proc_gpu_names() -> list[str]:
    try:
        folders = sorted(_PROC_GPUS.iterdir())
    except OSError:
        return []
    names = []
    for folder in folders:
        model = "NVIDIA GPU"
        try:
            for line in (folder / "information").read_text().splitlines():
                if line.startswith("Model:"):
                    model = line.split(":", 1)[1].strip()
        except OSError:
            pass
        names.append(model)
    return names


def cuda_libs() -> tuple[tuple[str, ...], int]:
    """The CUDA distributions installed here (names) and their bytes, from each
    one's RECORD (no file is opened besides the metadata)."""
    names, total = [], 0
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if not name.startswith(_CUDA_DISTS) or name in names:
            continue
        names.append(name)
        total += sum(f.size or 0 for f in dist.files or ())
    return tuple(sorted(names)), total


def installed_torch() -> TorchBuild | None:
    """The torch this Python imports (imports it), or None where there is none."""
    try:
        import torch
    except ImportError:
        return None
    names, size = cuda_libs()
    return TorchBuild(torch.__version__, torch.version.cuda, names, size)


def gigabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1e9:.1f} GB"


@dataclass(frozen=True)
class Fixes:
    """The commands that replace the installed torch by the other build."""

    to_cpu: str
    to_cuda: str


def verdict(build: TorchBuild, gpu: Gpu, fixes: Fixes) -> Verdict:
    """Whether ``build`` suits a machine with (or without) ``gpu``; pure."""
    name = f"torch {build.version}"
    if build.cuda is not None and not gpu.present:
        libs = (f"{gigabytes(build.cuda_libs_bytes)} of CUDA libraries "
                f"({len(build.cuda_libs)} packages: nvidia-*, triton, cuda-*)"
                if build.cuda_libs else "CUDA libraries")
        return Verdict(False, f"{name} is the CUDA {build.cuda} build, and this machine has no "
                              f"NVIDIA GPU ({gpu.how}): {libs} for nothing", fixes.to_cpu)
    if build.cuda is None and gpu.present:
        return Verdict(False, f"{name} is a CPU build, and this machine has an NVIDIA GPU "
                              f"({gpu.how}) that it cannot use", fixes.to_cuda)
    kind = f"the CUDA {build.cuda} build" if build.cuda else "a CPU build"
    where = "NVIDIA GPU" if gpu.present else "no NVIDIA GPU"
    return Verdict(True, f"{name}, {kind} ({where}: {gpu.how})")


def fixes_for(build: TorchBuild, prefix: str | None = None, python: str | None = None,
              package_dir: Path | None = None) -> Fixes:
    """The commands for how phd is installed here: the checkout's ``.venv``
    (``make torch``), a pipx venv (reinstalled with the CPU index) or any other
    pip (``python -m pip``: uninstall, then install from the right index)."""
    prefix_path = Path(prefix or sys.prefix).resolve()
    package_dir = package_dir or Path(__file__).resolve().parents[1]
    checkout = package_dir.parent
    if prefix_path == (checkout / ".venv").resolve() and (checkout / "Makefile").is_file():
        make = f"make -C {checkout} torch"
        return Fixes(make, make)
    # PyPI's Linux wheels are CUDA builds; elsewhere PyTorch's own site names the index.
    cuda_index = (f"--index-url {PYPI_INDEX}" if sys.platform.startswith("linux")
                  else "--index-url (the CUDA index for your driver: pytorch.org/get-started)")
    pipx_meta = prefix_path / "pipx_metadata.json"
    if pipx_meta.is_file():
        again = f"pipx uninstall {prefix_path.name} && pipx install {_pipx_source(pipx_meta)}"
        return Fixes(f'{again} --pip-args="--extra-index-url {CPU_INDEX}"',
                     f'{again} --pip-args="{cuda_index}"')
    pip = f"{python or sys.executable} -m pip"
    remove = " ".join(("torch", *build.cuda_libs))
    return Fixes(
        f"{pip} uninstall -y {remove} && {pip} install torch=={build.release} "
        f"--index-url {CPU_INDEX}",
        f"{pip} uninstall -y torch && {pip} install torch=={build.release} {cuda_index}")


def _pipx_source(meta: Path) -> str:
    """What ``pipx install`` was given (a path, a wheel, a name); ``.`` if unknown."""
    try:
        main = json.loads(meta.read_text())["main_package"]
        return str(main.get("package_or_url") or main["package"])
    except (OSError, ValueError, KeyError, TypeError):
        return "."
