"""The report page itself, without a run: its size with a real-size history, the
model row in words, the command that reproduces the run, the home as ``~``.

The pages are rendered from hand-made results (a two-hour video, many picks)
with thumbnails made by real ffmpeg from real footage; the browser test in
tests/test_report.py renders a real run's page.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from phdcli.media.thumbs import thumbnail
from phdcli.suggest.report import (
    PAGE_BUDGET,
    RunInfo,
    command_words,
    model_terms,
    model_words,
    render_video_page,
)
from phdcli.suggest.results import Explanation, Suggestion, VideoSuggestions
from phdcli.suggest.timeline import MAX_BARS, Timeline


@pytest.fixture
def thumbs(real_size_gifs: list[Path], phd_home: Path) -> list[bytes]:
    made = [thumbnail(gif) for gif in real_size_gifs]
    assert all(made)
    return [m for m in made if m is not None]


def long_video(k: int, out: Path, video: str, duration_s: float = 7200.0,
               ) -> tuple[VideoSuggestions, Timeline]:
    """A two-hour video in 5 s segments with ``k`` picks, each nearest a different
    history GIF, the site's heatmap and two kept spans."""
    rng = np.random.default_rng(0)
    starts = np.arange(0.0, duration_s, 5.0)
    ends = starts + 5.0
    scores = rng.normal(size=len(starts))
    excluded = np.zeros(len(starts), dtype=bool)
    excluded[10:12] = True
    order = np.argsort(-np.where(excluded, -np.inf, scores))[:k]
    picks = [Suggestion(rank, float(starts[i]), float(ends[i]), float(starts[i]),
                        float(ends[i]), float(scores[i]),
                        Explanation(0.0, float(scores[i]) - 0.01, 0.01, f"liked {rank:02d}.gif",
                                    0.8, 0.5, 0.0), out / f"talk_{rank:02d}.gif", 400_000)
             for rank, i in enumerate(order, 1)]
    edges = np.linspace(0.0, duration_s, 101)
    heatmap = tuple((float(a), float(b), float(v)) for a, b, v in
                    zip(edges[:-1], edges[1:], rng.random(100), strict=True))
    result = VideoSuggestions(video, Path(video), duration_s, len(starts), picks, heatmap)
    return result, Timeline(starts, ends, scores, excluded, ((50.0, 60.0),), heatmap)


def run_info(home: Path, names: list[str], thumbs: list[bytes],
             terms: tuple[str, ...] = ("svm-d", "prior")) -> RunInfo:
    return RunInfo(features="C3D c3d-sports1m@0123abcd, fc6", terms=terms,
                   history=f"profile 'default': {len(names)} GIFs in "
                           f"{home / '.local/share/phd/profiles/default/history'}",
                   command="phd suggest {input} --report", hand_set=("svm-d", "fusion"),
                   thumbnails={name: thumbs[i % len(thumbs)] for i, name in enumerate(names)})


def data_uris(page: str) -> list[str]:
    return re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)


