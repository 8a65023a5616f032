from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def phd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PHD_HOME: history, caches and config live under tmp."""
    home = tmp_path / "phd-home"
    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.delenv("PHD_C3D_WEIGHTS", raising=False)
    return home
