"""Write a looping GIF, mp4 or animated WebP of one stretch of a video; read a GIF's length."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from phdcli.errors import FfmpegError, InputError, PhdError, UsageError
from phdcli.fsutil import atomic_path
from phdcli.media.ffgraph import ClipEncoding, clip_args
from phdcli.media.ffmpeg import run_ffmpeg

log = logging.getLogger("phd")


# Output suffix per format; the caller names ``out`` with it (ffmpeg picks the
# muxer from the temp file's suffix, which atomic_path copies from ``out``).
FORMAT_SUFFIX = {"gif": ".gif", "mp4": ".mp4", "webp": ".webp"}

# --- the --max-size search ------------------------------------------------
# Every attempt is a full re-encode (~0.5 s for 4 s at 320 px, seconds for a
# long or wide clip), so the search predicts instead of stepping blindly: it
# fits size ~ quality_factor * fps**a * width**b (exponents measured on
# testsrc2 and real footage, rounded towards the smaller exponent so that a
# prediction errs on the small side) to the last attempt's size and jumps to
# the least-degraded settings predicted to fit, in the order the issue asks:
# quality knob (palette colours for GIF, crf / quality for mp4 / webp), then
# fps, then width. Typical cases need 2-3 attempts; MAX_ATTEMPTS bounds the rest.
MAX_ATTEMPTS = 10
MIN_SPAN_S = 0.01  # one frame at the most a GIF shows (its delays are centiseconds)
FIT_MARGIN = 0.92  # aim a little under the limit: the model is approximate
MIN_STEP = 0.85  # a continuous knob that moves at all moves by at least this
FPS_FLOOR = 5.0
WIDTH_FLOOR = 120
GIF_COLOR_LADDER = (256, 128, 64, 32)
MP4_CRF_LADDER = (23, 28, 33)  # measured: each +6 crf ~0.6x the size
WEBP_QUALITY_LADDER = (75, 50, 30)  # libwebp gains only ~30 % over this range
_EXPONENTS = {"gif": (0.9, 1.6), "webp": (0.95, 1.0), "mp4": (0.3, 1.2)}  # (fps, width)
_KNOB_NAME = {"gif": "colours", "mp4": "crf", "webp": "quality"}


@dataclass(frozen=True)
class GifOptions:
    fps: float = 10.0
    width: int = 480  # the height follows the aspect ratio, rounded to even
    format: str = "gif"  # "gif" | "mp4" | "webp"
    max_size_bytes: int | None = None  # None: write once at these settings
    colors: int = 256  # GIF palette size; mp4 and webp ignore it

    def __post_init__(self) -> None:
        if self.format not in FORMAT_SUFFIX:
            raise UsageError(f"clip format must be one of gif, mp4, webp, got {self.format!r}")
        if not self.fps > 0:  # NaN too
            raise UsageError(f"--fps must be positive, got {self.fps:g}")
        if self.width <= 0:
            raise UsageError(f"--width must be positive, got {self.width}")
        if not 2 <= self.colors <= 256:
            raise UsageError(f"GIF colours must be between 2 and 256, got {self.colors}")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise UsageError(f"maximum clip size must be positive, got {self.max_size_bytes} bytes")


@dataclass(frozen=True)
class WrittenClip:
    path: Path
    size_bytes: int
    fps: float
    width: int
    colors: int | None  # GIF palette size; None for mp4 / webp
    fits: bool  # under options.max_size_bytes (always True without a limit)
    quality: int | None = None  # mp4 crf or webp quality; None for GIF


@dataclass(frozen=True)
class _Settings:
    fps: float
    width: int
    level: int  # index into the format's quality ladder


def _ladder(options: GifOptions) -> tuple[int, ...]:
    if options.format == "gif":
        return (options.colors, *(c for c in GIF_COLOR_LADDER if c < options.colors))
    return MP4_CRF_LADDER if options.format == "mp4" else WEBP_QUALITY_LADDER


def _quality_factor(fmt: str, knob: int) -> float:
    """Relative size at one rung of the quality ladder (measured, see above)."""
    if fmt == "gif":
        return (math.log2(knob) / 8) ** 1.4  # 64 colours ~0.67x, 32 ~0.52x of 256
    if fmt == "mp4":
        return 2.0 ** (-(knob - MP4_CRF_LADDER[0]) / 9)
    return (knob / WEBP_QUALITY_LADDER[0]) ** 0.4


def _even(width: int) -> int:
    return max(2, width - width % 2)  # yuv420p H.264 needs even dimensions


def scaled_size(width: int, frame: tuple[int, int]) -> tuple[int, int]:
    """The clip's (width, height) for ``width`` and a source ``frame`` (w, h as
    displayed): the height follows the aspect ratio rounded to even, as
    ffmpeg's ``scale=W:-2`` rounds it, but never under 2 px on either side
    (a 10000x2 video gives a 480x2 clip, not ffmpeg's "invalid size" after C3D)."""
    src_w, src_h = max(1, frame[0]), max(1, frame[1])
    height = (width * src_h + src_w) // (2 * src_w) * 2  # av_rescale: rounds half up
    return max(2, width), max(2, height)


def _next_settings(
    options: GifOptions, cur: _Settings, size_bytes: int, limit_bytes: int,
    least_fps: float = 0.0,
) -> _Settings | None:
    """Least-degraded settings predicted to fit, or None when all knobs are at their floors
    (``least_fps``: the rate that still gives the clip one frame)."""
    fmt, ladder = options.format, _ladder(options)
    a, b = _EXPONENTS[fmt]
    need = FIT_MARGIN * limit_bytes / size_bytes  # < 1: the size must shrink by this factor
    level = cur.level
    here = _quality_factor(fmt, ladder[level])
    while need < 1 and level + 1 < len(ladder):
        level += 1
        step = _quality_factor(fmt, ladder[level]) / here
        if step <= need:
            need = 1.0
            break
        if level + 1 == len(ladder):
            need /= step
    fps, width = cur.fps, cur.width
    fps_floor = max(min(FPS_FLOOR, options.fps), least_fps)
    if need < 1 and fps > fps_floor:
        fps = max(fps_floor, round(fps * min(MIN_STEP, need ** (1 / a)), 1))
        need /= (fps / cur.fps) ** a
    width_floor = min(WIDTH_FLOOR, options.width)
    if need < 1 and width > width_floor:
        width = max(width_floor, int(width * min(MIN_STEP, need ** (1 / b))))
        if fmt == "mp4":
            width = _even(width)
    new = _Settings(fps=fps, width=width, level=level)
    return None if new == cur else new


def _encoding(options: GifOptions, s: _Settings, frame: tuple[int, int] | None,
              span_s: float, threads: int | None) -> ClipEncoding:
    """One attempt's settings, as phdcli.media.ffgraph builds its command line:
    the span's own number of frames at most, so the file is as long as the span."""
    width, height = (s.width, None) if frame is None else scaled_size(s.width, frame)
    return ClipEncoding(format=options.format, fps=s.fps, width=width,
                        quality=_ladder(options)[s.level], height=height,
                        frames=max(1, round(span_s * s.fps)), threads=threads)


# Clips written at once share this much memory at most: each holds its
# span's frames at the output size (the palette is made from all of them
# before the first is drawn) and a decoder's reference frames at the source's.
PARALLEL_ENCODE_BYTES = 2 * 1024**3
DECODER_FRAMES = 24  # H.264's 16 references, and the frames in flight


def parallel_encodes(n_clips: int, frame: tuple[int, int], options: GifOptions,
                     span_s: float, cores: int) -> tuple[int, int]:
    """(clips written at once, ffmpeg threads each) for ``n_clips`` spans of
    at most ``span_s`` from a ``frame``-sized video.

    A clip's encode is mostly one thread (palette and GIF encoder), so a
    video's clips run side by side, one thread each, all at once where
    memory allows: the cores stay busy until the last one ends, where a
    pool of one per core leaves all but one idle during the last clip
    (``bench.gif_cost`` measures both). Fewer clips than cores share the
    cores as threads.
    """
    width, height = scaled_size(options.width, frame)
    frames = max(1, round(span_s * options.fps))
    each = frames * width * height * 4 + DECODER_FRAMES * frame[0] * frame[1] * 3 // 2
    fits = max(1, PARALLEL_ENCODE_BYTES // max(each, 1))
    at_once = max(1, min(n_clips, 4 * cores, fits))
    return at_once, max(1, cores // at_once)


def _mb(size_bytes: float) -> str:
    return f"{size_bytes / 1e6:.3g}"  # MB as in --max-size: 10**6 bytes


def write_clip(
    video: Path, start_s: float, end_s: float, out: Path, options: GifOptions,
    frame: tuple[int, int] | None = None, threads: int | None = None,
) -> WrittenClip:
    """Cut [start_s, end_s] of ``video`` into a looping clip at ``out``.

    ``options.format`` picks GIF (two-pass palette), mp4 (H.264, no audio) or
    animated WebP; ``out`` should carry the matching FORMAT_SUFFIX. With
    ``options.max_size_bytes`` the clip is re-encoded with fewer colours (or a
    higher crf / lower quality), then a lower fps, then a smaller width until it
    fits, and a PhdError is raised if even the smallest try does not.

    ``frame``: the source's (width, height) as displayed; given, both sides of
    the clip are at least 2 px whatever the aspect ratio (``scaled_size``).
    A span shorter than one frame at ``options.fps`` is written as one frame
    (the rate rises to 1 / span), never as ffmpeg's empty or whole-video output.
    ``threads``: ffmpeg's decoder and filter threads (None: its own choice);
    callers writing several clips at once give each one (``parallel_encodes``).

    Every attempt overwrites one temp file beside ``out`` that is renamed only
    when it is final, so any failure leaves ``out`` as it was (absent or the old
    file) and no temp file behind. ffmpeg failures raise FfmpegError.
    """
    video, out = Path(video), Path(out)
    if not (0 <= start_s < end_s and math.isfinite(end_s)):
        raise UsageError(f"GIF span must have 0 <= start < end, got {start_s:g}..{end_s:g} s")
    if end_s - start_s < MIN_SPAN_S:
        raise UsageError(f"GIF span {start_s:g}..{end_s:g} s is shorter than one GIF frame "
                         f"({MIN_SPAN_S:g} s)")
    least_fps = 1.0 / (end_s - start_s)  # one frame in the span
    limit = options.max_size_bytes
    width = _even(options.width) if options.format == "mp4" else options.width
    settings = _Settings(fps=max(options.fps, least_fps), width=width, level=0)
    smallest_bytes, smallest = 0, settings
    size = 0
    with atomic_path(out) as tmp:
        for _ in range(MAX_ATTEMPTS):
            encoding = _encoding(options, settings, frame, end_s - start_s, threads)
            size = _encode(video, start_s, end_s, tmp, encoding)
            if smallest_bytes == 0 or size < smallest_bytes:
                smallest_bytes, smallest = size, settings
            if limit is None or size <= limit:
                break
            nxt = _next_settings(options, settings, size, limit, least_fps)
            if nxt is None:
                break
            log.debug(
                "%s: %d bytes > %d, retrying with fps %g, width %d, %s %d", out.name, size,
                limit, nxt.fps, nxt.width, _KNOB_NAME[options.format], _ladder(options)[nxt.level],
            )  # fmt: skip
            settings = nxt
        if limit is not None and size > limit:
            raise PhdError(
                f"cannot fit {out.name} under {_mb(limit)} MB (smallest try: "
                f"{_mb(smallest_bytes)} MB at fps {smallest.fps:g}, width {smallest.width})"
            )
    knob = _ladder(options)[settings.level]
    is_gif = options.format == "gif"
    return WrittenClip(
        path=out, size_bytes=size, fps=settings.fps, width=settings.width,
        colors=knob if is_gif else None, fits=True, quality=None if is_gif else knob,
    )  # fmt: skip


def _encode(video: Path, start_s: float, end_s: float, tmp: Path, enc: ClipEncoding) -> int:
    """One ffmpeg run into ``tmp``; returns the size written."""
    args = clip_args(video, start_s, end_s - start_s, tmp, enc)
    try:
        run_ffmpeg(args)
    except FfmpegError as exc:
        raise _explain(exc, video, start_s) from exc
    size = tmp.stat().st_size
    if size == 0:
        # ffmpeg can succeed while encoding nothing (e.g. start past the end).
        raise _explain(FfmpegError(f"ffmpeg wrote no frames for {tmp.name}"), video, start_s)
    return size


def write_gif(
    video: Path, start_s: float, end_s: float, out: Path, options: GifOptions = GifOptions()
) -> Path:
    """:func:`write_clip`, returning only the path (kept for older callers)."""
    return write_clip(video, start_s, end_s, out, options).path


def centred_window(
    segment_start_s: float,
    segment_end_s: float,
    centre_s: float,
    length_s: float,
    video_duration_s: float,
) -> tuple[float, float]:
    """A ``length_s`` window centred on ``centre_s``, kept inside [0, video_duration_s].

    ``centre_s`` (e.g. the middle of the segment's best clip) is first clamped
    into the segment, so a window never drifts away from the segment it stands
    for. Near either end of the video the window slides inwards and keeps its
    length; a video shorter than ``length_s`` gives the whole video.
    """
    if length_s <= 0:
        raise UsageError(f"GIF length must be positive, got {length_s:g} s")
    if segment_end_s <= segment_start_s or video_duration_s <= 0:
        raise UsageError(
            f"empty segment or video: {segment_start_s:g}..{segment_end_s:g} s "
            f"of {video_duration_s:g} s"
        )
    if length_s >= video_duration_s:
        return 0.0, video_duration_s
    centre = min(max(centre_s, segment_start_s), segment_end_s)
    start = min(max(centre - length_s / 2, 0.0), video_duration_s - length_s)
    return start, start + length_s


def _explain(exc: FfmpegError, video: Path, start_s: float) -> FfmpegError:
    """Replace ffmpeg's words with the likely cause when it is a start past the end."""
    from phdcli.media.probe import probe  # lazy: PyAV

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

    from phdcli.media.probe import open_video, video_stream

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
