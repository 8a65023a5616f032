"""``phd suggest`` gives what it gave before the restructure into subpackages (issue 16).

The code as it was (commit ``BEFORE``, read out of this repository's own
history with ``git archive``) and the code as it is run on the same footage,
history GIF, RANDOM C3D weights and model, each in a home of its own (no
cache shared: each converts the weights and computes its features itself).
The ``--json`` documents must be byte-identical (they hold no timings), and
so must the GIFs they name. Two cold runs (about 20 s): a heavy test. A
change that means to change what ``phd suggest`` outputs moves ``BEFORE``
to its own parent commit, or retires this test, saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "b45d654"  # main before the restructure


def _old_tree(dest: Path) -> Path:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("no git checkout here: the old code cannot be read out of the history")
    known = subprocess.run([git, "cat-file", "-e", f"{BEFORE}^{{commit}}"], cwd=ROOT,
                           capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this clone (shallow?)")
    archive = dest / "old.tar"
    subprocess.run([git, "archive", "-o", str(archive), BEFORE, "phdcli"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "old", filter="data")
    return dest / "old"


def _suggest(tmp: Path, name: str, footage: dict[str, Path], pythonpath: Path | None
             ) -> tuple[bytes, dict[str, str]]:
    """stdout of ``phd suggest --json`` in a fresh home, and the sha256 of each file written."""
    run = tmp / name
    run.mkdir()
    env = {"PATH": os.environ["PATH"], "PHD_HOME": str(tmp / f"home-{name}"),
           "PHD_INT8": "0", "OMP_NUM_THREADS": "2"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    args = [sys.executable, "-m", "phdcli", "suggest", str(footage["video"]), "-k", "2",
            "--history", str(footage["history"]), "--c3d-weights", str(footage["weights"]),
            "--model", str(ROOT / "weights" / "phd-fused-v0.safetensors"),
            "--width", "160", "--out", "gifs", "--json", "--explain"]
    if pythonpath is None:  # this phd: without issue 17's gap and shot rule, as before
        args += ["--min-gap", "0", "--no-one-shot"]
    done = subprocess.run(args, cwd=run, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((run / "gifs").iterdir()) if p.is_file()}  # not .phd/
    return done.stdout, files


@pytest.mark.heavy
def test_suggest_json_and_gifs_are_byte_identical_to_before_the_restructure(
    tmp_path: Path, footage: dict[str, Path]
) -> None:
    old_root = _old_tree(tmp_path)
    imported = subprocess.run([sys.executable, "-c", "import phdcli; print(phdcli.__file__)"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(old_root)},
                              capture_output=True, text=True, check=True).stdout
    assert Path(imported.strip()).parent == old_root / "phdcli"  # the old code runs
    assert (old_root / "phdcli" / "video.py").is_file()  # the flat, old layout
    before, before_files = _suggest(tmp_path, "before", footage, old_root)
    after, after_files = _suggest(tmp_path, "after", footage, None)
    assert b'"suggestions"' in after and len(after_files) == 2
    # Issue 17 added fields (the segment beside the GIF's window, the terms
    # that ranked); everything the old document held is unchanged.
    new_doc = json.loads(after)
    for result in new_doc["results"]:
        assert result.pop("ranked_by") == ["svm-d", "prior"]
        for s in result["suggestions"]:
            assert s.pop("segment") == {"start": s["start"], "end": s["end"]}
    assert new_doc == json.loads(before)
    assert after_files == before_files

    # A GIF the old phd wrote is kept, by this phd, with the source the old one
    # recorded (its record, format 1, is still read): no decoding of the GIF.
    env = {"PATH": os.environ["PATH"], "PHD_HOME": str(tmp_path / "home-before"),
           "PHD_INT8": "0", "OMP_NUM_THREADS": "2"}
    first = json.loads(before)["results"][0]["suggestions"][0]
    common = ["--c3d-weights", str(footage["weights"]),
              "--model", str(ROOT / "weights" / "phd-fused-v0.safetensors")]
    added = subprocess.run([sys.executable, "-m", "phdcli", "history", "add",
                            str(tmp_path / "before" / first["path"]), *common],
                           env=env, capture_output=True, text=True, timeout=600)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([sys.executable, "-m", "phdcli", "history", "list", "--json"],
                            env=env, capture_output=True, text=True, check=True).stdout
    (item,) = json.loads(listed)
    assert item["source"] is not None and item["feature"] is not None, added.stderr
    assert (item["source"]["start_s"], item["source"]["end_s"]) == (first["start"],
                                                                    first["end"])
