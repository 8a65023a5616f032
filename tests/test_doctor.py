"""phd doctor: every part checked, what is missing named with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from phdcli.cli import main
from phdcli.doctor import run_checks


def test_all_present(phd_home: Path, davidea_weights: Path) -> None:
    checks = {c.name: c for c in run_checks(device="cpu", weights=davidea_weights)}
    assert set(checks) == {"ffmpeg", "packages", "device", "C3D weights", "ranking model",
                           "history"}
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert "palettegen" in checks["ffmpeg"].detail
    assert "no published checksum" in checks["C3D weights"].detail


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
