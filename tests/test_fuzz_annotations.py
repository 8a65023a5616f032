"""Property-based fuzzing of the annotation parser (Hypothesis), as tests/test_fuzz.py
does for videos and GIFs.

CSV files are drawn from hostile columns (ids that are paths, hidden names or
text; times that are inf, nan, 1e308, negative, hex, empty; odd flags), rows
with a field too many or too few, a BOM, garbage lines. Whatever the file:
``load_annotations`` returns users whose every GIF and video passed the row
checks (plain ids, finite times in range), or raises one InputError line;
never another exception. A file it accepts evaluates to finite metrics (or
one InputError when no video can be scored).

Seeds are fixed (``derandomize``) so CI sees the same cases every run. A
longer run (README, "Failure behaviour")::

    PHD_FUZZ_EXAMPLES=2000 .venv/bin/pytest -m heavy tests/test_fuzz_annotations.py
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phdcli.errors import InputError
from phdcli.training.annotations import (
    COLUMNS,
    END_SLACK_S,
    MAX_DURATION_S,
    PLAIN_ID,
    load_annotations,
)
from phdcli.training.evaluate import evaluate

DEFAULT_EXAMPLES = 100
HEAVY_EXAMPLES = int(os.environ.get("PHD_FUZZ_EXAMPLES", "2000"))

_HOSTILE_IDS = st.one_of(st.sampled_from(["-dash_id", "a.b", "../x", "/etc/passwd", ".hidden",
                                           "a b", "x\\y", "", " v1 ", "v" * 129]),
                         st.text(max_size=10))
_HOSTILE_TIMES = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e308", "-1", "0", "", " 5 ", "0x10", "1_0",
                     "1e-320", "172800", "172801", "-0", "+3", "61", "40.5"]),
    st.integers(-5, 400).map(str),
    st.floats().map(repr),
)
_HOSTILE_USERS = st.one_of(st.sampled_from(["", "a\nb", "x" * 200]), st.text(max_size=6))
_HOSTILE_FLAGS = st.sampled_from(["true", "0", "1", "maybe", "", "TRUE "])
# Plausible rows, so that many files pass: v1 is each user's last video (60 s), v2 a
# history video (40 s), v3 one of unknown duration.
_VIDEOS = {"v1": ("60", "True"), "v2": ("40", "False"), "v3": ("-1", "False")}


def _mostly(draw: st.DrawFn, plausible: st.SearchStrategy[str],
            hostile: st.SearchStrategy[str]) -> str:
    """A plausible value three times in four, a hostile one otherwise."""
    return draw(hostile if draw(st.integers(0, 3)) == 0 else plausible)


@st.composite
def annotation_files(draw: st.DrawFn) -> bytes:
    """A CSV: usually the right header, then rows of mostly plausible, partly hostile fields."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(COLUMNS)
    if draw(st.integers(0, 19)) == 0:
        header = draw(st.permutations(header))[: draw(st.integers(1, len(header)))]
    writer.writerow(header)
    users = draw(st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=1, max_size=3,
                          unique=True))
    rows = [["v1", "10", "3", user, "60", "True"] for user in users]
    for _ in range(draw(st.integers(0, 6))):
        youtube_id = _mostly(draw, st.sampled_from(list(_VIDEOS)), _HOSTILE_IDS)
        video_s, flag = _VIDEOS.get(youtube_id, ("60", "False"))
        start = _mostly(draw, st.floats(0, 35).map(lambda f: f"{f:.3f}"), _HOSTILE_TIMES)
        duration = _mostly(draw, st.floats(0.1, 5).map(lambda f: f"{f:.3f}"), _HOSTILE_TIMES)
        row = [youtube_id, start, duration, _mostly(draw, st.sampled_from(users), _HOSTILE_USERS),
               _mostly(draw, st.just(video_s), _HOSTILE_TIMES),
               _mostly(draw, st.just(flag), _HOSTILE_FLAGS)]
        extra = draw(st.integers(-1, 1)) if draw(st.integers(0, 9)) == 0 else 0
        rows.append(row[:extra] if extra < 0 else row + ["x"] * extra)
    writer.writerows(draw(st.permutations(rows)))
    if draw(st.integers(0, 9)) == 0:
        out.write(draw(st.text(max_size=20)))
    data = out.getvalue().encode("utf-8", "surrogatepass")  # lone surrogates: not UTF-8
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data


def check_annotations(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    try:
        users = load_annotations(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
        return
    for user in users:
        assert user.user_id and user.user_id.isprintable()
        for video in [user.last, *user.history]:
            assert PLAIN_ID.fullmatch(video.youtube_id), video.youtube_id
            known = video.duration_s != -1
            assert not known or 0 < video.duration_s <= MAX_DURATION_S
            for gif in video.gifs:
                assert math.isfinite(gif.start_s) and math.isfinite(gif.duration_s)
                assert 0 <= gif.start_s < MAX_DURATION_S and 0 < gif.duration_s <= MAX_DURATION_S
                if known:
                    assert gif.start_s < video.duration_s
                    assert gif.end_s <= video.duration_s + END_SLACK_S
    try:
        result = evaluate(users, "random", seed=0)
    except InputError:
        return  # no evaluable video: one line, as the CLI says it
    for value in (result.map, result.nmsd, result.recall5):
        assert math.isfinite(value) and 0 <= value <= 100


def _run(examples: int, tmp_path: Path) -> None:
    path = tmp_path / "fuzzed.csv"

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=annotation_files())
    def case(data: bytes) -> None:
        check_annotations(data, path)

    case()


def test_fuzzed_annotations_parse_or_fail_in_one_line(tmp_path: Path) -> None:
    _run(DEFAULT_EXAMPLES, tmp_path)


@pytest.mark.heavy
def test_fuzzed_annotations_parse_or_fail_in_one_line_long(tmp_path: Path) -> None:
    _run(HEAVY_EXAMPLES, tmp_path)