def test_a_long_video_with_a_real_size_history_gives_a_page_one_can_mail(
    real_size_gifs: list[Path], thumbs: list[bytes], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "ann"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    out = home / "gifs"
    whole = sum(g.stat().st_size for g in real_size_gifs)
    assert whole > 1_500_000  # embedded whole, these would make the page MBs

    result, timeline = long_video(10, out, str(home / "videos" / "talk.mp4"))
    names = [f"liked {rank:02d}.gif" for rank in range(1, 11)]
    page = render_video_page(result, timeline, run_info(home, names, thumbs), out, "talk")
    assert len(page.encode()) <= PAGE_BUDGET
    uris = data_uris(page)
    assert len(uris) == 10  # every nearest history GIF has its picture
    assert all(len(u) * 3 / 4 <= 50_000 for u in uris)
    assert page.count('<rect class="seg') <= MAX_BARS < len(timeline.starts_s)
    assert 'src="talk_01.gif"' in page  # the output GIFs are linked, relatively
    # The home is ~, nothing else names the machine.
    assert str(home) not in page and "~/videos/talk.mp4" in page
    assert "~/.local/share/phd/profiles/default/history" in page

    # Forty picks, each nearest another GIF: pictures stop where the page would grow past.
    result, timeline = long_video(40, out, str(home / "videos" / "talk.mp4"))
    names = [f"liked {rank:02d}.gif" for rank in range(1, 41)]
    page = render_video_page(result, timeline, run_info(home, names, thumbs), out, "talk")
    assert len(page.encode()) <= PAGE_BUDGET
    assert 10 <= len(data_uris(page)) < 40
    assert page.count('class="history h') == 40  # each is still named on its card


def test_the_model_row_says_what_ranked_and_what_is_set_by_hand(tmp_path: Path) -> None:
    from phdcli.ranking.model import default_model_path, load_model

    bundled = load_model(default_model_path())
    assert model_terms(bundled, has_history=True) == (("svm-d", "prior"), ("svm-d", "fusion"))
    assert model_terms(bundled, has_history=False)[0] == ("prior",)

    words = model_words(("svm-d", "prior"), ("svm-d", "fusion"))
    assert words.startswith("ranked by your history's closest GIFs (SVM-D) + position in the "
                            "video.")
    assert "Trained: position in the video." in words
    assert "Set by hand, not trained: the closest-GIFs term" in words
    assert "how much each term counts" in words
    # A cold run (no history): only what ranked is named; nothing is added up.
    assert model_words(("prior",), ("svm-d", "fusion")) == (
        "ranked by position in the video. Trained: position in the video.")
    with_heat = model_words(("svm-d", "phd-ca", "prior", "heatmap"), (), 2.0)
    assert "a content model (PHD-CA)" in with_heat and "heatmap's weight (2)" in with_heat
    assert "Trained: your history's closest GIFs (SVM-D), a content model (PHD-CA), position" \
        in with_heat

    # On the page: the words, the bars of the terms that ranked, no file or jargon.
    result, timeline = long_video(3, tmp_path, "talk.mp4", duration_s=60.0)
    cold = RunInfo(features="none needed", history="none", command="phd suggest {input}",
                   terms=("prior",), hand_set=("svm-d", "fusion"))
    page = render_video_page(result, timeline, cold, tmp_path, "talk")
    assert "ranked by position in the video." in page
    assert ">position<" in page and ">closest GIFs<" not in page
    for jargon in ("safetensors", "phd-fused", "h_svm", "omega", "provenance", "built_by"):
        assert jargon not in page


def test_the_command_reproduces_every_flag_and_keeps_input_in_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.main import get_command

    from phdcli.cli import app
    from phdcli.cli.suggest import _reproduce_command

    home = tmp_path / "ann"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PHD_K", "2")  # from the environment: pinned as -k 2
    command = get_command(app).commands["suggest"]  # type: ignore[attr-defined]
    video = str(home / "my videos" / "talk.mp4")
    args = [video, "--out", str(home / "gifs {input}"), "--name", "{input}-{rank}",
            "--explain", "--json", "-q", "--width", "96", "--no-report", "--force",
            "--c3d-weights", str(home / "models" / "c3d.pth")]
    typed = command.make_context("suggest", list(args))
    reproduced = _reproduce_command(typed)
    assert reproduced.startswith("phd suggest {input} ")
    for words in ("-k 2", "--out ~/'gifs {input}'", "--name '{input}-{rank}'", "--explain",
                  "--json", "--quiet", "--width 96", "--no-report", "--force",
                  "--c3d-weights ~/models/c3d.pth"):
        assert f" {words}" in reproduced, (words, reproduced)

    shown = command_words(reproduced, video)  # what the page shows
    assert shown.startswith("phd suggest ~/'my videos/talk.mp4' -k 2")
    assert "'{input}-{rank}'" in shown and "~/'gifs {input}'" in shown
    assert str(home) not in shown

    # Typed into a shell on a machine without PHD_K, it parses to the same settings.
    monkeypatch.delenv("PHD_K")
    words = [os.path.expanduser(w) if w.startswith("~/") else w
             for w in shlex.split(shown)]
    again = command.make_context("suggest", words[2:])
    assert again.params == typed.params
