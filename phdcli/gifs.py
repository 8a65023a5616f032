"""Write a looping GIF of one stretch of a video, and read a GIF's length back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phdcli.errors import FfmpegError, InputError, UsageError
from phdcli.ffmpeg import run_ffmpeg
from phdcli.fsutil import atomic_path


@dataclass(frozen=True)
class GifOptions:
    fps: float = 10.0
    width: int = 480  # the height follows the aspect ratio, rounded to even


def _filter_graph(options: GifOptions) -> str:
    # Palette made from this very stretch in the same run (one decode):
    # stats_mode=diff favours moving parts, bayer dithering with
    # diff_mode=rectangle only redraws what changed, so GIFs stay small.
    return (
        f"fps={options.fps:g},scale={options.width}:-2:flags=lanczos,split[a][b];"
        "[a]palettegen=stats_mode=diff[p];"
        "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle"
    )


def write_gif(
    video: Path, start_s: float, end_s: float, out: Path, options: GifOptions = GifOptions()
) -> Path:
    """Cut [start_s, end_s] of ``video`` into a looping GIF at ``out``; return ``out``.

    One ffmpeg run: fast input seek (``-ss`` before ``-i``), the two-pass
    palette in one filter graph, ``-loop 0``. The GIF is written beside
    ``out`` under a temp name and renamed only when complete, so a failure
    leaves ``out`` as it was (absent or the old file) and raises FfmpegError.
    """
    video, out = Path(video), Path(out)
    if start_s < 0 or end_s <= start_s:
        raise UsageError(f"GIF span must have 0 <= start < end, got {start_s:g}..{end_s:g} s")
    if options.fps <= 0 or options.width <= 0:
        raise UsageError(f"GIF fps and width must be positive, got {options}")
    with atomic_path(out) as tmp:
        args = [
            "-ss", f"{start_s:.3f}",
            "-t", f"{end_s - start_s:.3f}",
            "-i", str(video),
            "-filter_complex", _filter_graph(options),
            "-an", "-loop", "0",
            str(tmp),
        ]  # fmt: skip
        try:
            run_ffmpeg(args)
        except FfmpegError as exc:
            raise _explain(exc, video, start_s) from exc
        if tmp.stat().st_size == 0:
            # ffmpeg can succeed while encoding nothing (e.g. start past the end).
            raise _explain(FfmpegError(f"ffmpeg wrote no frames for {out.name}"), video, start_s)
    return out


def _explain(exc: FfmpegError, video: Path, start_s: float) -> FfmpegError:
    """Replace ffmpeg's words with the likely cause when it is a start past the end."""
    from phdcli.video import probe  # lazy: PyAV

    try:
        duration_s = probe(video).duration_s
    except InputError as bad:
        return FfmpegError(str(bad), stderr=exc.stderr)
    if start_s >= duration_s:
        return FfmpegError(
            f"{video}: GIF start {start_s:.2f} s is past the end of the video "
            f"({duration_s:.2f} s)",
            stderr=exc.stderr,
        )
    return exc


def gif_stats(path: Path) -> tuple[int, float]:
    """(frame count, duration in seconds) of a GIF, from its frame delays.

    Reads packets only (no decoding). Raises InputError for unreadable files.
    """
    import av

    from phdcli.video import open_video, video_stream

    path = Path(path)
    container = open_video(path)
    try:
        stream = video_stream(container, path)
        tb = stream.time_base
        n_frames = 0
        ticks = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                n_frames += 1
                ticks += packet.duration or 0
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: corrupt GIF data") from exc
        duration_s = float(ticks * tb) if tb is not None else 0.0
        return n_frames, duration_s
    finally:
        container.close()
