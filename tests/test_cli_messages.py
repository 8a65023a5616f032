"""What the CLI says: help in panels, bad values in the flag's words, completions of
declared choices, --jsonl failure lines, `history add` confirmations, tables at 80
columns and stage spinners (RANDOM C3D weights where features are computed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from runphd import run_cli

from phdcli.cli import app
from tests import media

COMMANDS = [["suggest"], ["config"], ["doctor"], ["eval"], ["history", "add"],
            ["history", "list"], ["history", "remove"], ["model", "fetch"], ["model", "info"],
            ["train", "prior"], ["train", "content"], ["dataset", "build"], ["cache", "prune"]]


@pytest.fixture
def cols80(phd_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated home, seen through an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")
    return phd_home


def test_suggest_help_has_panels_and_readable_metavars(
    cols80: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["suggest", "--help"], capsys)
    assert code == 0
    titles = [line.rstrip(":") for line in out.splitlines() if re.fullmatch(r"\w[\w ]*:", line)]
    assert titles[:7] == ["Arguments", "Input", "Output", "Ranking", "Speed", "Downloads",
                          "Scripting"]
    assert "Usage: phd suggest [OPTIONS] VIDEO..." in out
    for words in ("-k N ", "--format FORMAT", "--length SECONDS", "--width PX",
                  "--max-size MB", "--device DEVICE", "--user NAME"):
        assert words in out
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_help_shows_a_type_for_a_metavar(
    command: list[str], cols80: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli([*command, "--help"], capsys)
    assert code == 0
    assert not re.search(r"<(str|int|float|path|file|list\[)|\{\w+\}\.\.\.", out), out


@pytest.mark.parametrize(("args", "line"), [
    (["-k", "abc"], "-k: expected a whole number, got 'abc'"),
    (["--format", "jpg"], "--format: expected gif, mp4 or webp, got 'jpg'"),
    (["--segments", "scenes"], "--segments: expected fixed or shots, got 'scenes'"),
    (["--length", "5s"], "--length: expected a number, got '5s'"),
])
def test_a_bad_value_is_answered_in_the_flags_words(
    args: list[str], line: str, cols80: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["suggest", "v.mp4", *args], capsys)
    assert (code, out, err) == (2, "", f"phd: error: {line}\n")


def test_a_bad_value_from_the_environment_names_its_variable(
    cols80: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHD_K", "many")
    code, _, err = run_cli(["suggest", "v.mp4"], capsys)
    assert (code, err) == (2, "phd: error: -k: expected a whole number, got 'many' "
                              "(from PHD_K)\n")


def _complete(words: list[str], incomplete: str) -> list[str]:
    """What the shell completion machinery (the one the scripts call) offers."""
    from typer._completion_classes import BashComplete
    from typer.main import get_command

    complete = BashComplete(get_command(app), {}, "phd", "_PHD_COMPLETE")
    return [item.value for item in complete.get_completions(words, incomplete)]


def test_completion_offers_the_declared_choices() -> None:
    assert _complete(["suggest", "--format"], "") == ["gif", "mp4", "webp"]
    assert _complete(["suggest", "--format"], "w") == ["webp"]
    assert _complete(["suggest", "--segments"], "") == ["fixed", "shots"]
    assert _complete(["suggest", "--precision"], "") == ["auto", "bf16", "fp32", "int8"]
    assert "cuda:0" in _complete(["suggest", "--device"], "cu")
    assert _complete(["history", "add", "--device"], "c") == ["cpu", "cuda", "cuda:0", "cuda:1"]


def test_jsonl_gives_each_failed_input_a_marked_line(
    c3d_home: Path, tmp_path: Path, mmaction2_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.mp4"
    code, out, _ = run_cli(["suggest", str(missing), str(tmp_path / "also-missing.mp4"),
                            "--jsonl", "--c3d-weights", str(mmaction2_weights)], capsys)
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["type"], d["input"]) for d in lines] == [
        ("failure", str(missing)), ("failure", str(tmp_path / "also-missing.mp4"))]
    assert all("nope.mp4" in d["error"] or "also-missing" in d["error"] for d in lines)


def test_history_add_confirms_in_one_line(
    c3d_home: Path, tmp_path: Path, mmaction2_weights: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    video = media.lavfi_video(tmp_path / "v.mp4", duration_s=4.0, size="160x120")
    gifs = [media.gif_from(video, tmp_path / f"{n}.gif", start, 1.2, width=96)
            for n, start in (("a", 0.2), ("b", 2.0))]
    code, _, err = run_cli(["history", "add", *map(str, gifs), "--device", "cpu"], capsys)
    # The device line (said whenever C3D runs), then the confirmation; no warnings.
    lines = [line for line in err.splitlines() if not line.startswith("phd: device ")]
    assert (code, lines) == (0, ["phd: added 2 GIFs to profile 'default'"])
    code, _, err = run_cli(["history", "add", str(gifs[0]), "--device", "cpu"], capsys)
    assert (code, err) == (0, "phd: nothing new: the file is already in profile 'default'\n")


def test_history_add_summary_names_what_was_kept() -> None:
    from phdcli.cli.history import added_summary

    def item(video: str | None, start_s: float = 0.0, end_s: float = 0.0) -> SimpleNamespace:
        source = None if video is None else SimpleNamespace(video=video, start_s=start_s,
                                                            end_s=end_s)
        return SimpleNamespace(source=source)

    added = [item(None), item("/home/me/talk.mp4", 15.0, 20.0)]
    assert added_summary(added, 2, "default") == \
        "added 2 GIFs to profile 'default' (1 kept from talk.mp4 0:15-0:20)"
    url = "https://example.com/watch?v=x"
    assert added_summary([item(url, 61.0, 64.0)], 3, "ana") == \
        f"added 1 GIF to profile 'ana' (1 kept from {url} 1:01-1:04); 2 already there"


def _column_text(out: str, header: str) -> str:
    """The cells of one table column, joined (folded names come back whole)."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if header in line)
    start = lines[head].index(header)
    after = re.search(r"\s{2}\S", lines[head][start + len(header):])
    end = start + len(header) + after.end() - 1 if after else None
    return "".join(line[start:end].strip() for line in lines[head + 1:])


