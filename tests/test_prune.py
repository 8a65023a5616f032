"""`phd cache prune`: the orphans of each kind go, everything else stays byte for byte.

The home is built with phd's own writers where there is one (the clip cache,
output records, the hash index, temp files) and in the documented format
where there is none (a finished download). The dead temps are real: a child
process makes them with ``fsutil`` and dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from runphd import json_doc, one_error, phd
from runphd import run_cli as run
from safetensors.numpy import save_file

from phdcli import fsutil, paths
from phdcli.doctor.prune import KINDS, find_orphans, human_bytes, prune
from phdcli.features import int8, precision_probe, weights
from phdcli.features.cache import ClipCache, cache_key
from phdcli.features.clips import TICKS_PER_S, ClipTable
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import contenthash
from phdcli.history import records
from phdcli.sources.inputs import complete_download, resolve_input

# Makes temps the way a phd run does, then dies without a chance to remove them.
_KILLED_RUN = """
import os, sys
from pathlib import Path
from phdcli import fsutil
open_now = []  # entered, never left: their clean-up must not run
for kind, where in zip(sys.argv[1::2], sys.argv[2::2]):
    if kind == "file":
        open_now.append(fsutil.atomic_path(Path(where)))
        open_now[-1].__enter__().write_bytes(b"half a clip table")
    else:
        open_now.append(fsutil.temp_dir(Path(where), kind))
        (open_now[-1].__enter__() / "partial.bin").write_bytes(b"x" * 700)
