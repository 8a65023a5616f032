"""Probe videos and decode the 16-frame clips that C3D eats, with PyAV.

PyAV is imported inside the functions: `phd --help` must not load FFmpeg's
libraries. Times are seconds from the video stream's first timestamp, which
is also what ffmpeg's input ``-ss`` counts from, so a clip decoded here and a
GIF cut by :mod:`phdcli.gifs` at the same start show the same frames.

Hostile files are refused before they cost anything: every open checks a
pixel budget (the frame or GIF canvas area, and frames x area) from the
headers, before a single frame is decoded, and tells the decoder the same
limit as a backstop. Rotation metadata (phone videos) is applied to the
frames C3D sees, like ffmpeg applies it to the GIFs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli.errors import InputError

if TYPE_CHECKING:
    import av.container
    import av.video.frame
    import av.video.stream

CLIP_FRAMES = 16
FRAME_HEIGHT = 128
FRAME_WIDTH = 171

# Seek instead of decoding forward when the next needed time is more than
# this far ahead of the decoder. A seek lands on the keyframe before the
# target and decodes from there, so it only pays once the gap is longer than
# the keyframe interval; _ClipDecoder raises the threshold to the interval it
# actually observes (x264's default is 250 frames, 10 s at 25 fps).
SEEK_AHEAD_S = 2.0

# Frames that stop this much earlier than the stream's stated duration mean a
# truncated file (a cut-off download); with frame threads FFmpeg reports that
# as a plain end of stream, so it is checked here.
TRUNCATION_SLACK_S = 1.0

# The pixel budget (Pillow's MAX_IMAGE_PIXELS idea, for moving pictures).
# 36 MP holds 8K UHD (33.2 MP); an 85-byte GIF declaring a 16000x16000
# canvas (256 MP, 1 GB per decoded frame) is refused from its header.
# A GIF decodes every frame on its whole canvas: at most 60 full frames'
# worth by default (2.2 gigapixels: 4700 frames of 480x960). A video may
# hold 120000 (two hours of 4K at 60 fps). --max-megapixels scales all three.
DEFAULT_MAX_MEGAPIXELS = 36.0
GIF_FRAMES_OF_BUDGET = 60
VIDEO_FRAMES_OF_BUDGET = 120_000


@dataclass(frozen=True)
class PixelBudget:
    max_frame_pixels: int = int(DEFAULT_MAX_MEGAPIXELS * 1e6)

    @classmethod
    def from_megapixels(cls, megapixels: float) -> PixelBudget:
        return cls(max_frame_pixels=int(megapixels * 1e6))

    def total_pixels(self, is_gif: bool) -> int:
        return self.max_frame_pixels * (GIF_FRAMES_OF_BUDGET if is_gif else VIDEO_FRAMES_OF_BUDGET)


_budget = PixelBudget()


@contextmanager
def using_pixel_budget(budget: PixelBudget) -> Iterator[None]:
    """Every open inside the body (decode threads included) checks ``budget``."""
    global _budget
    previous, _budget = _budget, budget
    try:
        yield
    finally:
        _budget = previous


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


def _describe_av_error(exc: Exception) -> str:
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
    budget = _budget
    layout = read_gif_layout(path)
    if layout is not None:
        _check_pixels(path, layout.width, layout.height, layout.n_frames, budget, is_gif=True)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable video file ({_describe_av_error(exc)})"
        ) from exc
    try:
        if container.streams.video:
            _check_stream_pixels(path, container, budget)
    except BaseException:
        container.close()
        raise
    return container


def _check_pixels(path: Path, width: int, height: int, n_frames: int | None,
                  budget: PixelBudget, is_gif: bool) -> None:
    area = width * height
    hint = "--max-megapixels raises it"
    if area > budget.max_frame_pixels:
        what = "GIF canvas" if is_gif else "frame size"
        raise InputError(
            f"{path}: {what} {width}x{height} ({area / 1e6:.3g} megapixels) is over the "
            f"pixel budget of {budget.max_frame_pixels / 1e6:g} megapixels ({hint})"
        )
    total = area * (n_frames or 0)
    if total > budget.total_pixels(is_gif):
        raise InputError(
            f"{path}: {n_frames} frames of {width}x{height} ({total / 1e9:.1f} gigapixels) are "
            f"over the pixel budget of {budget.total_pixels(is_gif) / 1e9:.1f} gigapixels "
            f"({hint})"
        )


def _check_stream_pixels(path: Path, container: av.container.InputContainer,
                         budget: PixelBudget) -> None:
    """The budget from the stream's header; the decoder gets it too (a backstop
    for headers that lie: FFmpeg then refuses to open the codec)."""
    stream = container.streams.video[0]
    ctx = stream.codec_context
    is_gif = ctx.name == "gif"
    n_frames = stream.frames or None
    if not n_frames:
        rate = stream.average_rate or stream.guessed_rate
        seconds = (float(stream.duration * stream.time_base) if stream.duration and
                   stream.time_base else (container.duration or 0) / 1e6)
        n_frames = int(seconds * float(rate)) if rate and seconds > 0 else None
    _check_pixels(path, int(ctx.width or 0), int(ctx.height or 0), n_frames, budget, is_gif)
    ctx.options = {**ctx.options, "max_pixels": str(budget.max_frame_pixels)}


@dataclass(frozen=True)
class GifLayout:
    width: int  # the logical screen (canvas) every frame is drawn on
    height: int
    n_frames: int
    damage: str | None  # why the block structure is broken, None when it is sound


def read_gif_layout(path: Path) -> GifLayout | None:
    """Canvas size and frame count of a GIF from its blocks, without decoding
    (None when the file is not a GIF). Streams through the file: bounded memory."""
    with open(path, "rb") as fh:
        head = fh.read(13)
        if len(head) < 13 or head[:6] not in (b"GIF87a", b"GIF89a"):
            return None
        width, height, flags = struct.unpack("<HHB", head[6:11])
        n_frames = 0

        def skip(n: int) -> bool:
            fh.seek(n, 1)
            return fh.tell() <= size

        def sub_blocks() -> bool:
            while True:
                length = fh.read(1)
                if not length:
                    return False
                if length[0] == 0:
                    return True
                if not skip(length[0]):
                    return False

        size = fh.seek(0, 2)
        fh.seek(13)
        if flags & 0x80 and not skip(3 << ((flags & 7) + 1)):
            return GifLayout(width, height, 0, "ends inside its colour table")
        while True:
            block = fh.read(1)
            if not block or block == b"\x3b":  # end of file (lenient) or trailer
                return GifLayout(width, height, n_frames, None)
            if block == b"\x21":  # extension: label, then sub-blocks
                if not fh.read(1) or not sub_blocks():
                    return GifLayout(width, height, n_frames, f"ends inside a block at "
                                                              f"byte {fh.tell()}")
            elif block == b"\x2c":  # image: descriptor, local table, LZW sub-blocks
                desc = fh.read(9)
                if len(desc) < 9:
                    return GifLayout(width, height, n_frames, "ends inside a frame header")
                local = desc[8]
                if local & 0x80 and not skip(3 << ((local & 7) + 1)):
                    return GifLayout(width, height, n_frames, "ends inside a colour table")
                if not fh.read(1) or not sub_blocks():
                    return GifLayout(width, height, n_frames,
                                     f"frame {n_frames + 1} is cut off")
                n_frames += 1
            else:
                return GifLayout(width, height, n_frames,
                                 f"damaged data at byte {fh.tell() - 1} (after frame {n_frames})")


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
                raise InputError(f"{path}: damaged video data ({_describe_av_error(exc)})"
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


def _stream_origin_s(stream: av.video.stream.VideoStream) -> float:
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
        tb = stream.time_base
        origin_s = _stream_origin_s(stream)
        # One decoded frame proves the stream is more than a header.
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: cannot decode video ({_describe_av_error(exc)})") from exc
        if first is None:
            raise InputError(f"{path}: no decodable video frame")

        duration_s = 0.0
        if stream.duration and tb is not None:
            duration_s = float(stream.duration * tb)  # GIFs: sum of frame delays
        elif container.duration:
            duration_s = container.duration / av.time_base
        if duration_s <= 0:
            duration_s = _duration_from_packets(container, stream, origin_s)
        if duration_s <= 0:
            raise InputError(f"{path}: video has zero duration")

        n_frames = stream.frames or None
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
            rotation_deg=90 * _quarter_turns(first),
        )
    finally:
        container.close()


def _quarter_turns(frame: Any) -> int:
    """Counterclockwise quarter turns the frame's display matrix asks for (0-3)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(float(rotation) / 90.0)) % 4


