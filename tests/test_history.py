"""History profiles: add (once), list, remove, path; random C3D weights.

The DavideA weights come converted (``converted_weights``): tests/test_weights.py
is where conversion itself is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runphd import run_cli as run

from tests import media
from tests.conftest import ConvertedWeights


@pytest.fixture
def gifs(tmp_path: Path) -> dict[str, Path]:
    video = media.lavfi_video(tmp_path / "src.mp4", duration_s=4.0, size="160x120")
    folder = tmp_path / "made-before"
    folder.mkdir()
    return {
        "a": media.gif_from(video, folder / "first one.gif", 0.2, 1.2, width=120),
        "b": media.gif_from(video, folder / "second.gif", 2.0, 1.5, width=120),
    }


def test_add_list_remove_and_no_duplicates(
    gifs: dict[str, Path], phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, davidea_weights: Path, converted_weights: ConvertedWeights,
) -> None:
    # The DavideA format works as a drop-in for the mmaction2 one.
    converted_weights.seed(phd_home, davidea_weights)
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(davidea_weights))
    code, _, err = run(["history", "add", str(gifs["a"]), str(gifs["b"]), "--device", "cpu"],
                       capsys)
    assert code == 0, err
    code, out, _ = run(["history", "list", "--json"], capsys)
    items = json.loads(out)
    assert [it["name"] for it in items] == ["first_one.gif", "second.gif"]
    assert all(it["frames"] > 5 and it["duration_s"] > 1.0 for it in items)

    # Same content again (even under another name): nothing added.
    again = tmp_path / "copy.gif"
    again.write_bytes(gifs["a"].read_bytes())
    assert run(["history", "add", str(again), "--device", "cpu"], capsys)[0] == 0
    code, out, _ = run(["history", "list", "--json"], capsys)
    assert len(json.loads(out)) == 2

    code, out, _ = run(["history", "path"], capsys)
    folder = Path(out.strip())
    assert folder.is_relative_to(phd_home)
    assert (folder / "second.gif").read_bytes() == gifs["b"].read_bytes()

    assert run(["history", "remove", "second.gif"], capsys)[0] == 0
    assert not (folder / "second.gif").exists()
    code, _, err = run(["history", "remove", "second.gif"], capsys)
    assert code == 1 and "second.gif" in err

    code, out, _ = run(["history", "list"], capsys)  # the rich table
    assert "first_one.gif" in out and "second.gif" not in out


def test_profiles_are_separate(
    gifs: dict[str, Path], phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, davidea_weights: Path, converted_weights: ConvertedWeights,
) -> None:
    converted_weights.seed(phd_home, davidea_weights)
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(davidea_weights))
    assert run(["history", "add", str(gifs["a"]), "--user", "ana", "--device", "cpu"],
               capsys)[0] == 0
    assert json.loads(run(["history", "list", "--json", "--user", "ana"], capsys)[1])
    assert json.loads(run(["history", "list", "--json"], capsys)[1]) == []


def test_history_folder_option_reads_any_folder(
    gifs: dict[str, Path], tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = gifs["a"].parent
    code, out, _ = run(["history", "list", "--json", "--history", str(folder)], capsys)
    assert code == 0
    assert sorted(it["name"] for it in json.loads(out)) == ["first one.gif", "second.gif"]
