"""phd doctor: every part checked, what is missing named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phdcli import __version__
from phdcli.cli import main
from phdcli.doctor import torchbuild
from phdcli.doctor.checks import run_checks, torch_build_check
from phdcli.doctor.torchbuild import Fixes, Gpu, TorchBuild, find_gpu, fixes_for
from tests.conftest import ConvertedWeights
from tests.media import ffmpeg_exe
from tests.runphd import run_cli


def test_all_present_as_json_for_scripts(
    phd_home: Path, plain_cpu: None, davidea_weights: Path, capsys: pytest.CaptureFixture[str],
    converted_weights: ConvertedWeights,
) -> None:
    # Converted already, as after any earlier run: the check loads it (conversion is
    # tests/test_weights.py's subject).
    converted_weights.seed(phd_home, davidea_weights)
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--json", "--c3d-weights", str(davidea_weights)])
    doc = json.loads(capsys.readouterr().out)  # stdout holds the JSON document, nothing else
    assert info.value.code in (0, None) and doc["ok"] is True and doc["version"] == 1
    checks = {c["name"]: c for c in doc["checks"]}
    assert list(checks) == ["ffmpeg", "packages", "torch build", "device", "C3D weights",
                            "ranking model", "history"]
    assert all(c["ok"] for c in checks.values()), [c for c in checks.values() if not c["ok"]]
    assert checks["torch build"]["detail"].startswith(f"torch {torch.__version__}")
    assert "no published checksum" in checks["C3D weights"]["detail"]
    # What phd runs with (the same facts as `phd --version`).
    assert doc["phd"] == __version__
    assert doc["model"]["name"] == "phd-fused-v0"
    assert Path(doc["model"]["path"]).name == "phd-fused-v0.safetensors"
    assert Path(doc["model"]["path"]).is_file()
    assert doc["model"]["trained_on"] == ("temporal prior trained on phd2-test-dev.csv "
                                          "(all users); SVM-D untrained; PHD-CA absent")
    assert doc["torch"]["version"] == torch.__version__
    assert doc["runtime"] == {"requested": "auto", "device": "cpu", "precision": "fp32",
                              "candidates": [],  # PHD_INT8=0: nothing for a probe to choose
                              "reason": "no CUDA or MPS device found; CPU lacks native bf16"}
    assert doc["c3d_weights"]["path"] == str(davidea_weights)
    assert (doc["c3d_weights"]["present"], doc["c3d_weights"]["verified"]) == (True, None)


def test_ffmpeg_that_cannot_run_is_named_with_its_fix(
    phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHD_FFMPEG", str(tmp_path / "no-ffmpeg-here"))
    check = run_checks(device="cpu")[0]
    assert (check.name, check.ok) == ("ffmpeg", False)
    assert check.detail.startswith("cannot run ffmpeg at ")
    assert "imageio-ffmpeg" in check.fix


def test_ffmpeg_check_runs_the_command_lines_suggest_runs(
    phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor writes a clip in each format with phd's own command lines
    (ffgraph.clip_args): the real ffmpeg, behind a wrapper that logs them."""
    log = tmp_path / "calls.txt"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\nexec {ffmpeg_exe()} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PHD_FFMPEG", str(wrapper))
    check = run_checks(device="cpu")[0]
    assert (check.name, check.ok) == ("ffmpeg", True), check
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    gif, mp4, webp = calls
    assert "palettegen" in gif and "paletteuse" in gif and gif.endswith(".gif")
    assert "libx264" in mp4 and mp4.endswith(".mp4")
    assert "libwebp_anim" in webp and webp.endswith(".webp")


