"""Running ``phd suggest`` twice is running it once (issue 17, point 6).

``--out`` records what phd wrote there (``phdcli.suggest.manifest``): a
rerun replaces that input's files (and removes those it no longer writes),
leaves files holding the same bytes as they are, and never touches a file
it did not write. RANDOM C3D weights; the small video is the one
tests/test_robust_outputs.py makes (the same bytes), its features computed
once a session into the shared cache, so the runs here cost ffmpeg.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from runphd import home_with_cache, json_doc, one_error
from runphd import run_cli as run

from phdcli.fsutil import is_temp
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.manifest import MANIFEST, MANIFEST_DIR, locked_record
from phdcli.suggest.pipeline import suggest_batch
from tests import media


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s: two segments (0-5 s, 5-6 s)."""
    return media.lavfi_video(tmp_path_factory.mktemp("rerun") / "clip.mp4", duration_s=6.0,
                             size="96x72", source="testsrc2")


@pytest.fixture
def home(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch,
         mmaction2_weights: Path, video: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    # Features first (C3D once a session): the page's device row says whether C3D
    # ran in this run, and a cold first run would make only that row differ.
    assert run(["suggest", str(video), "--dry-run", "--device", "cpu"], capsys)[0] == 0
    return home


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def recorded(out: Path) -> dict[str, dict[str, object]]:
    """name -> {sha256, size_bytes} of every file the record lists, all inputs together."""
    doc = json.loads((out / MANIFEST_DIR / MANIFEST).read_text())
    files: dict[str, dict[str, object]] = {}
    for entry in doc["inputs"]:
        assert "pending" not in entry  # a finished run leaves nothing half-recorded
        files.update(entry["files"])
    return files


def gifs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.gif"))


def test_the_same_command_twice_leaves_the_folder_as_one_run_leaves_it(
    video: Path, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["suggest", str(video), "-k", "2", "--min-gap", "0", "--out", str(out), "--report",
            "--json", "--device", "cpu"]
    code, first, err = run(args, capsys)
    assert code == 0, err
    once = snapshot(out)
    code, second, err = run(args, capsys)  # no --force
    assert code == 0, err
    assert second == first
    assert snapshot(out) == once  # the same files, the same bytes: page and record too
    paths = [Path(s["path"]).name for s in json_doc(second)["results"][0]["suggestions"]]
    assert gifs(out) == sorted(paths) and len(paths) == 2
    assert sorted(recorded(out)) == sorted([*paths, "index.html"])
    assert not [p for p in out.rglob(".*") if is_temp(p.name)]


def test_a_file_phd_did_not_write_is_refused_and_kept(
    video: Path, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["suggest", str(video), "-k", "2", "--min-gap", "0", "--out", str(out), "--json",
            "--device", "cpu"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    first, second = (Path(s["path"]) for s in json_doc(stdout)["results"][0]["suggestions"])
    notes = out / "notes.txt"
    notes.write_text("the user's")
    # An output the user edited is theirs now: refused, kept, nothing else changed.
    first.write_bytes(b"the user's edit")
    before = snapshot(out)
    line = one_error(run(args, capsys))
    assert f"{first} already exists and was changed since phd wrote it" in line
    assert "--force" in line
    assert snapshot(out) == before
    # A file phd never wrote, in a fresh folder: refused before any work.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / second.name).write_text("mine")
    line = one_error(run([*args[:-5], "--out", str(fresh), "--json", "--device", "cpu"], capsys))
    assert f"{fresh / second.name} already exists (use --force" in line
    assert snapshot(fresh) == {second.name: b"mine"}
    # --force overwrites the edit; from then on the file is phd's again.
    assert run([*args, "--force"], capsys)[0] == 0
    assert first.read_bytes().startswith(b"GIF8")
    assert run(args, capsys)[0] == 0
    assert notes.read_text() == "the user's"
    assert sorted(recorded(out)) == gifs(out) == sorted([first.name, second.name])


def test_changed_picks_replace_the_earlier_ones_and_nothing_else(
    video: Path, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fewer picks, then the issue's flow: keep the best, suggest again."""
    out = tmp_path / "out"
    args = ["suggest", str(video), "--out", str(out), "--report", "--json", "--device", "cpu",
            "--min-gap", "0"]

    said: list[str] = []

    def suggest(k: int) -> list[Path]:
        code, stdout, err = run([*args, "-k", str(k)], capsys)
        assert code == 0, err
        said[:] = [line for line in err.splitlines() if "replaced" in line]
        return [Path(s["path"]) for s in json_doc(stdout)["results"][0]["suggestions"]]

    def shown() -> list[str]:
        """The picks' GIFs on the page (history GIFs are embedded, not linked)."""
        return re.findall(r'src="([^"]+[.]gif)"', (out / "index.html").read_text())

    before = suggest(2)
    (out / "notes.txt").write_text("the user's")
    (out / "clip_99_0s.gif").write_bytes(b"GIF89a not phd's")  # looks like phd's, is not
    assert suggest(1) == before[:1]
    assert said == [f"phd: {video}: replaced this input's earlier picks (removed "
                    f"{before[1].name})"]  # never silent
    assert gifs(out) == sorted([before[0].name, "clip_99_0s.gif"])  # the second one is gone
    assert shown() == [before[0].name]
    code, _, err = run(["history", "add", str(before[0])], capsys)
    assert code == 0, err
    after = suggest(2)
    assert after and before[0] not in after  # the premise: the kept span is left out now
    assert gifs(out) == sorted([p.name for p in after] + ["clip_99_0s.gif"])
    assert shown() == [p.name for p in after]
    assert sorted(recorded(out)) == sorted([p.name for p in after] + ["index.html"])
    assert (out / "notes.txt").read_text() == "the user's"
    assert (out / "clip_99_0s.gif").read_bytes() == b"GIF89a not phd's"


def test_runs_into_one_folder_take_turns_and_the_record_keeps_them_all(
    video: Path, home: Path, tmp_path: Path
) -> None:
    """Three inputs at once (threads): while the record's lock is held none of them
    places a file; released, all finish and the record lists every file there."""
    inputs = []
    for name in ("one", "two", "three"):  # one content: the features come from the cache
        inputs.append(tmp_path / f"{name}.mp4")
        shutil.copyfile(video, inputs[-1])
    out = tmp_path / "out"
    out.mkdir()
    config = SuggestConfig(k=2, out_dir=out, device="cpu", min_gap_s=0)
    results: dict[str, object] = {}

    def suggest(item: Path) -> None:
        try:
            batch = suggest_batch([str(item)], config)
            results[item.stem] = [f.message for f in batch.failures] or "done"
        except Exception as exc:  # the assertion below shows it
            results[item.stem] = repr(exc)

    threads = [threading.Thread(target=suggest, args=(item,)) for item in inputs]
    with locked_record(out):
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob(".gifs.*/[!.]*.gif"))) < 6:
            time.sleep(0.05)  # until every run has encoded its GIFs
        time.sleep(0.5)
        assert gifs(out) == [] and results == {}  # all three wait for the lock
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"one": "done", "two": "done", "three": "done"}
    assert len(gifs(out)) == 6
    record = recorded(out)
    assert sorted(record) == gifs(out)
    for name, version in record.items():
        assert (out / name).stat().st_size == version["size_bytes"]


def test_files_a_killed_run_was_replacing_are_still_phds(
    video: Path, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed between recording its new files and renaming them into place
    leaves the record accepting the old bytes too (``pending``): the next run
    replaces those files rather than refusing them as the user's."""
    out = tmp_path / "out"
    args = ["suggest", str(video), "-k", "2", "--min-gap", "0", "--out", str(out), "--json",
            "--device", "cpu"]
    assert run(args, capsys)[0] == 0
    path = out / MANIFEST_DIR / MANIFEST
    doc = json.loads(path.read_text())
    (entry,) = doc["inputs"]
    name, version = sorted(entry["files"].items())[0]
    # What the killed run recorded: new bytes for the file, which still holds the old.
    entry["files"][name] = {"sha256": "0" * 64, "size_bytes": 1}
    entry["pending"] = {name: [version]}
    path.write_text(json.dumps(doc))
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert recorded(out)[name] == version  # the pending state is gone too
    assert sorted(recorded(out)) == gifs(out)
