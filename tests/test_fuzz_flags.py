"""Property-based fuzzing of ``--name`` and of the numeric flags (Hypothesis).

The promise under test: a template or number is refused before any work
(exit 2, one line naming its flag), or nothing about it fails later. For
``--name``: any value the fields can take renders a name that is not blank,
hidden, option-like, control-character laden or too long, and the file can
be created. For numbers: ``phd suggest`` on a small real video exits 0 with
every GIF as long as its reported span (to a frame), or 2 in one line.

Seeds are fixed (``derandomize``) so CI sees the same cases every run; a
longer run: ``PHD_FUZZ_EXAMPLES=500 .venv/bin/pytest -m heavy tests/test_fuzz_flags.py``.
Runs are cold starts (an empty history ranks by position: no C3D).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runphd import json_doc
from runphd import run_cli as run

from phdcli.errors import UsageError
from phdcli.fsutil import name_max
from phdcli.media.gifs import gif_stats
from phdcli.sources.inputs import safe_stem
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.names import FIELDS, name_problem
from phdcli.suggest.outputs import check_name_template, output_path
from phdcli.suggest.results import Explanation, Suggestion
from tests import media

NAME_EXAMPLES = 150  # pure Python: ~1 s
FLAG_EXAMPLES = 10  # each accepted case writes a GIF
HEAVY_EXAMPLES = int(os.environ.get("PHD_FUZZ_EXAMPLES", "200"))


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# -- --name ---------------------------------------------------------------------
_HOSTILE_CHARS = list("{}/\\.-: \n\r\t\x00\x1b\u202e\u200bé日")
literals = st.one_of(st.text(alphabet="abxyz_-", max_size=5),
                     st.text(alphabet=st.sampled_from(_HOSTILE_CHARS), max_size=3),
                     st.text(max_size=3))


@st.composite
def specs(draw: st.DrawFn, sane: bool, field: str) -> str:
    """A format spec from the grammar's parts: plausible ones, or hostile ones."""
    fills = ["", "", "0", "x", "_"] if sane else ["", "0", " ", "-", "\n", "é", "\u200b"]
    widths = st.integers(0, 40) if sane else st.one_of(
        st.integers(0, 300), st.sampled_from(["8000000000", "9" * 60]))
    precisions = st.integers(0, 20) if sane else st.integers(0, 300)
    parts = [draw(st.sampled_from(fills)) + draw(st.sampled_from(["<", ">", "^", "="]))
             if draw(st.booleans()) else "",
             draw(st.sampled_from(["", "", "+", "-", " "])), draw(st.sampled_from(["", "#"])),
             draw(st.sampled_from(["", "0"])),
             draw(st.one_of(st.just(""), widths.map(str))),
             draw(st.sampled_from(["", "", ",", "_"])),
             draw(st.one_of(st.just(""), precisions.map(lambda n: f".{n}"))),
             draw(st.sampled_from(["", "s", "d", "c", "e", "f", "F", "g", "G", "n", "x", "b", "%",
                                   "o", "X", "E"])
                  if not sane or draw(st.integers(0, 3)) == 0 else
                  st.sampled_from(["", "s"] if field == "stem" else ["", "f", "e", "g", "%"]
                                  + (["d", "x", "b"] if field == "rank" else [])))]
    return "".join(parts)


@st.composite
def templates(draw: st.DrawFn) -> str:
    """Mostly plausible templates (the documented fields, plain specs, ordinary
    text), some hostile (attribute access, conversions, control characters)."""
    sane = draw(st.integers(0, 3)) > 0
    pieces = []
    fields = list(draw(st.lists(st.sampled_from(FIELDS), max_size=3)))
    if sane:
        fields = ["stem", "rank", *fields]
    for field in draw(st.permutations(fields)) if sane else fields + ["rank[0]"]:
        if not sane:
            field = draw(st.sampled_from([field, "stem.__class__", "", "0", "nope"]))
        conversion = "" if sane else draw(st.sampled_from(["", "!r", "!s", "!x"]))
        spec = draw(st.one_of(st.just(""), specs(sane, field),
                              *(() if sane else (st.text(max_size=4),))))
        text = draw(st.text(alphabet="abxyz_-.", max_size=4) if sane else literals)
        pieces.append(text + "{" + field + conversion + (":" + spec if spec else "") + "}")
    return "".join(pieces) + draw(st.text(alphabet="abxyz_-.", max_size=4) if sane else literals)


