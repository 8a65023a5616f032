from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``auto`` precision stays off int8 in the tests (PHD_INT8=0), as on a machine
# without OpenVINO: building the int8 model and its self-check cost about half
# a minute per fresh PHD_HOME, so only the tests about int8 (``int8_home``,
# tests/test_int8.py) pay it. Subprocesses that inherit the environment too.
os.environ["PHD_INT8"] = "0"


@pytest.fixture
def phd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PHD_HOME: history, caches and config live under tmp."""
    home = tmp_path / "phd-home"
    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.delenv("PHD_C3D_WEIGHTS", raising=False)
    return home


class LogLines(logging.Handler):
    """The "phd" logger's records, whatever an earlier CLI test did to it
    (the CLI stops propagation, so pytest's caplog may see nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records.clear()


@pytest.fixture
def phd_log() -> Iterator[LogLines]:
    logger = logging.getLogger("phd")
    level, lines = logger.level, LogLines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


@pytest.fixture
def int8_home(phd_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``phd_home`` where ``auto`` may choose int8 (needs OpenVINO and NNCF): the CPU
    is taken for one without native bf16 (where ``auto`` proposes int8), whatever
    this machine has."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from phdcli.features import device as device_mod

    monkeypatch.delenv("PHD_INT8")
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    return phd_home


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


# bikes (0-10 s), bigbuckbunny (10-15.28 s), carphone (15.28-19.28 s)
FOOTAGE = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
GIF_FROM_S, GIF_LEN_S = 10.5, 3.0  # inside the fixed segment 10-15 s


def _footage_files(root: Path, name: str) -> tuple[Path, Path]:
    """``root/name`` (FOOTAGE joined) and ``root/history`` holding liked.gif cut from it.

    bikes (0-10 s), bigbuckbunny (10-15.28 s), carphone (15.28-19.28 s): four
    5 s segments; the history GIF is cut from 10.5-13.5 s.
    """
    from tests import media

    video = media.concat_real_footage(root / name, FOOTAGE)
    history = root / "history"
    history.mkdir()
    media.gif_from(video, history / "liked.gif", GIF_FROM_S, GIF_LEN_S)
    return video, history


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path) -> dict[str, Path]:
    """Real footage (19.3 s) and a history GIF cut from 10.5-13.5 s of it."""
    video, history = _footage_files(tmp_path_factory.mktemp("footage"), "concat.mp4")
    return {"video": video, "history": history, "weights": mmaction2_weights}


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phd cache folder (converted weights, features) for homes made with
    ``runphd.home_with_cache``: C3D runs once per distinct input per session."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(scope="session")
def footage_home(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path
                 ) -> dict[str, Path]:
    """``footage``, plus one PHD_HOME for the report and keep tests, so that C3D
    (RANDOM weights) runs on the footage once a session."""
    root = tmp_path_factory.mktemp("footage-home")
    video, history = _footage_files(root, "footage.mp4")
    return {"root": root, "video": video, "history": history, "home": root / "phd-home",
            "weights": mmaction2_weights}


@pytest.fixture
def plain_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA, no MPS, no native bf16: what `auto` picks is known."""
    import torch  # here, not at the top: most tests never need torch

    from phdcli.features import device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
