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


@pytest.fixture(scope="session")
def mmaction2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RANDOM C3D weights in mmaction2's format (312 MB: written once a session)."""
    from tests.c3d_files import write_mmaction2_pth

    return write_mmaction2_pth(tmp_path_factory.mktemp("c3d") / "c3d_random_mmaction2.pth")


@pytest.fixture(scope="session")
def davidea_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RANDOM C3D weights in DavideA's c3d.pickle format (written once a session)."""
    from tests.c3d_files import write_davidea_pickle

    return write_davidea_pickle(tmp_path_factory.mktemp("c3d") / "c3d.pickle")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phd cache folder (converted weights, features) for homes made with
    ``runphd.home_with_cache``: C3D runs once per distinct input per session."""
    return tmp_path_factory.mktemp("shared-cache")