os._exit(9)
"""


@dataclass
class Home:
    root: Path
    orphans: dict[str, set[Path]]  # kind -> the paths prune must find
    live: list[Path]  # temps of this (running) test process


def _url_folder(url: str) -> Path:
    return paths.downloads_cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]


def _commit_download(url: str, video: bytes) -> Path:
    """A finished download as phd commits one: the video, then source.json naming it."""
    folder = _url_folder(url)
    folder.mkdir(parents=True)
    (folder / "video.mp4").write_bytes(video)
    meta = {"url": url, "title": "A talk", "file": "video.mp4",
            "downloaded_at": "2024-05-01T10:00:00+00:00", "heatmap": None}
    fsutil.atomic_write_text(folder / "source.json", json.dumps(meta, indent=1) + "\n")
    return folder


def _new_memo(file: Path) -> Path:
    """Hash ``file`` through the hash index; the memo that wrote."""
    index = paths.cache_dir() / contenthash.HASH_INDEX_DIR
    before = set(index.glob("*.json"))
    contenthash.cached_sha256(file)
    (memo,) = set(index.glob("*.json")) - before
    return memo


@contextlib.contextmanager
def home_with_orphans(root: Path, tmp_path: Path) -> Iterator[Home]:
    """A PHD_HOME (already set) with one orphan of each kind or more, and what must survive;
    the live temps exist while the context is open."""
    cache = paths.cache_dir()
    orphans: dict[str, set[Path]] = {key: set() for key, _ in KINDS}

    # Survivors: a clip table, converted weights, int8 model and verdict, fetched
    # weights and a resumable partial, a finished download, a history, a config.
    spec = FeatureSpec()
    clips = ClipCache(paths.features_cache_dir(), 4096)
    key = cache_key("a" * 64, "c3d-test-backbone", spec)
    clips.store(key, ClipTable(np.array([0, TICKS_PER_S], dtype=np.int64),
                               np.ones((2, 4096), dtype=np.float32), np.zeros(2, dtype=bool)))
    weights.converted_path("c" * 64).parent.mkdir(parents=True)
    save_file({"conv1a.weight": np.zeros((4, 3), dtype=np.float32)},
              str(weights.converted_path("c" * 64)))
    xml, binary, manifest = int8.model_files("c" * 64, "fc6")
    xml.write_text("<net/>")
    binary.write_bytes(b"\x01" * 64)
    manifest.write_text(json.dumps({"backend": "openvino", "sha256": {}}))
    trials = {"fp32": precision_probe.Trial(2.8, 1.0, 0, 0),
              "int8": precision_probe.Trial(17.0, 0.9996, 5, 5)}
    verdict = precision_probe.Verdict(trials, 8, "talk.mp4", "test-cpu", 1.7e9)
    precision_probe.write_verdict(precision_probe.verdict_file("c" * 64, "fc6", "test-cpu"),
                                  verdict)
    (paths.weights_cache_dir() / "c3d.pth").write_bytes(b"weights" * 100)
    (paths.weights_cache_dir() / "other.pth.part").write_bytes(b"resumable")
    done_url = "https://example.com/talk.mp4"
    _commit_download(done_url, b"\x00\x00\x00\x18ftypmp42" + b"v" * 2000)
    profile = paths.profile_dir("default")
    profile.mkdir(parents=True)
    (profile / "liked.gif").write_bytes(b"GIF89a" + b"g" * 300)
    paths.config_dir().mkdir(parents=True)
    (paths.config_dir() / "config.toml").write_text('[suggest]\nformat = "webp"\n')

    # A record of the current format, and the memo of its (unchanged) GIF.
    pick = tmp_path / "picks" / "talk_01.gif"
    pick.parent.mkdir()
    pick.write_bytes(b"GIF89a" + b"p" * 500)
    source = records.Provenance("https://example.com/talk.mp4", "f" * 64, 3.0, 8.0)
    feature = records.SpanFeature(np.full(4096, 0.5, dtype=np.float32), "c3d-test-backbone",
                                  spec.to_dict())
    records.remember(pick, source, feature)
    current = records.record_path(contenthash.cached_sha256(pick))
    assert records.lookup(contenthash.cached_sha256(pick))[0] is not None

    # a. the segment cache of an older phd, outside clips/.
    old = paths.features_cache_dir() / "segments" / "ab"
    old.mkdir(parents=True)
    np.save(old / "ab12-seg3.npy", np.zeros((1, 4096), dtype=np.float32))
    (paths.features_cache_dir() / "index.json").write_text('{"segments": 1}')
    orphans["old-features"] |= {old / "ab12-seg3.npy", paths.features_cache_dir() / "index.json"}

    # b. a record without its vector, one filed under another file's hash, and one
    # that is not JSON at all.
    doc = json.loads(current.read_text())
    doc.update(file_sha256="d" * 64, feature={**doc["feature"], "floats": [0.5] * 8})
    del doc["feature"]["npy_base64"]
    older = records.record_path("d" * 64)
    older.parent.mkdir(parents=True)
    older.write_text(json.dumps(doc) + "\n")
    damaged = records.record_path("e" * 64)
    damaged.parent.mkdir(parents=True)
    damaged.write_text(current.read_text()[:100])  # cut short: not JSON
    misfiled = records.record_path("c" * 64)
    misfiled.parent.mkdir(parents=True)
    misfiled.write_text(current.read_text())
    orphans["unusable-records"] |= {older, damaged, misfiled}

    # c. memos of a file edited since and of a file deleted since.
    edited, deleted = tmp_path / "edited.mp4", tmp_path / "deleted.mp4"
    big = b"v" * contenthash.FULL_HASH_MAX_BYTES  # only files this large have memos
    edited.write_bytes(big + b"first cut")
    deleted.write_bytes(big + b"gone soon")
    orphans["stale-hash-memos"] |= {_new_memo(edited), _new_memo(deleted)}
    with edited.open("ab") as fh:
        fh.write(b", longer now")
    deleted.unlink()

    # e. downloads that never finished: killed mid-download (only its dead temp,
    # made below), killed between moving the video in and committing source.json,
    # and a source.json whose video is gone.
    killed_dl = _url_folder("https://example.com/killed.mp4")
    uncommitted = _url_folder("https://example.com/uncommitted.mp4")
    uncommitted.mkdir(parents=True)
    (uncommitted / "video.webm").write_bytes(b"w" * 1500)
    emptied = _commit_download("https://example.com/emptied.mp4", b"e" * 10)
    (emptied / "video.mp4").unlink()
    orphans["incomplete-downloads"] |= {killed_dl, uncommitted, emptied}

    # d. temps of a run that died: beside the clip table, in the weights cache,
    # and inside the killed download (which goes whole, with its folder).
    subprocess.run([sys.executable, "-c", _KILLED_RUN, "file", str(clips.file(key)),
                    "int8", str(paths.weights_cache_dir() / "converted"), "dl", str(killed_dl)],
                   check=False, env={**os.environ, "PHD_HOME": str(root)})
    dead = sorted(p for p in cache.rglob(".*") if fsutil.is_stale_temp(p.name))
    assert len(dead) == 3, dead
    orphans["dead-temps"] |= {p for p in dead if not p.is_relative_to(killed_dl)}

    with contextlib.ExitStack() as stack:
        # Temps of a live run (this process): a table being written, a download in progress.
        live_file = stack.enter_context(fsutil.atomic_path(clips.file(cache_key(
            "b" * 64, "c3d-test-backbone", spec))))
        live_file.write_bytes(b"being written")
        live_dir = stack.enter_context(fsutil.temp_dir(
            _url_folder("https://example.com/downloading.mp4"), "dl"))
        (live_dir / "video.mp4.part").write_bytes(b"arriving")
        assert complete_download(_url_folder(done_url)) is not None
        yield Home(root, orphans, [live_file, live_dir])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, by relative path."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def _under(rel: str, root: Path, orphans: set[Path]) -> bool:
    path = root / rel
    return any(path == o or path.is_relative_to(o) for o in orphans)


@pytest.fixture
def home(phd_home: Path, tmp_path: Path) -> Iterator[Home]:
    with home_with_orphans(phd_home, tmp_path) as built:
        yield built


def _all(home: Home) -> set[Path]:
    return set().union(*home.orphans.values())


# -- the library -------------------------------------------------------------------------
def test_find_orphans_finds_each_kind_and_nothing_else(home: Home) -> None:
    found = {c.key: {o.path for o in c.orphans} for c in find_orphans()}
    assert found == home.orphans
    sizes = {o.path: o.size_bytes for c in find_orphans() for o in c.orphans}
    assert sizes[paths.features_cache_dir() / "index.json"] == len('{"segments": 1}')
    # A folder's size is that of the files in it: the killed download's temp.
    assert sizes[_url_folder("https://example.com/killed.mp4")] == 700


def test_prune_removes_exactly_the_orphans(home: Home) -> None:
    before = snapshot(home.root)
    would = prune(dry_run=True)
    assert would.dry_run and snapshot(home.root) == before
    report = prune()
    assert not report.dry_run and report.failed == ()
    assert {c.key: {o.path for o in c.orphans} for c in report.categories} == home.orphans
    after = snapshot(home.root)
    kept = {rel: data for rel, data in before.items() if not _under(rel, home.root, _all(home))}
    # Folders left empty go too (not the cache's own rooms).
    emptied = {"cache/features/segments/ab", "cache/features/segments",
               f"cache/outputs/{'c' * 2}", f"cache/outputs/{'d' * 2}", f"cache/outputs/{'e' * 2}"}
    assert emptied <= kept.keys()
    assert after == {rel: data for rel, data in kept.items() if rel not in emptied}
    assert all(p.exists() for p in home.live)
    assert report.to_dict()["categories"] == {**would.to_dict(), "dry_run": False}["categories"]
    assert report.size_bytes == would.size_bytes > 0
    again = prune()
    assert again.count == 0 and again.lines() == [f"nothing to prune in {paths.cache_dir()}"]
    assert snapshot(home.root) == after


def test_clips_linked_from_elsewhere_are_the_clip_cache(home: Home, tmp_path: Path) -> None:
    """A features/clips/ that is a link to another disk is what ClipCache reads: it stays."""
    clips = paths.features_cache_dir() / "clips"
    elsewhere = tmp_path / "big-disk" / "clips"
    elsewhere.parent.mkdir()
    clips.rename(elsewhere)
    clips.symlink_to(elsewhere, target_is_directory=True)
    assert {o.path for c in find_orphans() for o in c.orphans} == _all(home) - {
        p for p in home.orphans["dead-temps"] if p.is_relative_to(clips)}
    prune()
    assert clips.is_symlink() and any(elsewhere.rglob("*.npz"))


def test_a_file_rewritten_after_it_was_found_stays(home: Home) -> None:
    """A record that a running phd rewrites (atomically) between finding and removing
    is not the file that was found: it stays."""
    from phdcli.doctor import prune as prune_mod

    (category,) = [c for c in find_orphans() if c.key == "unusable-records"]
    orphan = next(o for o in category.orphans if o.path == records.record_path("d" * 64))
    fsutil.atomic_write_text(orphan.path, orphan.path.read_text())  # same text, new file
    assert prune_mod._remove(orphan, category.key) is False
    assert orphan.path.exists()


def test_a_download_that_starts_after_its_folder_was_found_stays(home: Home) -> None:
    """A phd that starts downloading into an orphaned folder (a live temp appears
    in it) between finding and removing keeps its folder and what is in it."""
    from phdcli.doctor import prune as prune_mod

    (category,) = [c for c in find_orphans() if c.key == "incomplete-downloads"]
    folder = _url_folder("https://example.com/uncommitted.mp4")
    orphan = next(o for o in category.orphans if o.path == folder)
    with fsutil.temp_dir(folder, "dl") as work:
        (work / "video.mp4.part").write_bytes(b"arriving")
        before = snapshot(folder)
        assert prune_mod._remove(orphan, category.key) is False
        assert snapshot(folder) == before
        assert prune_mod._remove_tree(folder) is False  # even asked directly: the temp stays
        assert snapshot(folder) == {work.name: None, f"{work.name}/video.mp4.part": b"arriving"}


# -- the command line ---------------------------------------------------------------------
def test_dry_run_says_what_and_how_much_and_deletes_nothing(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(home.root)
    code, out, err = run(["cache", "prune", "--dry-run"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(KINDS) + 1 and all(len(line) <= 80 for line in lines[:-1])
    found = {c.key: c for c in find_orphans()}
    for (key, label), line in zip(KINDS, lines, strict=False):
        assert line.startswith(label)
        assert line.split()[-3:] == [str(len(home.orphans[key])),
                                     *human_bytes(found[key].size_bytes).split()]
    total = sum(c.size_bytes for c in found.values())
    assert lines[-1] == (f"would free {human_bytes(total)} ({len(_all(home))} entries) "
                         f"in {paths.cache_dir()}")
    assert snapshot(home.root) == before


def test_prune_then_a_second_prune_finds_nothing(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    total = sum(c.size_bytes for c in find_orphans())
    code, out, err = run(["cache", "prune"], capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == (f"freed {human_bytes(total)} ({len(_all(home))} entries) "
                                    f"in {paths.cache_dir()}")
    assert not any(p.exists() for p in _all(home))
    after = snapshot(home.root)
    code, out, err = run(["cache", "prune"], capsys)
    assert (code, out, err) == (0, f"nothing to prune in {paths.cache_dir()}\n", "")
    assert snapshot(home.root) == after
    code, out, _ = run(["cache", "prune", "--dry-run"], capsys)
    assert (code, out) == (0, f"nothing to prune in {paths.cache_dir()}\n")


def test_json_names_every_path_and_its_bytes(home: Home, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    before = snapshot(home.root)
    code, out, err = run(["cache", "prune", "--dry-run", "--json"], capsys)
    assert code == 0, err
    doc = json_doc(out)
    assert doc["dry_run"] is True and doc["cache"] == str(paths.cache_dir())
    assert [c["name"] for c in doc["categories"]] == [key for key, _ in KINDS]
    listed = {c["name"]: {Path(p["path"]) for p in c["paths"]} for c in doc["categories"]}
    assert listed == home.orphans
    for c in doc["categories"]:
        assert c["count"] == len(c["paths"])
        assert c["bytes"] == sum(p["bytes"] for p in c["paths"])
    assert doc["bytes"] == sum(c["bytes"] for c in doc["categories"]) > 0
    assert snapshot(home.root) == before

    code, out, err = run(["cache", "prune", "--json"], capsys)
    assert code == 0, err
    removed = json_doc(out)
    assert removed["dry_run"] is False and removed["failed"] == []
    assert removed["bytes"] == doc["bytes"] and removed["count"] == doc["count"]


def test_an_empty_cache_has_nothing_to_prune(phd_home: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["cache", "prune"], capsys)
    assert (code, out, err) == (0, f"nothing to prune in {phd_home / 'cache'}\n", "")
    assert not phd_home.exists()  # looking created nothing


def test_what_cannot_be_removed_is_one_error_and_the_rest_still_goes(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments = paths.features_cache_dir() / "segments" / "ab"
    segments.chmod(0o555)  # its old entry cannot be unlinked
    monkeypatch.delenv("PHD_HOME")
    try:
        result = phd("cache", "prune", home=home.root, drop_root=True, timeout=120)
    finally:
        segments.chmod(0o755)
    assert "could not remove" in one_error(result)
    assert "Permission denied" in result.stderr
    stuck = segments / "ab12-seg3.npy"
    assert stuck.exists()
    assert not any(p.exists() for p in _all(home) - {stuck})


# -- the finders in fsutil ----------------------------------------------------------------
def test_stale_temps_are_dead_owners_only_and_clean_stale_temps_removes_them(
    tmp_path: Path,
) -> None:
    subprocess.run([sys.executable, "-c", _KILLED_RUN, "file", str(tmp_path / "a.gif"),
                    "gifs", str(tmp_path)], check=False)
    dead = fsutil.stale_temps(tmp_path)
    assert len(dead) == 2 and all(p.name.startswith((".a.phd", ".gifs.phd")) for p in dead)
    with fsutil.temp_dir(tmp_path, "mine") as live:
        other_host = tmp_path / ".x.phd1-00000000-abcdefgh.part.gif"  # pid 1, another host
        other_host.write_bytes(b"")
        assert fsutil.stale_temps(tmp_path) == dead
        assert fsutil.holds_live_temp(tmp_path)
        assert fsutil.clean_stale_temps(tmp_path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name,
                                                                     other_host.name])
    other_host.unlink()
    assert not fsutil.holds_live_temp(tmp_path)


def test_a_memo_is_stale_once_its_file_changes(tmp_path: Path) -> None:
    index = tmp_path / "index"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"frames" * contenthash.FULL_HASH_MAX_BYTES)
    contenthash.cached_sha256(video, index)
    assert contenthash.stale_sha256_memos(index) == []
    (memo,) = index.glob("*.json")
    stat = video.stat()
    os.utime(video, ns=(1, 1))  # same size and content: only the mtime differs
    assert contenthash.stale_sha256_memos(index) == [memo]
    # mtime as it was: ctime moved on, so the memo stays out of reach (content identity)
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert contenthash.stale_sha256_memos(index) == [memo]
    contenthash.cached_sha256(video, index)
    (memo,) = set(index.glob("*.json")) - {memo}
    assert memo in set(index.glob("*.json")) and memo not in contenthash.stale_sha256_memos(index)
    memo.write_text("{not json")  # unreadable: cached_sha256 would hash anew
    assert memo in contenthash.stale_sha256_memos(index)


def test_resolve_input_reads_the_download_the_tests_commit(phd_home: Path) -> None:
    """The fixture's finished download is one phd itself takes without downloading."""
    url = "https://example.com/talk.mp4"
    folder = _commit_download(url, b"video bytes")
    assert resolve_input(url).path == folder / "video.mp4"
    assert complete_download(folder) == folder / "video.mp4"
