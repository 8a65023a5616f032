"""The history under races, hostile manifests and files that vanish (rows 1, 9, 11, 18).

RANDOM C3D weights; real GIFs cut with ffmpeg; real concurrent processes.
The GIFs' features are computed once for the module (``warm``) into the
session's shared cache, so the processes below race on the history itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runphd import home_with_cache, json_doc, one_error, phd
from runphd import run_cli as run

from phdcli.errors import HistoryError
from phdcli.features.extractor import FeatureExtractor
from phdcli.fsutil import locked, sha256_file
from phdcli.history.items import LOCK, PreparedFile
from phdcli.history.store import History
from phdcli.media.probe import probe
from tests import media


@pytest.fixture(scope="module")
def gif_set(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight distinct short GIFs from one clip."""
    root = tmp_path_factory.mktemp("gif-set")
    video = media.lavfi_video(root / "src.mp4", duration_s=8.0, size="96x72")
    return [media.gif_from(video, root / f"g{i}.gif", i * 0.9, 0.7, fps=8, width=64)
            for i in range(8)]


@pytest.fixture(scope="module")
def warm(gif_set: list[Path], shared_cache: Path, mmaction2_weights: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features of every GIF in the shared cache; returns the weights to use."""
    home = home_with_cache(tmp_path_factory.mktemp("warm"), shared_cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PHD_HOME", str(home))
        extractor = FeatureExtractor(c3d_weights=mmaction2_weights, device="cpu")
        for gif in gif_set:
            extractor.file_feature(probe(gif))
    return mmaction2_weights


@pytest.fixture
def cached_home(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    return home


def test_a_history_change_made_meanwhile_is_never_lost(
    gif_set: list[Path], cached_home: Path, warm: Path
) -> None:
    """Two adds prepared from the same state, committed one after the other:
    the second re-reads the manifest under the lock and keeps the first's GIF."""
    history = History.for_user("race")
    extractor = FeatureExtractor(c3d_weights=warm, device="cpu")
    first = history.prepare([gif_set[0]], extractor)
    second = history.prepare([gif_set[1], gif_set[0]], extractor)  # g0 again: a duplicate
    assert [it.name for it in history.commit(first)] == ["g0.gif"]
    assert [it.name for it in history.commit(second)] == ["g1.gif"]
    assert [it.name for it in history.items()] == ["g0.gif", "g1.gif"]
    on_disk = sorted(p.name for p in history.folder.iterdir() if not p.name.startswith("."))
    assert on_disk == ["g0.gif", "g1.gif", "history.json"]


def test_a_stray_file_in_the_history_is_never_replaced(
    gif_set: list[Path], cached_home: Path, warm: Path
) -> None:
    history = History.for_user("stray")
    history.folder.mkdir(parents=True)
    (history.folder / "g2.gif").write_bytes(b"not ours")
    extractor = FeatureExtractor(c3d_weights=warm, device="cpu")
    (item,) = history.add([gif_set[2]], extractor)
    assert item.name == "g2-2.gif"
    assert (history.folder / "g2.gif").read_bytes() == b"not ours"


def test_history_add_waits_for_the_lock(gif_set: list[Path], cached_home: Path, warm: Path
                                        ) -> None:
    folder = History.for_user().folder
    folder.mkdir(parents=True)
    gif = gif_set[4]
    with locked(folder / LOCK, "test"):
        proc = subprocess.Popen([sys.executable, "-m", "phdcli", "history", "add",
                                 str(gif), "--device", "cpu"],
                                env={"PATH": "/usr/bin:/bin", "PHD_HOME": str(cached_home),
                                     "PHD_C3D_WEIGHTS": str(warm)},
                                stderr=subprocess.PIPE, text=True)
        # The add copies the GIF into its private staging folder, then takes the
        # lock: once the whole copy is there, only the lock holds it back.
        deadline = time.monotonic() + 60
        while not [p for p in folder.glob(".*/*") if p.stat().st_size == gif.stat().st_size]:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the add never staged its copy"
            time.sleep(0.02)
        time.sleep(1.0)  # a manifest write takes milliseconds once the lock is free
        assert proc.poll() is None  # blocked on the lock
        assert not (folder / "history.json").exists() and not (folder / "g4.gif").exists()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    listed = json_doc(phd("history", "list", "--json", home=cached_home).stdout)
    assert [it["name"] for it in listed] == ["g4.gif"]  # type: ignore[index]


def test_stress_eight_parallel_adds_give_eight_entries(
    gif_set: list[Path], cached_home: Path, warm: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(cached_home), "OMP_NUM_THREADS": "1",
           "PHD_C3D_WEIGHTS": str(warm)}
    procs = [subprocess.Popen([sys.executable, "-m", "phdcli", "history", "add", str(gif),
                               "--device", "cpu"], env=env, stderr=subprocess.PIPE, text=True)
             for gif in gif_set]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    listed = json_doc(phd("history", "list", "--json", home=cached_home).stdout)
    assert sorted(it["name"] for it in listed) == sorted(g.name for g in gif_set)  # type: ignore
    folder = History.for_user().folder
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert files == sorted([g.name for g in gif_set] + ["history.json"])  # no invisible file
    for gif in gif_set:
        assert (folder / gif.name).read_bytes() == gif.read_bytes()


def test_manifest_names_cannot_leave_the_history_folder(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = History.for_user().folder
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    depth = len(folder.relative_to(tmp_path).parts)
    hostile = "../" * depth + "victim.txt"
    assert (folder / hostile).resolve() == victim.resolve()
    for name in (hostile, "/etc/hostname", "..", ".history.lock", "a\\b.gif"):
        item = {"name": name, "sha256": "0" * 64, "frames": 1, "duration_s": 1.0,
                "added": "2026-01-01T00:00:00+00:00"}
        (folder / "history.json").write_text(json.dumps({"version": 1, "items": [item]}))
        code, _, err = run(["history", "remove", name], capsys)
        assert code == 1 and "not a plain file name" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert victim.read_text() == "precious"
        code, _, err = run(["history", "list"], capsys)
        assert code == 1 and "history.json" in err
    with pytest.raises(HistoryError):
        History.for_user("../../elsewhere")


def test_remove_from_a_read_only_history_is_one_error_line(
    gif_set: list[Path], cached_home: Path, warm: Path
) -> None:
    home = cached_home
    History.for_user().add([gif_set[5]], FeatureExtractor(c3d_weights=warm, device="cpu"))
    folder = History.for_user().folder
    (folder / LOCK).unlink(missing_ok=True)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    os.chmod(folder, 0o555)
    try:
        result = phd("history", "remove", "g5.gif", home=home, drop_root=True)
        assert "cannot change the history" in one_error(result)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    finally:
        os.chmod(folder, 0o755)


def test_a_phd_home_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "not-a-folder"
    home.write_text("oops")
    monkeypatch.setenv("PHD_HOME", str(home))
    for args in (["history", "list"], ["history", "add", "x.gif"], ["suggest", "x.mp4"]):
        assert "PHD_HOME" in one_error(run(args, capfd), code=2), args
    assert home.read_text() == "oops"


def test_a_deleted_history_gif_is_reported_and_skipped(
    gif_set: list[Path], cached_home: Path, warm: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    History.for_user().add(gif_set[6:8], FeatureExtractor(c3d_weights=warm, device="cpu"))
    folder = History.for_user().folder
    (folder / "g6.gif").unlink()  # behind phd's back
    code, stdout, err = run(["history", "list", "--json"], capfd)
    assert code == 0
    assert [(it["name"], it["missing"]) for it in json_doc(stdout)] == [  # type: ignore
        ("g6.gif", True), ("g7.gif", False)]
    assert "g6.gif" in err and "missing" in err
    # A GIF as the video: its one segment's features are already cached.
    code, stdout, err = run(["suggest", str(gif_set[0]), "-k", "1", "--dry-run", "--json",
                             "--explain", "--device", "cpu", "--c3d-weights", str(warm)], capfd)
    assert code == 0, err
    assert "g6.gif" in err and "skipped" in err
    (pick,) = json_doc(stdout)["results"][0]["suggestions"]
    assert pick["explain"]["nearest_history_gif"] == "g7.gif"
    assert run(["history", "remove", "g6.gif"], capfd)[0] == 0
    code, _, err = run(["history", "list"], capfd)
    assert code == 0 and "missing" not in err


_KILLED_ADD = """
import os, sys
from pathlib import Path
from phdcli.fsutil import sha256_file
from phdcli.history.items import PreparedFile
from phdcli.history.store import History

def killed(self, items):  # SIGKILL's effect, at the worst moment: every GIF claimed,
    os._exit(137)         # the manifest not yet written
History._write_manifest = killed
files = [Path(p) for p in sys.argv[1:]]
History.for_user().commit([PreparedFile(f, sha256_file(f), 4, 0.5) for f in files])
"""


def test_a_history_add_killed_before_its_manifest_leaves_no_orphan_and_no_copy(
    tmp_path: Path, phd_home: Path
) -> None:
    """Was: GIFs claimed under their final names stayed in the folder in no manifest
    for good, and adding them again copied each under a ``-2`` name."""
    gifs = []
    for i in range(6):
        gif = tmp_path / f"liked{i}.gif"
        gif.write_bytes(b"GIF89a" + bytes([i]) * 64)
        gifs.append(gif)
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(phd_home),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_ADD, *map(str, gifs)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137, proc.stderr
    history = History.for_user()
    assert History.for_user().items() == []  # killed before the manifest
    assert sorted(p.name for p in history.folder.glob("*.gif")) == [g.name for g in gifs]
    # The same GIFs added again: each one once, under its own name.
    history.commit([PreparedFile(g, sha256_file(g), 4, 0.5) for g in gifs])
    listed = [it.name for it in history.items()]
    assert listed == [g.name for g in gifs]
    on_disk = sorted(p.name for p in history.folder.iterdir() if not p.name.startswith("."))
    assert on_disk == sorted([*listed, "history.json"])  # nothing that no manifest lists
    assert not [p for p in history.folder.iterdir() if p.name.startswith(".history.pending")]
    for gif in gifs:
        assert (history.folder / gif.name).read_bytes() == gif.read_bytes()


def test_the_next_change_to_a_history_adopts_what_a_killed_add_claimed(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill between claims and manifest, then `phd history remove` of another GIF:
    the killed add's GIFs are listed from then on (none lost, none orphaned)."""
    kept = tmp_path / "kept.gif"
    kept.write_bytes(b"GIF89a kept")
    History.for_user().commit([PreparedFile(kept, sha256_file(kept), 4, 0.5)])
    late = tmp_path / "late.gif"
    late.write_bytes(b"GIF89a late")
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(phd_home),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_ADD, str(late)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137, proc.stderr
    code, _, err = run(["history", "remove", "kept.gif"], capsys)
    assert code == 0, err
    assert [it.name for it in History.for_user().items()] == ["late.gif"]
    folder = History.for_user().folder
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "history.json", "late.gif"]