def test_explain_table_at_80_columns_keeps_spans_and_paths_whole(
    c3d_home: Path, tmp_path: Path, mmaction2_weights: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    video = media.lavfi_video(tmp_path / "a_video_with_a_rather_long_name.mp4",
                              duration_s=8.0, size="160x120")
    history = tmp_path / "history"
    history.mkdir()
    media.gif_from(video, history / "a_gif_i_liked_very_much_last_summer.gif", 5.5, 1.5,
                   width=96)
    out_dir = tmp_path / "some" / "deeply" / "nested" / "output" / "folder"
    code, out, err = run_cli(["suggest", str(video), "-k", "2", "--length", "4", "--explain",
                              "--width", "96", "--out", str(out_dir), "--history", str(history),
                              "--device", "cpu", "--c3d-weights", str(mmaction2_weights),
                              "--min-gap", "0", "--no-one-shot"],
                             capsys)
    assert code == 0, err
    assert "…" not in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "0:00.0-0:04.0" in out and "0:04.0-0:08.0" in out
    names = _column_text(out, "nearest GIF")
    assert "a_gif_i_liked_very_much_last_summer.gif" in names
    for gif in out_dir.glob("*.gif"):
        assert str(gif) in names


def test_config_and_history_tables_fold_long_paths(
    cols80: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    far = "/".join(["a-rather-long-folder-name"] * 5) + "/weights.pth"
    monkeypatch.setenv("PHD_C3D_WEIGHTS", far)
    code, out, _ = run_cli(["config"], capsys)
    assert code == 0 and "…" not in out
    assert far in _column_text(out, "value").replace("'", "")


def test_progress_shows_a_spinner_naming_a_stage_of_unknown_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phdcli.cli import _app

    monkeypatch.setattr(_app, "_show_progress", lambda: True)
    with _app.Progress() as progress:
        progress.update("loading C3D", 0, 0)
        spinner = progress._bar.tasks[0]
        assert (spinner.description, spinner.total, spinner.visible) == (
            "loading C3D", None, True)
        progress.update("clips", 3, 10)  # a counted stage takes over
        assert not spinner.visible
        assert [t.description for t in progress._bar.tasks if t.visible] == ["C3D features"]


def test_suggest_reports_each_slow_stage_as_it_starts(
    c3d_home: Path, tmp_path: Path, mmaction2_weights: Path,
) -> None:
    from phdcli.suggest.config import SuggestConfig
    from phdcli.suggest.pipeline import suggest_batch

    video = media.lavfi_video(tmp_path / "v.mp4", duration_s=4.0, size="160x120")
    history = tmp_path / "history"
    history.mkdir()
    media.gif_from(video, history / "liked.gif", 1.0, 1.5, width=96)
    events: list[tuple[str, int, int]] = []
    cfg = SuggestConfig(k=1, out_dir=tmp_path / "o", c3d_weights=mmaction2_weights,
                        device="cpu", dry_run=True, history_dir=history, length_s=2.0)
    suggest_batch([str(video)], cfg, progress=lambda *e: events.append(e))
    started = [stage for stage, done, total in events if done == total == 0]
    assert started[:4] == ["probing", "history features", "loading C3D", "running C3D"]
    first_clip = next(i for i, e in enumerate(events) if e[0] == "clips")
    assert events[first_clip][1] == 0  # the bar shows before the first batch is done
