"""`phd --version` and `phd doctor --json`: the facts a bug report needs, each checked."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from runphd import run_cli as run

from phdcli import __version__
from phdcli.doctor.about import torch_info, trained_on
from phdcli.features import device as device_mod
from phdcli.features.registry import REGISTRY

MODEL_LINE = ("model:   phd-fused-v0: temporal prior trained on phd2-test-dev.csv (all users); "
              "SVM-D untrained; PHD-CA absent")


def test_version_names_model_torch_device_and_missing_weights(
    phd_home: Path, plain_cpu: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["--version"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"phd {__version__} (") and lines[0].endswith("phdcli)")
    assert lines[1] == MODEL_LINE
    build = "CPU" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
    assert lines[2] == f"torch:   {torch.__version__} ({build} build)"
    assert lines[3] == ("device:  auto -> cpu, precision fp32 "
                        "(no CUDA or MPS device found; CPU lacks native bf16)")
    assert lines[4].startswith("C3D:     C3D weights not found: run `phd model fetch`")
    assert lines[5].startswith("python:  3.")


def test_version_says_whether_the_weights_are_verified(
    phd_home: Path, plain_cpu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Hash checks only (no load): a small stand-in file under the registry's name.
    source = REGISTRY["c3d-sports1m-mmaction2"]
    weights = tmp_path / source.filename
    weights.write_bytes(b"not the published weights")
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(weights))
    c3d_line = run(["--version"], capsys)[1].splitlines()[4]
    assert c3d_line == (f"C3D:     {weights}: sha256 does not match c3d-sports1m-mmaction2 "
                        "(fix: phd model fetch --force)")

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setitem(REGISTRY, source.name, dataclasses.replace(source, sha256=digest))
    c3d_line = run(["--version"], capsys)[1].splitlines()[4]
    assert c3d_line == f"C3D:     {weights} (sha256 verified, c3d-sports1m-mmaction2)"

    other = tmp_path / "my-c3d.pth"
    other.write_bytes(b"x")
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(other))
    c3d_line = run(["--version"], capsys)[1].splitlines()[4]
    assert c3d_line == f"C3D:     {other} (no published checksum to verify)"


def test_version_reports_mps_when_auto_picks_it(
    phd_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "_mps_probe", lambda precision: (None, []))
    device_line = run(["--version"], capsys)[1].splitlines()[3]
    assert device_line == ("device:  auto -> mps, precision fp32 "
                           "(Apple GPU; fp32 (bf16 is not measured on MPS))")


def test_torch_build_names_cuda_and_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert torch_info()["build"] == "CUDA 12.8"
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    assert torch_info() == {"version": torch.__version__, "build": "MPS"}
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    assert torch_info()["build"] == "CPU"


def test_trained_on_reads_a_trained_models_provenance() -> None:
    provenance = {"trained_by": "phd train content", "backbone": "c3d-sports1m@0123456789ab",
                  "layer": "fc6", "training_data": {"annotations": "training.csv",
                                                    "n_train_users": 11675},
                  "h_time": "fitted on the annotations of all but the validation users"}
    assert trained_on(provenance) == (
        "PHD-CA and SVM-D trained on training.csv (11675 users, c3d-sports1m@0123456789ab fc6 "
        "features); prior fitted on the annotations of all but the validation users")
    assert trained_on({}) == "no provenance recorded in the file"


def test_doctor_json_exits_1_and_still_reports(
    phd_home: Path, plain_cpu: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["doctor", "--json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert doc["c3d_weights"]["present"] is False
    missing = [c for c in doc["checks"] if not c["ok"]]
    assert [(c["name"], c["fix"]) for c in missing] == [("C3D weights", "phd model fetch")]