def _duration_from_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, origin_s: float
) -> float:
    """Duration from packet timestamps, for containers that do not state one.

    Demuxing without decoding is cheap; only reached for raw or broken
    streams.
    """
    import av

    tb = stream.time_base
    if tb is None:
        return 0.0
    end_s = 0.0
    try:
        container.seek(0, stream=stream)
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * tb))
    except av.error.FFmpegError:
        pass  # keep what was read so far
    return max(0.0, end_s - origin_s)


class _ClipDecoder:
    """Forward-only 'frame on screen at time t' over one video stream.

    Holds at most two decoded frames (the one on screen and the next one) and
    the last converted array, whatever the video's length.
    """

    def __init__(self, container: av.container.InputContainer, path: Path) -> None:
        self.container = container
        self.path = path
        self.stream = video_stream(container, path)
        self.stream.thread_type = "AUTO"  # frame + slice threads; big win for H.264
        tb = self.stream.time_base
        self.time_base: Fraction = tb if tb is not None else Fraction(1, 90000)
        self.origin_s = _stream_origin_s(self.stream)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.frame_step_s = 1.0 / float(rate) if rate else 1.0 / 25.0
        # GIF demuxers cannot seek reliably, and GIFs are short anyway.
        self.can_seek = self.stream.codec_context.name != "gif"
        duration = self.stream.duration
        self.stated_end_s = float(duration * self.time_base) if duration else None
        self.seek_ahead_s = SEEK_AHEAD_S
        self._last_key_s: float | None = None
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        self._restart()

    def _restart(self) -> None:
        self.frames = self.container.decode(self.stream)
        self.current: tuple[float, Any] | None = None  # last frame with time <= target
        self.pending: tuple[float, Any] | None = None  # first frame with time > target
        self.exhausted = False
        self._converted: tuple[Any, np.ndarray] | None = None

    def _next(self) -> tuple[float, Any] | None:
        import av

        try:
            frame = next(self.frames, None)
        except av.error.FFmpegError as exc:
            raise InputError(
                f"{self.path}: corrupt video data ({_describe_av_error(exc)})"
            ) from exc
        if frame is None:
            self.exhausted = True
            return None
        if frame.pts is not None:
            t = float(frame.pts * self.time_base) - self.origin_s
        else:  # no timestamp (raw streams): one frame after the previous one
            prev = self.current or self.pending
            t = prev[0] + self.frame_step_s if prev else 0.0
        if frame.key_frame:
            # The keyframe interval tells when a seek beats decoding forward.
            if self._last_key_s is not None and t > self._last_key_s:
                self.seek_ahead_s = max(self.seek_ahead_s, t - self._last_key_s)
            self._last_key_s = t
        return t, frame

    def _position_s(self) -> float:
        held = self.pending or self.current
        return held[0] if held else 0.0

    def _rewind(self) -> None:
        """Back to the first frame by reopening the file: works for any input."""
        self.container.close()
        self.container = open_video(self.path)
        self.stream = video_stream(self.container, self.path)
        self.stream.thread_type = "AUTO"
        self._last_key_s = None
        self._restart()

    def _seek(self, t: float) -> None:
        import av

        target = int((t + self.origin_s) / self.time_base)
        try:
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self.can_seek = False  # not seekable after all: decode forward from now on
            self._rewind()
            return
        self._last_key_s = None
        self._restart()
        first = self._next()
        if first is None or first[0] > t + 1e-6:
            # Landed past the target or at the end (an imprecise demuxer, or t
            # before the first frame): start over, always correct.
            self._rewind()
            return
        # Everything between the landing keyframe and t gets decoded anyway:
        # a gap shorter than that is cheaper to decode straight through.
        self.seek_ahead_s = max(self.seek_ahead_s, t - first[0])
        self.pending = first

    def prepare(self, t: float) -> None:
        """Position the decoder before decoding a clip that starts at ``t``."""
        behind = self.current is not None and t < self.current[0]
        ahead = t - self._position_s() > self.seek_ahead_s
        if self.can_seek and (behind or ahead):
            self._seek(t)
        elif behind:
            self._rewind()

    def frame_at(self, t: float) -> np.ndarray:
        """RGB (128, 171, 3) of the frame on screen at ``t`` (clamped to the video)."""
        while not self.exhausted:
            if self.pending is None:
                self.pending = self._next()
                if self.pending is None:
                    break
            if self.pending[0] <= t + 1e-6:
                self.current, self.pending = self.pending, None
            else:
                break
        held = self.current or self.pending  # before the first frame: the first frame
        if held is None:
            raise InputError(f"{self.path}: no decodable video frame")
        if (
            self.exhausted
            and self.stated_end_s is not None
            and t - held[0] > TRUNCATION_SLACK_S
            and t < self.stated_end_s - TRUNCATION_SLACK_S
        ):
            raise InputError(
                f"{self.path}: video data ends at {held[0]:.1f} s but the file says "
                f"{self.stated_end_s:.1f} s (truncated or corrupt file)"
            )
        frame = held[1]
        # Convert each frame once, and only frames a clip uses. One reformatter
        # for the whole decode: frame.to_ndarray(width=...) builds a new
        # swscale context per call, 26x slower per frame (measured, bench/).
        if self._converted is None or self._converted[0] is not frame:
            # A phone video stored sideways: scale to the transposed size, then
            # turn, so C3D sees what a viewer (and the GIF) shows.
            turns = _quarter_turns(frame)
            width, height = (FRAME_HEIGHT, FRAME_WIDTH) if turns % 2 else (FRAME_WIDTH,
                                                                           FRAME_HEIGHT)
            rgb = self._reformatter.reformat(
                frame, width=width, height=height, format="rgb24"
            ).to_ndarray()
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=turns))
            self._converted = (frame, rgb)
        return self._converted[1]


def decode_clips(
    path: Path,
    clip_starts_s: Sequence[float],
    clip_fps: float,
    n_frames: int = CLIP_FRAMES,
) -> Iterator[np.ndarray]:
    """Yield one uint8 array (n_frames, 128, 171, 3) RGB per clip start.

    Frame i of a clip is the frame on screen at ``start + i / clip_fps``, so
    any source rate (a GIF's variable delays included) is resampled to
    ``clip_fps``; before the first frame it is the first frame, past the end
    the last one repeats. Starts should ascend: a start far ahead triggers a
    seek, an earlier one a rewind. Raises InputError for unreadable data.
    """
    if clip_fps <= 0:
        raise ValueError(f"clip_fps must be positive, got {clip_fps}")
    path = Path(path)
    container = open_video(path)
    decoder = _ClipDecoder(container, path)
    try:
        for start in clip_starts_s:
            decoder.prepare(float(start))
            clip = np.empty((n_frames, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
            for i in range(n_frames):
                clip[i] = decoder.frame_at(float(start) + i / clip_fps)
            yield clip
    finally:
        decoder.container.close()
