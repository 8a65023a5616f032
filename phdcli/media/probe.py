"""Open and probe videos (and GIFs) with PyAV, refusing hostile files up front.

PyAV is imported inside the functions: `phd --help` must not load FFmpeg's
libraries. Every open checks the pixel budget (``phdcli.media.budget``: the
frame or GIF canvas area, and frames x area) from the headers, before a
single frame is decoded, and tells the decoder the same limit as a
backstop. ``check_decodes`` decodes a whole file for those that must be whole
(a history GIF); ``phdcli.media.decode`` decodes only the clips C3D needs.

Work is bounded by what a file holds, not by what its header claims: a
stated duration that the file's size could not hold at
:data:`MIN_BYTES_PER_S` is checked against the packets themselves (demuxed,
not decoded: cheap, and bounded by the file's size) and replaced by where
they end, before anything is planned on it; a header's frame count is never
taken above the file's size in bytes (a frame takes at least one).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phdcli.errors import InputError
from phdcli.media.budget import PixelBudget, check_pixels, current_budget
from phdcli.media.gif_layout import read_gif_layout

if TYPE_CHECKING:
    import av.container
    import av.video.stream

log = logging.getLogger("phd")

# Below this many bytes per claimed second no real video stream exists (8 kB/s
# is 64 kbit/s; a still image coded at 25 fps with the container's overhead
# takes about a tenth of it, and any audio adds more): the claim is checked
# against the packets. Checking a true claim only costs one demux pass.
MIN_BYTES_PER_S = 8_000
# A claim that the packets fall short of by more than this is corrected.
CLAIM_SLACK_S = 1.0
_HMS = re.compile(r"^(\d+):([0-5]?\d):(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration_s: float
    fps: float
    width: int  # as stored; see display_width for what a viewer shows
    height: int
    n_frames: int | None
    codec: str
    rotation_deg: int = 0  # counterclockwise, a multiple of 90 (phone videos)

    @property
    def display_width(self) -> int:
        return self.height if self.rotation_deg % 180 else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.rotation_deg % 180 else self.height


def describe_av_error(exc: Exception) -> str:
    """An av error as a short phrase, without the file name PyAV appends."""
    strerror = getattr(exc, "strerror", None)
    text = strerror if isinstance(strerror, str) and strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def open_video(path: Path) -> av.container.InputContainer:
    """Open ``path`` for reading or raise a one-line InputError.

    The pixel budget is checked here, from headers only, before any frame
    is decoded.
    """
    import av

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    budget = current_budget()
    layout = read_gif_layout(path)
    if layout is not None:
        check_pixels(path, layout.width, layout.height, layout.n_frames, budget, is_gif=True)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable video file ({describe_av_error(exc)})"
        ) from exc
    try:
        if container.streams.video:
            check_stream_pixels(path, container, budget)
    except BaseException:
        container.close()
        raise
    return container


def check_stream_pixels(path: Path, container: av.container.InputContainer,
                         budget: PixelBudget) -> None:
    """The budget from the stream's header; the decoder gets it too (a backstop
    for headers that lie: FFmpeg then refuses to open the codec)."""
    stream = container.streams.video[0]
    ctx = stream.codec_context
    is_gif = ctx.name == "gif"
    n_frames = stream.frames or None
    if not n_frames:
        rate = stream.average_rate or stream.guessed_rate
        seconds = claimed_duration_s(container, stream)
        n_frames = int(seconds * float(rate)) if rate and seconds > 0 else None
    if n_frames:  # a header may claim any count; the file holds at most one frame a byte
        n_frames = min(n_frames, path.stat().st_size)
    check_pixels(path, int(ctx.width or 0), int(ctx.height or 0), n_frames, budget, is_gif)
    ctx.options = {**ctx.options, "max_pixels": str(budget.max_frame_pixels)}


def check_decodes(path: Path) -> None:
    """Decode every frame and refuse the file if FFmpeg reports damage.

    FFmpeg conceals damage quietly (a GIF with broken LZW data decodes 11 of
    its 30 frames, no exception), so its error log is captured and the GIF
    block structure and frame count are checked as well. For files that
    must be whole, like a history GIF.
    """
    import av
    import av.logging

    path = Path(path)
    layout = read_gif_layout(path)
    if layout is not None and layout.damage is not None:
        raise InputError(f"{path}: damaged GIF ({layout.damage})")
    container = open_video(path)
    previous = av.logging.get_level(), av.logging.get_skip_repeated()
    try:
        stream = video_stream(container, path)
        decoded = 0
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)  # the same damage in a second file must show too
        with av.logging.Capture(local=False) as logs:
            try:
                for _ in container.decode(stream):
                    decoded += 1
            except av.error.FFmpegError as exc:
                raise InputError(f"{path}: damaged video data ({describe_av_error(exc)})"
                                 ) from exc
        errors = [" ".join(str(msg).split()) for level, _, msg in logs
                  if level is not None and level <= av.logging.ERROR]
        if errors:
            raise InputError(f"{path}: damaged video data ({errors[0]})")
        if decoded == 0:
            raise InputError(f"{path}: no decodable video frame")
        if layout is not None and decoded < layout.n_frames:
            raise InputError(f"{path}: damaged GIF (only {decoded} of its {layout.n_frames} "
                             "frames decode)")
    finally:
        av.logging.set_level(previous[0])
        av.logging.set_skip_repeated(previous[1])
        container.close()


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise InputError(f"{path}: has no video stream")
    return container.streams.video[0]


def stream_origin_s(stream: av.video.stream.VideoStream) -> float:
    """Seconds of the stream's first timestamp (time 0 for everything we report)."""
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def probe(path: Path) -> VideoInfo:
    """Read a video's (or GIF's) duration, rate, size and codec.

    Raises InputError with one line for missing, empty, unreadable and
    audio-only files and for videos without a single decodable frame.
    """
    import av

    path = Path(path)
    container = open_video(path)
    try:
        stream = video_stream(container, path)
        origin_s = stream_origin_s(stream)
        # One decoded frame proves the stream is more than a header.
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: cannot decode video ({describe_av_error(exc)})") from exc
        if first is None:
            raise InputError(f"{path}: no decodable video frame")

        duration_s = claimed_duration_s(container, stream)
        n_frames = stream.frames or None
        if duration_s <= 0 or path.stat().st_size < MIN_BYTES_PER_S * duration_s:
            # Too few bytes for the claim (or none): the packets say where the video ends.
            end_s, packets = _duration_from_packets(container, stream, origin_s)
            if duration_s > 0 and end_s < duration_s - CLAIM_SLACK_S:
                log.warning("warning: %s: its header says %.6g s but its video data ends at "
                            "%.1f s; using %.1f s", path, duration_s, end_s, end_s)
                duration_s, n_frames = end_s, packets
            elif duration_s <= 0:
                duration_s = end_s
        if duration_s <= 0:
            raise InputError(f"{path}: video has zero duration")

        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if rate:
            fps = float(rate)
        elif n_frames:
            fps = n_frames / duration_s
        else:
            fps = 0.0
        return VideoInfo(
            path=path,
            duration_s=duration_s,
            fps=fps,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            n_frames=n_frames,
            codec=str(stream.codec_context.name),
            rotation_deg=90 * quarter_turns(first),
        )
    finally:
        container.close()


