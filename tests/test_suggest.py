"""End to end: real footage, a history GIF cut from it, random C3D weights.

The right answer is known by construction: the segment the history GIF was
cut from must rank first. The C3D weights are random (the test says so);
near-copy retrieval still works because the model centres features on the
video's mean before the cosine (stack.md, "Near-copy retrieval").

The first two tests run C3D themselves (a fresh feature cache, the weights
already converted); the others read the footage's features from the
session's shared cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runphd import home_with_cache, run_cli

from phdcli.media.probe import probe
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import Suggester


@pytest.fixture
def shared_home(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    return home


def test_near_copy_of_history_gif_ranks_first_and_gifs_are_valid(
    footage: dict[str, Path], c3d_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "gifs"
    code, out, err = run_cli(
        ["suggest", str(footage["video"]), "-k", "3", "--out", str(out_dir), "--json",
         "--history", str(footage["history"]), "--c3d-weights", str(footage["weights"]),
         "--device", "cpu", "--min-gap", "0", "--no-one-shot"],  # the ranking's own top 3
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    suggestions = doc["results"][0]["suggestions"]
    assert [s["rank"] for s in suggestions] == [1, 2, 3]
    assert suggestions[0]["start"] == pytest.approx(10.0)
    assert suggestions[0]["score"] > suggestions[1]["score"]
    assert "device cpu" in err  # the device and precision are said on stderr
    for s in suggestions:
        gif = Path(s["path"])
        assert gif.parent == out_dir and gif.suffix == ".gif"
        info = probe(gif)  # re-decoded by FFmpeg's own libraries
        assert info.duration_s == pytest.approx(s["end"] - s["start"], abs=0.5)
        assert b"NETSCAPE2.0" in gif.read_bytes()  # loops
    # No temp files left; the record of what phd wrote (phdcli.suggest.manifest).
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(".")] == [".phd"]


def test_second_run_reads_features_from_cache(
    footage: dict[str, Path], c3d_home: Path, tmp_path: Path
) -> None:
    config = SuggestConfig(
        k=2, out_dir=tmp_path, history_dir=footage["history"], c3d_weights=footage["weights"],
        device="cpu", dry_run=True,
    )
    first = Suggester(config)
    ranked_first = first.run(footage["video"])
    assert first.extractor.stats.c3d_loads == 1
    assert first.extractor.stats.clips_forwarded > 0

    second = Suggester(config)
    ranked_second = second.run(footage["video"])
    assert second.extractor.stats.c3d_loads == 0  # C3D never loaded
    assert second.extractor.stats.clips_forwarded == 0
    assert second.extractor.stats.cache_hits == 2  # the history GIF and the video
    assert [s.start_s for s in ranked_second.suggestions] == [
        s.start_s for s in ranked_first.suggestions
    ]
    for s in ranked_second.suggestions:  # --explain's terms add up to the score
        e = s.explanation
        assert e.fnn + e.svm + e.time == pytest.approx(s.score)
        assert e.nearest_gif == "liked.gif" and -1.0 <= e.similarity <= 1.0


def test_existing_gifs_are_not_overwritten_without_force(
    footage: dict[str, Path], shared_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "gifs"
    args = ["suggest", str(footage["video"]), "-k", "1", "--out", str(out_dir),
            "--history", str(footage["history"]), "--c3d-weights", str(footage["weights"]),
            "--name", "best"]
    assert run_cli(args, capsys)[0] == 0
    gif = out_dir / "best.gif"
    gif.write_bytes(b"the user's own edit")
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "--force" in err
    assert gif.read_bytes() == b"the user's own edit"
    assert run_cli([*args, "--force"], capsys)[0] == 0
    assert gif.read_bytes().startswith(b"GIF8")


def test_cold_start_ranks_with_an_empty_history(
    footage: dict[str, Path], shared_home: Path, tmp_path: Path
) -> None:
    config = SuggestConfig(k=4, out_dir=tmp_path, c3d_weights=footage["weights"],
                           device="cpu", dry_run=True, min_gap_s=0, one_shot=False)
    suggester = Suggester(config)
    result = suggester.run(footage["video"])
    assert len(result.suggestions) == 4  # every segment, by the temporal prior alone
    assert result.ranked_by == ("prior",)
    assert all(s.explanation.nearest_gif is None for s in result.suggestions)
    scores = [s.score for s in result.suggestions]
    assert scores == sorted(scores, reverse=True)
    assert suggester.extractor.stats.c3d_loads == suggester.extractor.stats.clips_forwarded == 0


def test_warm_run_never_imports_torch(
    footage: dict[str, Path], shared_home: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    config = SuggestConfig(k=2, out_dir=tmp_path, history_dir=footage["history"],
                           c3d_weights=footage["weights"], device="cpu", dry_run=True)
    Suggester(config).run(footage["video"])  # fills the feature cache
    code = (
        "import sys\n"
        "from phdcli.cli import main\n"
        f"args = ['suggest', {str(footage['video'])!r}, '-k', '2', '--dry-run', '--json',\n"
        f"        '--history', {str(footage['history'])!r}, '--c3d-weights',\n"
        f"        {str(footage['weights'])!r}, '--device', 'cpu']\n"
        "try:\n    main(args)\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PHD_HOME": str(shared_home)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False"