def _fuzz_names(examples: int, out: Path) -> None:
    out.mkdir(exist_ok=True)
    limit = name_max(out)

    @_settings(examples)
    @given(template=templates(), k=st.integers(1, 12), n_videos=st.integers(1, 3),
           data=st.data())
    def case(template: str, k: int, n_videos: int, data: st.DataObject) -> None:
        try:
            cfg = SuggestConfig(name_template=template, k=k, out_dir=out)
            check_name_template(cfg.name, k, n_videos, "gif", out)
        except UsageError as exc:
            assert str(exc).startswith("--name ") and "\n" not in str(exc), exc
            return
        for _ in range(3):  # accepted: every value in the fields' domains gives a good name
            stem = safe_stem(data.draw(st.text(max_size=120)))
            copy = data.draw(st.integers(1, n_videos))
            stem = stem if copy == 1 else f"{stem}-{copy}"
            pick = Suggestion(
                data.draw(st.integers(1, k)), data.draw(st.floats(0, 1e9, exclude_max=True)),
                data.draw(st.floats(0, 1e9, exclude_max=True)), 0.0, 1.0,
                data.draw(st.floats(-1e9, 1e9, exclude_min=True, exclude_max=True)),
                Explanation(0, 0, 0, None, None))
            path = output_path(out, cfg.name, stem, pick, "gif")
            assert path.parent == out and name_problem(path.stem) is None
            assert len(os.fsencode(path.name)) <= limit, (template, path.name)
            path.write_bytes(b"")  # the file system takes it
            path.unlink()

    case()


def test_fuzzed_name_templates_fail_early_or_never(tmp_path: Path) -> None:
    _fuzz_names(NAME_EXAMPLES, tmp_path / "out")


@pytest.mark.heavy
def test_fuzzed_name_templates_fail_early_or_never_long(tmp_path: Path) -> None:
    _fuzz_names(HEAVY_EXAMPLES * 10, tmp_path / "out")


# -- numeric flags --------------------------------------------------------------
_HOSTILE_FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e-300", "1e-9", "1e308", "-0.0"]
_HOSTILE_INTS = ["-1", "0", "1", "100000", str(2**63), str(10**30)]
_SANE: dict[str, Any] = {  # values a user might type; the video is 2.5 s of 64x48
    "--fps": st.floats(0.5, 120), "--width": st.integers(1, 9000),
    "--gif-length": st.floats(0.001, 8), "--length": st.floats(0.5, 4),
    "--min-gap": st.floats(0, 4), "-k": st.integers(1, 4),
    "--max-megapixels": st.floats(0.01, 2000), "--heatmap-weight": st.floats(-2000, 2000),
    "--max-size": st.floats(1, 1e12), "--max-filesize": st.floats(1e-3, 1e12),
    "--stall-timeout": st.floats(1e-3, 1e9), "--download-timeout": st.floats(1e-3, 1e9),
    "--max-height": st.integers(-5, 10**6),
}
_INT_FLAGS = {"--width", "-k", "--max-height"}


@st.composite
def numeric_flags(draw: st.DrawFn) -> dict[str, str]:
    chosen = draw(st.lists(st.sampled_from(sorted(_SANE)), min_size=1, max_size=3,
                           unique=True))
    flags = {}
    for flag in chosen:
        hostile = _HOSTILE_INTS if flag in _INT_FLAGS else _HOSTILE_FLOATS
        hostile_value = draw(st.integers(0, 3)) == 0  # mostly values a user might type
        flags[flag] = draw(st.sampled_from(hostile) if hostile_value else _SANE[flag].map(repr))
    return flags


def _check_flags(flags: dict[str, str], video: Path, out: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = [word for pair in flags.items() for word in pair]
    code, stdout, err = run(["suggest", str(video), "--json", "--force", "--out", str(out),
                             "-k", "1", *argv], capsys)
    assert "Traceback" not in err and "internal error" not in err, (flags, err)
    if code == 2:
        (line,) = err.strip().splitlines()
        assert line.startswith("phd: error: ") and any(f in line for f in flags), (flags, line)
        assert stdout == ""
        return
    doc = json_doc(stdout)
    if code == 1:  # a budget the user set that this video is over: the input's own failure
        assert doc["errors"] and all("pixel budget" in e["error"] for e in doc["errors"]), err
        return
    assert code == 0, (flags, err)
    fps = float(flags.get("--fps", 10.0))
    for pick in doc["results"][0]["suggestions"]:
        frames, length_s = gif_stats(Path(pick["path"]))
        span_s = pick["end"] - pick["start"]
        assert frames >= 1 and abs(length_s - span_s) <= 0.5 / fps + 0.011, (flags, pick)


def _fuzz_flags(examples: int, video: Path, tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> None:
    counter = iter(range(10**9))

    @_settings(examples)
    @given(flags=numeric_flags())
    def case(flags: dict[str, str]) -> None:
        _check_flags(flags, video, tmp_path / f"out{next(counter)}", capsys)

    case()


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.lavfi_video(tmp_path_factory.mktemp("flags") / "small.mp4", duration_s=2.5,
                             size="64x48")


def test_fuzzed_numeric_flags_fail_early_or_never(
    small_video: Path, phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _fuzz_flags(FLAG_EXAMPLES, small_video, tmp_path, capsys)


@pytest.mark.heavy
def test_fuzzed_numeric_flags_fail_early_or_never_long(
    small_video: Path, phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _fuzz_flags(HEAVY_EXAMPLES, small_video, tmp_path, capsys)