def quarter_turns(frame: Any) -> int:
    """Counterclockwise quarter turns the frame's display matrix asks for (0-3)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(float(rotation) / 90.0)) % 4


def claimed_duration_s(container: av.container.InputContainer,
                       stream: av.video.stream.VideoStream) -> float:
    """What the headers say the video lasts (0.0: they do not say): the stream's
    own duration, else its Matroska ``DURATION`` tag (the video track's, where
    audio may run longer), else the container's."""
    import av

    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)  # GIFs: sum of frame delays
    tag = _HMS.match(str((stream.metadata or {}).get("DURATION", "")).strip())
    if tag is not None:
        seconds = int(tag[1]) * 3600 + int(tag[2]) * 60 + float(tag[3])
        if seconds > 0:
            return seconds
    return container.duration / av.time_base if container.duration else 0.0


def _duration_from_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, origin_s: float
) -> tuple[float, int]:
    """(where the packets end, how many there are): demuxing without decoding is
    cheap, and bounded by the file's size whatever its header says."""
    import av

    tb = stream.time_base
    if tb is None:
        return 0.0, 0
    end_s, packets = 0.0, 0
    try:
        container.seek(0, stream=stream)
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            packets += 1
            end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * tb))
    except av.error.FFmpegError:
        pass  # keep what was read so far
    return max(0.0, end_s - origin_s), packets
