"""Output files and the run's answer under collisions, races and bad numbers.

Issue rows 2, 5 (the output guard), 11, 13, 14, 16, 17, 19 and the stress
test "4 identical `phd suggest` into one --out". RANDOM C3D weights; the
features of each small video are computed once into the session's shared
cache, so most runs here cost ffmpeg only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runphd import hidden_files, home_with_cache, json_doc, one_error, phd
from runphd import run_cli as run

from phdcli.media.decode import decode_clips
from phdcli.media.gifs import GifOptions, write_clip
from phdcli.media.probe import probe
from phdcli.ranking.model import default_model_path, load_model, save_model
from phdcli.suggest.manifest import MANIFEST_DIR
from tests import media


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = media.lavfi_video(root / "a" / "clip.mp4", duration_s=6.0, size="96x72",
                          source="testsrc2")
    b = media.lavfi_video(root / "b" / "clip.mp4", duration_s=6.0, size="96x72",
                          source="testsrc")
    # The same contents under names that sanitise to nothing ("video").
    shutil.copyfile(b, root / "日本語.mp4")
    shutil.copyfile(a, root / "中文.mp4")
    # Flat grey, then noise: one segment's GIF is tiny, the other's is not.
    mixed = root / "mixed.mp4"
    media.run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=96x72:rate=25:duration=5",
                     "-f", "lavfi", "-i", "color=c=gray:size=96x72:rate=25:duration=5",
                     "-filter_complex", "[1:v]noise=alls=100:allf=t+u[n];[0:v][n]concat=n=2[v]",
                     "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                     "yuv420p", str(mixed))
    (root / "empty-folder").mkdir()
    return {"a": a, "b": b, "ja": root / "日本語.mp4", "zh": root / "中文.mp4", "mixed": mixed,
            "empty": root / "empty-folder", "root": root}


@pytest.fixture
def home(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch,
         mmaction2_weights: Path) -> Path:
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    return home


def _first_frame(path: Path, start_s: float = 0.0) -> np.ndarray:
    (clip,) = decode_clips(path, [start_s], clip_fps=10.0, n_frames=1)
    return clip[0].astype(np.int16)


def test_same_stem_in_a_batch_gives_distinct_files_holding_their_own_gifs(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(["suggest", str(clips["a"]), str(clips["b"]), "--name",
                             "{stem}_{rank}", "--force", "--json", "-k", "2", "--out", str(out),
                             "--device", "cpu", "--min-gap", "0"], capsys)
    assert code == 0, err
    doc = json_doc(stdout)
    reported = [(r["input"], s) for r in doc["results"] for s in r["suggestions"]]
    paths = [Path(s["path"]) for _, s in reported]
    assert len(paths) == 4 and len(set(paths)) == 4
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_DIR, *(p.name for p in paths)])
    for source, s in reported:
        gif = Path(s["path"])
        assert gif.stat().st_size == s["size_bytes"]
        other = clips["b"] if source == str(clips["a"]) else clips["a"]
        mine = np.abs(_first_frame(gif) - _first_frame(Path(source), s["start"])).mean()
        theirs = np.abs(_first_frame(gif) - _first_frame(other, s["start"])).mean()
        assert mine < theirs / 2, (gif, mine, theirs)


def test_the_same_file_twice_and_names_that_sanitise_alike_get_distinct_gifs(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    inputs = [str(clips["a"]), str(clips["a"]), str(clips["ja"]), str(clips["zh"])]
    code, stdout, err = run(["suggest", *inputs, "-k", "1", "--json", "--out", str(out),
                             "--device", "cpu"], capsys)
    assert code == 0, err
    names = [Path(r["suggestions"][0]["path"]).name for r in json_doc(stdout)["results"]]
    assert [n.split("_")[0] for n in names] == ["clip", "clip-2", "video", "video-2"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_DIR, *names])


def test_templates_that_cannot_name_every_file_are_refused_before_work(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["suggest", "--out", str(tmp_path / "o"), "--device", "cpu"]
    for extra, words in (
        ([str(clips["a"]), str(clips["b"]), "--name", "{rank}"], "use {stem}"),
        ([str(clips["a"]), "-k", "2", "--name", "{stem}_{start:.0f}"], "use {rank}"),
        ([str(clips["a"]), "--name", "x" * 300], "too long"),  # row 11
        ([str(clips["a"]), "--name", "{stem:>400}"], "too long"),
    ):
        code, stdout, err = run([*base, *extra], capsys)
        assert code == 2 and words in err and stdout == "", (extra, err)
        assert len(err.strip().splitlines()) == 1
        assert "device" not in err  # refused before C3D was set up
    assert not (tmp_path / "o").exists()


def test_an_out_that_is_a_file_or_read_only_fails_before_any_work(
    clips: dict[str, Path], home: Path, tmp_path: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub"):
        code, stdout, err = run(["suggest", str(clips["a"]), "--out", str(out), "--json",
                                 "--device", "cpu"], capsys)
        assert code == 1 and "not a folder" in err and len(err.strip().splitlines()) == 1
        assert json_doc(stdout)["errors"][0]["input"] == str(clips["a"])
    assert blocker.read_text() == "mine"
    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, 0o555)
    try:
        for out in (readonly, readonly / "new" / "deeper"):
            result = phd("suggest", str(clips["b"]), "--out", str(out), "--device", "cpu",
                         home=home, weights=mmaction2_weights, drop_root=True)
            assert "not writable" in one_error(result)
            assert "device" not in result.stderr  # failed before C3D was set up
    finally:
        os.chmod(readonly, 0o755)
    assert list(readonly.iterdir()) == []


# Heavy: converts the full 312 MB mmaction2 checkpoint in a child process (~40 s).
@pytest.mark.heavy
def test_a_full_disk_while_converting_weights_is_not_fatal(
    clips: dict[str, Path], tmp_path: Path, mmaction2_weights: Path, one_gif_history: Path
) -> None:
    """RLIMIT_FSIZE stands in for a full disk: the 312 MB converted copy cannot be
    written (EFBIG), the small files can. The cache is an optimisation: the run
    goes on with the weights in memory."""
    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50 << 20, 50 << 20))

    home = tmp_path / "home"  # a fresh cache: conversion has to happen
    result = phd("suggest", str(clips["a"]), "-k", "1", "--json", "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--history", str(one_gif_history), home=home,
                 weights=mmaction2_weights, preexec_fn=small_files_only)
    assert result.returncode == 0, result.stderr
    assert "could not cache the converted C3D weights" in result.stderr
    assert Path(json_doc(result.stdout)["results"][0]["suggestions"][0]["path"]).is_file()
    assert not list((home / "cache" / "weights").rglob("*.safetensors"))


def test_a_batch_keeps_its_json_when_a_shared_part_fails(
    clips: dict[str, Path], tmp_path: Path, one_gif_history: Path
) -> None:
    inputs = [str(clips["a"]), str(clips["b"])]
    result = phd("suggest", *inputs, "--json", "--device", "cpu", "--history",
                 str(one_gif_history), home=tmp_path / "h")
    assert "phd model fetch" in one_error(result)  # no weights: nothing can work
    doc = json_doc(result.stdout)
    assert doc["results"] == [] and [e["input"] for e in doc["errors"]] == inputs


def test_a_failed_video_leaves_no_file_and_reports_none(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 50_000
    # The premise: at this limit the flat segment's GIF fits, the noisy one cannot.
    options = GifOptions(fps=10, width=96, max_size_bytes=limit)
    assert write_clip(clips["mixed"], 0.0, 5.0, tmp_path / "flat.gif", options).fits
    with pytest.raises(Exception, match="cannot fit"):
        write_clip(clips["mixed"], 5.0, 10.0, tmp_path / "noise.gif", options)
    out = tmp_path / "out"
    args = ["suggest", str(clips["mixed"]), "-k", "2", "--out", str(out), "--device", "cpu",
            "--min-gap", "0"]
    for fmt in ("--json", "--jsonl"):
        code, stdout, err = run([*args, "--max-size", str(limit / 1e6), fmt], capsys)
        assert code == 1 and "cannot fit" in err
        if fmt == "--json":
            doc = json_doc(stdout)
            assert doc["results"] == [] and doc["errors"][0]["input"] == str(clips["mixed"])
        else:  # no pick reported that is not there; the failure, marked as one
            (line,) = [json.loads(x) for x in stdout.splitlines()]
            assert line["type"] == "failure" and line["input"] == str(clips["mixed"])
            assert "cannot fit" in line["error"]
        assert not out.exists() or list(out.iterdir()) == []
    code, stdout, err = run([*args, "--max-size", "5", "--json"], capsys)  # no "already exists"
    assert code == 0, err
    assert len(list(out.glob("*.gif"))) == 2 and hidden_files(out) == [MANIFEST_DIR]


def test_stress_four_identical_runs_into_one_out(
    clips: dict[str, Path], home: Path, tmp_path: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Row 14, and issue 17's "running twice = running once": the four take turns
    placing their files; the first writes them, the others find the same bytes
    there, recorded as this input's. All succeed; the folder holds one run's files."""
    out = tmp_path / "out"
    args = ["suggest", str(clips["b"]), "-k", "2", "--json", "--out", str(out),
            "--device", "cpu"]
    assert run([*args[:-5], "--dry-run", "--device", "cpu"], capsys)[0] == 0  # features cached
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PHD_C3D_WEIGHTS": str(mmaction2_weights)}
    procs = [subprocess.Popen([sys.executable, "-m", "phdcli", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    docs = [json_doc(stdout) for _, stdout, _ in results]
    assert all(doc == docs[0] for doc in docs)
    suggestions = docs[0]["results"][0]["suggestions"]
    names = sorted(Path(s["path"]).name for s in suggestions)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_DIR, *names])  # no temp
    (entry,) = json.loads((out / MANIFEST_DIR / "outputs.json").read_text())["inputs"]
    assert sorted(entry["files"]) == names and "pending" not in entry
    for s in suggestions:
        gif = Path(s["path"])
        assert gif.stat().st_size == s["size_bytes"] == entry["files"][gif.name]["size_bytes"]
        assert probe(gif).duration_s == pytest.approx(s["end"] - s["start"], abs=0.5)


def test_a_non_finite_score_never_reaches_stdout(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model(default_model_path())
    broken = tmp_path / "nan-model.safetensors"
    save_model(dataclasses.replace(model, svm_b=float("nan")), broken)
    base = ["suggest", str(clips["a"]), "--dry-run", "--device", "cpu", "--model", str(broken)]
    code, stdout, err = run([*base, "--json", "--explain"], capsys)
    assert code == 1 and "non-finite score" in err
    doc = json_doc(stdout)  # strict: a NaN would fail here
    assert doc["results"] == [] and "non-finite" in doc["errors"][0]["error"]
    code, stdout, err = run([*base, "--jsonl"], capsys)
    assert code == 1
    assert [json.loads(x)["type"] for x in stdout.splitlines()] == ["failure"]


def test_a_folder_without_videos_says_so(
    clips: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = run(["suggest", str(clips["empty"]), "--out", str(tmp_path / "o")],
                            capsys)
    assert code == 1 and stdout == ""
    assert err.strip() == f"phd: error: no videos in {clips['empty']}"
    code, stdout, _ = run(["suggest", str(clips["empty"]), "--json"], capsys)
    assert code == 1 and json_doc(stdout)["errors"][0]["input"] == str(clips["empty"])


@pytest.mark.parametrize("flags", [
    ["--length", "inf"], ["--length", "nan"], ["--length", "1e-9"], ["--gif-length", "inf"],
    ["--gif-length", "-1"], ["--fps", "1e6"], ["--fps", "nan"], ["--max-size", "inf"],
    ["--max-size", "0"], ["--max-filesize", "nan"], ["--stall-timeout", "inf"],
    ["--download-timeout", "0"], ["--max-megapixels", "-1"], ["-k", "0"],
])
def test_numbers_are_checked_before_any_work(
    flags: list[str], clips: dict[str, Path], home: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, err = run(["suggest", str(clips["a"]), "--out", str(tmp_path / "o"), *flags],
                            capsys)
    assert code == 2 and stdout == "", (flags, err)
    assert err.startswith("phd: error: ") and len(err.strip().splitlines()) == 1
    assert flags[0] in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [
    ["suggest", "--no-such-flag"], ["suggest", "x.mp4", "-k", "abc"], ["histroy"],
    ["suggest"], ["history", "remove"],
])
def test_usage_errors_are_one_line(args: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHD_HOME", str(tmp_path))
    code, stdout, err = run(args, capsys)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phd: error: ")
    # Where to look next: the help, or (a bad value) what the flag takes.
    assert "--help" in lines[0] or ": expected " in lines[0]


def test_the_failed_input_is_named_once(home: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    blink = media.lavfi_video(tmp_path / "tiny02.mp4", duration_s=0.3, size="96x72")
    code, _, err = run(["suggest", str(blink), "--out", str(tmp_path / "o"), "--device", "cpu"],
                       capsys)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"phd: error: {blink}: ") and "tiny02:" not in line


@pytest.mark.heavy
def test_damaged_converted_weights_never_put_nan_on_stdout(
    clips: dict[str, Path], tmp_path: Path, mmaction2_weights: Path, one_gif_history: Path
) -> None:
    """Row 5 as written: 1 MiB of garbage inside the converted weights. Whether
    the damage is caught at load (checksums, issue 12) or only at the scores,
    stdout stays strict JSON and a bad input is an error, never a NaN."""
    import random

    home = tmp_path / "home"
    # A history: C3D runs (a cold start with the bundled model reads no weights).
    args = ["suggest", "-k", "1", "--dry-run", "--json", "--device", "cpu", "--history",
            str(one_gif_history)]
    first = phd(*args, str(clips["a"]), home=home, weights=mmaction2_weights)
    assert first.returncode == 0, first.stderr
    (converted,) = (home / "cache" / "weights").rglob("*.safetensors")
    data = bytearray(converted.read_bytes())
    middle = len(data) // 2
    data[middle:middle + (1 << 20)] = random.Random(0).randbytes(1 << 20)
    converted.write_bytes(bytes(data))
    second = phd(*args, str(clips["b"]), home=home, weights=mmaction2_weights)
    doc = json_doc(second.stdout)  # strict: "NaN" would fail here
    if second.returncode == 0:
        assert doc["results"][0]["suggestions"], second.stderr
    else:
        assert second.returncode == 1 and doc["errors"], second.stderr
        assert "Traceback" not in second.stderr
