"""Which segments become picks: the cold start, the gap between picks, one shot per GIF.

The footage here is built with known cuts (six lavfi sources of 3.52 s
each, concatenated: a cut every 3.52 s, so every fixed 5 s segment but one
straddles a cut), and the history is empty unless a test gives one: the
bundled model then ranks by the temporal prior alone and C3D never runs,
so these tests need no weights.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from runphd import run_cli

from phdcli.media.segments import detect_cuts
from phdcli.ranking.model import default_model_path, load_model
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.picks import CUT_MARGIN_S, choose, fit_in_shot
from phdcli.suggest.pipeline import suggest_batch
from tests.media import run_ffmpeg

SOURCES = ["testsrc2", "mandelbrot", "smptehdbars", "cellauto=rule=110", "rgbtestsrc",
           "pal75bars", "testsrc", "yuvtestsrc"]
SHOT_S = 3.52  # 88 frames at 25 fps


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """28.2 s with a cut every 3.52 s (seven cuts): six 5 s segments, and a sliver."""
    out = tmp_path_factory.mktemp("cuts") / "shots.mp4"
    inputs: list[str] = []
    chains = []
    for i, source in enumerate(SOURCES):
        sep = ":" if "=" in source else "="
        inputs += ["-t", "3.5", "-f", "lavfi", "-i", f"{source}{sep}size=320x240:rate=25"]
        chains.append(f"[{i}:v]scale=320:240,setsar=1,fps=25,format=yuv420p[v{i}]")
    joined = "".join(f"[v{i}]" for i in range(len(SOURCES)))
    graph = ";".join(chains) + f";{joined}concat=n={len(SOURCES)}:v=1:a=0[out]"
    run_ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]", "-c:v", "libx264",
               "-preset", "ultrafast", str(out))
    return out


def test_the_footage_has_the_cuts_it_was_built_with(cuts_video: Path) -> None:
    assert detect_cuts(cuts_video) == pytest.approx([SHOT_S * i for i in range(1, 8)], abs=0.05)
    assert detect_cuts(cuts_video, 2.0, 9.0) == pytest.approx([SHOT_S, 2 * SHOT_S], abs=0.05)


def test_choose_keeps_picks_a_gap_apart_and_zero_gives_the_plain_top_k() -> None:
    starts = np.arange(0.0, 30.0, 5.0)
    ends = starts + 5.0
    best_first = np.array([2, 3, 1, 5, 0, 4])  # 10-15 s, then its neighbour 15-20 s...

    def whole(i: int) -> tuple[float, float]:
        return float(starts[i]), float(ends[i])

    assert [c.segment for c in choose(best_first, starts, ends, 3, 0.0, whole)] == [2, 3, 1]
    spread = choose(best_first, starts, ends, 3, 5.0, whole)
    assert [c.segment for c in spread] == [2, 5, 0]
    for a in spread:
        for b in spread:
            if a is not b:
                assert max(a.start_s, b.start_s) - min(a.end_s, b.end_s) >= 5.0
    # A pick whose shot is too short gives way to the next candidate.
    dropped = choose(best_first, starts, ends, 2, 5.0, whole,
                     fit=lambda a, b: None if a == 10.0 else (a, b))
    assert [c.segment for c in dropped] == [3, 1]


def test_fit_in_shot_trims_to_the_longest_piece_or_drops_it() -> None:
    assert fit_in_shot(10.0, 15.0, [], 1.5) == (10.0, 15.0)
    assert fit_in_shot(10.0, 15.0, [9.0, 16.0], 1.5) == (10.0, 15.0)  # cuts outside
    assert fit_in_shot(10.0, 15.0, [11.0], 1.5) == (11.0 + CUT_MARGIN_S, 15.0)
    assert fit_in_shot(10.0, 15.0, [14.0], 1.5) == (10.0, 14.0 - CUT_MARGIN_S)
    assert fit_in_shot(10.0, 15.0, [11.2, 12.4, 13.6], 1.5) is None  # every shot 1.2 s


def test_cold_start_runs_no_c3d_needs_no_weights_and_says_so_once(
    cuts_video: Path, phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other.mp4"
    other.symlink_to(cuts_video)
    code, out, err = run_cli(["suggest", str(cuts_video), str(other), "-k", "3", "--json",
                              "--out", str(tmp_path / "gifs"), "--width", "96"], capsys)
    assert code == 0, err  # no C3D weights anywhere in this home: none were needed
    cold = [line for line in err.splitlines() if "history is empty" in line]
    assert len(cold) == 1 and "phd history add" in cold[0]  # once for the batch
    results = json.loads(out)["results"]
    assert [r["ranked_by"] for r in results] == [["prior"], ["prior"]]
    assert not (phd_home / "cache" / "features").exists()  # not a clip was decoded for C3D


def test_cold_start_with_a_content_model_still_needs_features() -> None:
    model = load_model(default_model_path())
    assert model.active_terms(0) == ("prior",) and not model.needs_features(0)
    assert model.active_terms(3) == ("svm-d", "prior") and model.needs_features(3)
    with_fnn = replace(model, fnn=model.prior)  # any content term reads the features
    assert with_fnn.needs_features(0) and with_fnn.active_terms(0)[0] == "phd-ca"


def test_default_picks_are_a_segment_apart_and_min_gap_zero_lets_them_touch(
    cuts_video: Path, phd_home: Path, tmp_path: Path,
) -> None:
    def spans(**options: object) -> list[tuple[float, float]]:
        config = SuggestConfig(k=3, dry_run=True, one_shot=False, **options)  # type: ignore[arg-type]
        (result,) = suggest_batch([str(cuts_video)], config).results
        return [(s.segment_start_s, s.segment_end_s) for s in result.suggestions]

    spread = spans()
    assert len(spread) == 3
    for i, a in enumerate(spread):
        for b in spread[i + 1:]:
            assert max(a[0], b[0]) - min(a[1], b[1]) >= 5.0, spread
    touching = sorted(spans(min_gap_s=0.0))  # the prior's plain top 3: neighbours
    assert touching[0][1] == touching[1][0] and touching[1][1] == touching[2][0], touching


def test_no_output_gif_holds_a_cut_unless_the_rule_is_off(
    cuts_video: Path, phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    def gifs(*flags: str) -> list[dict[str, object]]:
        out = tmp_path / ("-".join(flags) or "default")
        code, stdout, err = run_cli(["suggest", str(cuts_video), "-k", "3", "--json",
                                     "--out", str(out), "--width", "96", *flags], capsys)
        assert code == 0, err
        return json.loads(stdout)["results"][0]["suggestions"]

    one_shot = gifs()
    assert len(one_shot) == 3
    for pick in one_shot:
        assert detect_cuts(Path(str(pick["path"]))) == [], pick
        segment = pick["segment"]
        assert segment["start"] <= pick["start"] < pick["end"] <= segment["end"]  # type: ignore[index]
    trimmed = [p for p in one_shot if p["end"] - p["start"] < 4.9]  # type: ignore[operator]
    assert trimmed  # the rule had work to do: these segments straddle cuts
    whole = gifs("--no-one-shot")
    assert any(detect_cuts(Path(str(p["path"]))) for p in whole)


def test_a_kept_cold_start_gif_keeps_its_span_without_features(
    cuts_video: Path, c3d_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    mmaction2_weights: Path,
) -> None:
    code, out, err = run_cli(["suggest", str(cuts_video), "-k", "1", "--json", "--out",
                              str(tmp_path / "gifs"), "--width", "96"], capsys)
    assert code == 0, err
    (pick,) = json.loads(out)["results"][0]["suggestions"]
    code, _, err = run_cli(["history", "add", str(pick["path"]), "--c3d-weights",
                            str(mmaction2_weights), "--device", "cpu"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["history", "list", "--json"], capsys)
    (item,) = json.loads(out)
    assert (item["source"]["start_s"], item["source"]["end_s"]) == (pick["start"], pick["end"])
    code, out, err = run_cli(["suggest", str(cuts_video), "-k", "1", "--json", "--dry-run",
                              "--c3d-weights", str(mmaction2_weights), "--device", "cpu"],
                             capsys)
    assert code == 0, err
    (again,) = json.loads(out)["results"][0]["suggestions"]
    assert again["segment"] != pick["segment"]  # the kept span is left out
