"""Flags, templates and settings that used to pass the early checks and fail late.

Issue 18, rows 6, 7, 8, 9, 10, 12 and 20. Almost every case here must fail
before a video is opened, so the runs are in-process and cheap; the few that
write a GIF are cold starts (an empty history ranks by position: no C3D).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from runphd import json_doc, one_error
from runphd import run_cli as run

from phdcli.media.gifs import GifOptions, gif_stats, write_clip
from tests import media

HUGE_WIDTH = "{rank:>8000000000}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return media.lavfi_video(root / "tiny.mp4", duration_s=2.0, size="64x48")


def _config_file(home: Path, text: str) -> Path:
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- row 6 --------------------------------------------------------------------
def test_a_huge_name_width_is_refused_from_flag_env_or_config_without_rendering(
    phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["suggest", "v.mp4", "--out", str(tmp_path / "o")]
    started = time.monotonic()
    for extra, origin in (([f"--name={HUGE_WIDTH}"], ""),
                          (["--name", "{rank:" + "9" * 5000 + "}"], ""),
                          ([], "(from PHD_NAME)"), ([], "in the config file")):
        with monkeypatch.context() as patch:
            if origin == "(from PHD_NAME)":
                patch.setenv("PHD_NAME", HUGE_WIDTH)
            elif origin:
                _config_file(phd_home, f"[suggest]\nname = '{HUGE_WIDTH}'\n")
            line = one_error(run([*args, *extra], capsys), code=2)
        assert line.startswith("phd: error: --name ") and "too long" in line, line
        assert origin in line
    # Read as text: no 8 GB string was ever made (that took 39 s and 15.7 GB).
    assert time.monotonic() - started < 5
    assert not (tmp_path / "o").exists()


# -- row 7 --------------------------------------------------------------------
@pytest.mark.parametrize("template", [
    "{rank[0]}", "{stem.__class__}", "{stem!r}_{rank}", "{stem!x}", "{nope}", "{}", "{0}",
    "{rank:{stem}}", "{rank:c}", "{start:d}", "{stem:+}", "{stem", "a}b{stem}",
])
def test_name_attributes_indexes_and_conversions_are_usage_errors(
    template: str, phd_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, err = run(["suggest", "v.mp4", "-k", "1", "--name", template], capsys)
    assert code == 2 and stdout == "", err
    assert err.startswith("phd: error: --name ") and len(err.splitlines()) == 1, err
    assert "internal error" not in err


# -- row 8 --------------------------------------------------------------------
def test_a_score_in_the_name_is_checked_at_its_longest_before_any_work(
    phd_home: Path, tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from phdcli.fsutil import name_max

    out = tmp_path / "o"
    out.mkdir()
    room = name_max(out) - len(".gif")
    # "0.0" fitted; a real score (up to 24 characters) did not, after C3D.
    fits_zero = "s" * (room - len("0.0")) + "{score}"
    line = one_error(run(["suggest", str(tiny), "--out", str(out), "--name", fits_zero],
                         capsys), code=2)
    assert "too long" in line
    # Room for the longest score: it is written, whatever the score.
    fits_any = "s" * (room - len("-2.2250738585072014e-308")) + "{score}"
    code, stdout, err = run(["suggest", str(tiny), "--out", str(out), "-k", "1", "--json",
                             "--name", fits_any], capsys)
    assert code == 0, err
    (pick,) = json_doc(stdout)["results"][0]["suggestions"]
    assert Path(pick["path"]).is_file()


# -- row 9 --------------------------------------------------------------------
def test_an_unknown_user_or_overlong_path_fails_alone_in_a_batch(
    phd_home: Path, tiny: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = ["~nosuchuser-phd/x.mp4", "a" * 300 + ".mp4", "b/" + "é" * 140 + ".mp4"]
    args = ["suggest", str(tiny), *bad, "--dry-run", "-k", "1"]
    code, stdout, err = run([*args, "--json"], capsys)
    assert code == 1 and "internal error" not in err, err
    doc = json_doc(stdout)
    assert [r["input"] for r in doc["results"]] == [str(tiny)]
    assert [e["input"] for e in doc["errors"]] == bad
    assert all("\n" not in e["error"] for e in doc["errors"])
    assert len([x for x in err.splitlines() if x.startswith("phd: error: ")]) == 3
    code, stdout, _ = run([*args, "--jsonl"], capsys)
    docs = [json_doc(line) for line in stdout.splitlines()]
    assert code == 1 and [d["type"] for d in docs] == ["pick", "failure", "failure", "failure"]


# -- row 10 -------------------------------------------------------------------
@pytest.mark.parametrize("flags", [
    ["--fps", "1e-9"], ["--fps", "0.5"], ["--width", "1"], ["--width", "100000"],
    ["--max-megapixels", "1e308"], ["--gif-length", "0.00001"],
    ["--gif-length", "0.05", "--fps", "10"], ["--max-size", "1e308"],
    ["--max-filesize", "1e308"], ["-k", "100000000000000000000"],
    ["--heatmap-weight", "1e300"], ["--length", "1e12"], ["--min-gap", "1e300"],
])
def test_numbers_that_would_fail_late_are_refused_up_front(
    flags: list[str], phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error(run(["suggest", "v.mp4", "--out", str(tmp_path / "o"), *flags], capsys),
                     code=2)
    assert line.startswith(f"phd: error: {flags[0]} ") or f"{flags[0]}:" in line, line
    assert not (tmp_path / "o").exists()


def test_an_extreme_aspect_ratio_and_a_sub_frame_span_still_write_their_span(
    phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from phdcli.media.gifs import scaled_size

    assert scaled_size(480, (10000, 2)) == (480, 2)  # ffmpeg's own -2 gives 480x0
    assert scaled_size(160, (160, 90)) == (160, 90) and scaled_size(101, (160, 90)) == (101, 56)
    wide = media.lavfi_video(tmp_path / "wide.mp4", duration_s=2.0, size="2000x2")
    code, stdout, err = run(["suggest", str(wide), "-k", "1", "--json", "--out",
                             str(tmp_path / "o")], capsys)
    assert code == 0, err
    (pick,) = json_doc(stdout)["results"][0]["suggestions"]
    frames, length_s = gif_stats(Path(pick["path"]))
    assert frames == 20 and length_s == pytest.approx(pick["end"] - pick["start"])
    # A span shorter than a frame at the asked fps is one frame as long as the span,
    # not ffmpeg's "Error writing trailer", nor the rest of the video after "-t 0.000".
    clip = write_clip(wide, 0.5, 0.55, tmp_path / "blink.gif", GifOptions(fps=10, width=64),
                      frame=(2000, 2))
    assert gif_stats(clip.path) == (1, pytest.approx(0.05))


# -- row 12 -------------------------------------------------------------------
@pytest.mark.parametrize("line", ["k = 1979-05-27", "out = 1979-05-27T07:32:00",
                                  "fps = 07:32:00", "one_shot = 1", "name = 3"])
def test_a_wrong_typed_config_value_is_refused_naming_the_file_and_key(
    line: str, phd_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = _config_file(phd_home, f"[suggest]\n{line}\n")
    key = line.split(" ")[0]
    for args in (["config", "--json"], ["config"], ["suggest", "v.mp4"]):
        error = one_error(run(args, capsys), code=2)
        assert error.startswith(f"phd: error: config file {path}: {key} must be "), error
        assert "PHD_" not in error


def test_a_bad_number_names_the_config_key_or_variable_it_came_from(
    phd_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = _config_file(phd_home, "[suggest]\nk = 0\n")
    line = one_error(run(["suggest", "v.mp4"], capsys), code=2)
    assert line.endswith(f"(from k in the config file {path})") and "PHD_K" not in line
    monkeypatch.setenv("PHD_K", "0")
    assert one_error(run(["suggest", "v.mp4"], capsys), code=2).endswith("(from PHD_K)")
    assert one_error(run(["suggest", "v.mp4", "-k", "0"], capsys), code=2).endswith("got 0")


# -- row 20 -------------------------------------------------------------------
@pytest.mark.parametrize("template", [
    "a\n{stem}_{rank}", "{stem}\r{rank}", "\x1b[31m{stem}{rank}", "{stem}\u202e{rank}",
    "-{stem}_{rank}", "{score}_{stem}_{rank}", " ", "", "{stem:.0}", " {stem}_{rank}",
    "{stem}_{rank:\n>3}", "{rank: }_{stem}",
])
def test_names_with_control_characters_a_leading_dash_or_blank_are_usage_errors(
    template: str, phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error(run(["suggest", "v.mp4", "-k", "1", "--out", str(tmp_path / "o"),
                          "--name", template], capsys), code=2)
    assert line.startswith("phd: error: --name ")
    assert not (tmp_path / "o").exists()


def test_the_report_command_keeps_input_in_other_values_literally(tmp_path: Path) -> None:
    import shlex

    from typer.main import get_command

    from phdcli.cli import app
    from phdcli.cli.suggest import _reproduce_command
    from phdcli.suggest.report import command_words

    command = get_command(app).commands["suggest"]  # type: ignore[attr-defined]
    typed = command.make_context("suggest", ["v.mp4", "--out", "rep{input}", "--user",
                                             "{input}", "--report"])
    shown = command_words(_reproduce_command(typed), "my {input}.mp4")
    assert shlex.split(shown) == ["phd", "suggest", "my {input}.mp4", "--out", "rep{input}",
                                  "--report", "--user", "{input}"]