def test_ffmpeg_without_the_palette_filters_is_named(
    phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ffmpeg built without palettegen (the real one behind a wrapper that refuses it)."""
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        "case \"$*\" in *palettegen*)\n"
        "  echo \"[AVFilterGraph @ 0x5581] No such filter: 'palettegen'\" >&2; exit 1;;\n"
        "esac\n"
        f"exec {ffmpeg_exe()} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PHD_FFMPEG", str(wrapper))
    check = run_checks(device="cpu")[0]
    assert (check.name, check.ok) == ("ffmpeg", False)
    assert check.detail == (f"{wrapper} cannot write gif: "
                            "ffmpeg failed: No such filter: 'palettegen'")
    assert "unset PHD_FFMPEG" in check.fix


def test_missing_weights_and_broken_history(
    phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = phd_home / "data" / "profiles" / "default" / "history" / "history.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"version": 1, "items": [{"name": "gone.gif", "sha256": "00", '
                        '"frames": 3, "duration_s": 1.0, "added": "2026-01-01"}]}')
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert info.value.code == 1
    assert "phd model fetch" in out  # the fix for the missing weights
    assert "gone.gif" in out


# -- the torch build against the machine ------------------------------------------------
FIXES = Fixes("TO-CPU", "TO-CUDA")
NO_GPU = Gpu(False, "no /proc/driver/nvidia/gpus, no nvidia-smi")
H100 = Gpu(True, "NVIDIA H100 80GB HBM3")
CPU_BUILD = TorchBuild("2.13.0+cpu", None)
CUDA_BUILD = TorchBuild("2.13.0+cu130", "13.0", ("nvidia-cublas", "nvidia-cudnn-cu13", "triton"),
                        3_634_000_000)


def test_a_cpu_build_without_a_gpu_suits() -> None:
    check = torch_build_check(CPU_BUILD, NO_GPU, FIXES)
    assert (check.ok, check.warning, check.status, check.fix) == (True, False, "ok", "")
    assert check.detail == ("torch 2.13.0+cpu, a CPU build (no NVIDIA GPU: "
                            "no /proc/driver/nvidia/gpus, no nvidia-smi)")


def test_a_cuda_build_without_a_gpu_warns_with_its_gigabytes_and_the_fix() -> None:
    check = torch_build_check(CUDA_BUILD, NO_GPU, FIXES)
    assert (check.ok, check.warning, check.status, check.fix) == (True, True, "WARN", "TO-CPU")
    assert check.detail == ("torch 2.13.0+cu130 is the CUDA 13.0 build, and this machine has no "
                            "NVIDIA GPU (no /proc/driver/nvidia/gpus, no nvidia-smi): 3.6 GB of "
                            "CUDA libraries (3 packages: nvidia-*, triton, cuda-*) for nothing")


def test_a_cpu_build_beside_a_gpu_warns_with_the_fix() -> None:
    check = torch_build_check(CPU_BUILD, H100, FIXES)
    assert (check.ok, check.warning, check.fix) == (True, True, "TO-CUDA")
    assert check.detail == ("torch 2.13.0+cpu is a CPU build, and this machine has an NVIDIA "
                            "GPU (NVIDIA H100 80GB HBM3) that it cannot use")


def test_a_cuda_build_beside_a_gpu_suits() -> None:
    check = torch_build_check(CUDA_BUILD, H100, FIXES)
    assert (check.ok, check.warning, check.fix) == (True, False, "")
    assert check.detail == ("torch 2.13.0+cu130, the CUDA 13.0 build "
                            "(NVIDIA GPU: NVIDIA H100 80GB HBM3)")


def test_no_torch_is_missing() -> None:
    check = torch_build_check(None, NO_GPU, None)
    assert (check.ok, check.status) == (False, "MISSING")


def test_the_fix_fits_how_phd_was_installed(tmp_path: Path) -> None:
    # A checkout whose .venv runs phd: the Makefile's target.
    checkout = tmp_path / "phd"
    (checkout / "phdcli").mkdir(parents=True)
    (checkout / "Makefile").write_text("torch:\n")
    (checkout / ".venv").mkdir()
    fixes = fixes_for(CUDA_BUILD, prefix=str(checkout / ".venv"), package_dir=checkout / "phdcli")
    assert fixes == Fixes(f"make -C {checkout} torch", f"make -C {checkout} torch")
    # A pipx venv: reinstalled from what pipx was given, with the CPU index.
    venv = tmp_path / "pipx" / "venvs" / "phdcli"
    venv.mkdir(parents=True)
    (venv / "pipx_metadata.json").write_text(
        json.dumps({"main_package": {"package": "phdcli", "package_or_url": "/src/phd"}}))
    fixes = fixes_for(CUDA_BUILD, prefix=str(venv), package_dir=venv / "lib" / "phdcli")
    assert fixes.to_cpu == ("pipx uninstall phdcli && pipx install /src/phd --pip-args="
                            '"--extra-index-url https://download.pytorch.org/whl/cpu"')
    # Any other pip: the CUDA libraries by name, then the same release from the CPU index.
    other = tmp_path / "env"
    fixes = fixes_for(CUDA_BUILD, prefix=str(other), python="/env/bin/python",
                      package_dir=other / "phdcli")
    assert fixes.to_cpu == (
        "/env/bin/python -m pip uninstall -y torch nvidia-cublas nvidia-cudnn-cu13 triton && "
        "/env/bin/python -m pip install torch==2.13.0 "
        "--index-url https://download.pytorch.org/whl/cpu")
    assert fixes.to_cuda.startswith("/env/bin/python -m pip uninstall -y torch && "
                                    "/env/bin/python -m pip install torch==2.13.0 --index-url ")


def test_the_gpu_is_found_from_the_driver_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(torchbuild.GPU_ENV, raising=False)
    # The kernel driver's folder, one per GPU.
    proc = tmp_path / "proc-gpus"
    (proc / "0000:1b:00.0").mkdir(parents=True)
    (proc / "0000:1b:00.0" / "information").write_text(
        "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 16\n")
    monkeypatch.setattr(torchbuild, "_PROC_GPUS", proc)
    assert find_gpu() == Gpu(True, "NVIDIA H100 80GB HBM3")
    # No such folder: nvidia-smi -L (a stand-in printing what the real one prints).
    monkeypatch.setattr(torchbuild, "_PROC_GPUS", tmp_path / "absent")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-5e1f)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(smi.parent))
    assert find_gpu() == Gpu(True, "NVIDIA H200")
    # A driver whose nvidia-smi lists nothing (a GPU-less machine with the tools).
    smi.write_text("#!/bin/sh\necho 'No devices were found' >&2; exit 6\n")
    assert find_gpu().present is False
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_gpu() == Gpu(False, "no /proc/driver/nvidia/gpus, no nvidia-smi")
    # Said instead of looked for.
    monkeypatch.setenv(torchbuild.GPU_ENV, "1")
    assert find_gpu() == Gpu(True, "PHD_NVIDIA_GPU=1")


def test_a_build_that_does_not_suit_is_a_warning_and_doctor_still_passes(
    phd_home: Path, plain_cpu: None, davidea_weights: Path, capsys: pytest.CaptureFixture[str],
    converted_weights: ConvertedWeights, monkeypatch: pytest.MonkeyPatch,
) -> None:
    converted_weights.seed(phd_home, davidea_weights)
    monkeypatch.setenv(torchbuild.GPU_ENV, "0" if torch.version.cuda else "1")
    code, out, _ = run_cli(["doctor", "--c3d-weights", str(davidea_weights)], capsys)
    assert code == 0, out
    assert "WARN" in out and "MISSING" not in out
    assert f"torch {torch.__version__}" in out
