"""phd doctor: every part checked, what is missing named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phdcli import __version__
from phdcli.cli import main
from phdcli.doctor.checks import run_checks
from tests.conftest import ConvertedWeights
from tests.media import ffmpeg_exe


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
    assert list(checks) == ["ffmpeg", "packages", "device", "C3D weights", "ranking model",
                            "history"]
    assert all(c["ok"] for c in checks.values()), [c for c in checks.values() if not c["ok"]]
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
