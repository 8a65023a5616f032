"""Decode the 16-frame clips that C3D eats, with PyAV: only the frames they need.

Times are seconds from the video stream's first timestamp, which is also
what ffmpeg's input ``-ss`` counts from, so a clip decoded here and a GIF cut
by :mod:`phdcli.media.gifs` at the same start show the same frames. Memory
stays flat whatever the video's length: the decoder holds at most two
frames. Rotation metadata (phone videos) is applied to the frames, like
ffmpeg applies it to the GIFs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli.errors import InputError
from phdcli.media.probe import (
    describe_av_error,
    open_video,
    quarter_turns,
    stream_origin_s,
    video_stream,
)

if TYPE_CHECKING:
    import av.container

# What C3D eats (its convention, phdcli.features.c3d_spec reads it from here):
# clips of 16 frames, each resized to 128x171.
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

# Frames shown before the next clip that no other frame refers to (H.264's
# non-reference B-frames) are not decoded at all: most frames decoded for a
# clip are the run-up from the keyframe a seek lands on, and skipping these
# decodes fewer frames for the same clips bit for bit (tests/test_video.py;
# 20-30 % less decoding CPU on the bench's coarse pass, README "Performance").
# Only frames this many frame steps before the clip's start are skipped,
# and only on a constant-rate stream, where the frame on screen at the start
# is known to come later.
SKIP_MARGIN_FRAMES = 1.5


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
        self.origin_s = stream_origin_s(self.stream)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.frame_step_s = 1.0 / float(rate) if rate else 1.0 / 25.0
        # GIF demuxers cannot seek reliably, and GIFs are short anyway.
        self.can_seek = self.stream.codec_context.name != "gif"
        duration = self.stream.duration
        self.stated_end_s = float(duration * self.time_base) if duration else None
        self.seek_ahead_s = SEEK_AHEAD_S
        self._last_key_s: float | None = None
        self.skip_before_s: float | None = None  # see SKIP_MARGIN_FRAMES
        self.decoded = 0  # frames the decoder gave, for tests and the bench
        self._constant_rate = _constant_rate(self.stream)
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        self._restart()

    def _restart(self) -> None:
        self.frames = self._decode()
        self.current: tuple[float, Any] | None = None  # last frame with time <= target
        self.pending: tuple[float, Any] | None = None  # first frame with time > target
        self.exhausted = False
        self._converted: tuple[Any, np.ndarray] | None = None

    def _decode(self) -> Iterator[Any]:
        """The stream's frames, as ``container.decode`` gives them, less the
        non-reference frames shown before ``skip_before_s``."""
        context = self.stream.codec_context
        # A seek keeps the codec context: start from decoding every frame,
        # whatever the generator before this one left set.
        context.skip_frame = "DEFAULT"
        skipping = False
        for packet in self.container.demux(self.stream):
            early = (self.skip_before_s is not None and packet.pts is not None
                     and float(packet.pts * self.time_base) - self.origin_s
                     < self.skip_before_s)
            if early != skipping:  # read per packet, also by FFmpeg's frame threads
                context.skip_frame = "NONREF" if early else "DEFAULT"
                skipping = early
            frames = packet.decode()
            self.decoded += len(frames)
            yield from frames

    def _next(self) -> tuple[float, Any] | None:
        import av

        try:
            frame = next(self.frames, None)
        except av.error.FFmpegError as exc:
            raise InputError(
                f"{self.path}: corrupt video data ({describe_av_error(exc)})"
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
        if self._constant_rate:
            self.skip_before_s = t - SKIP_MARGIN_FRAMES * self.frame_step_s
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
            turns = quarter_turns(frame)
            width, height = (FRAME_HEIGHT, FRAME_WIDTH) if turns % 2 else (FRAME_WIDTH,
                                                                           FRAME_HEIGHT)
            rgb = self._reformatter.reformat(
                frame, width=width, height=height, format="rgb24"
            ).to_ndarray()
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=turns))
            self._converted = (frame, rgb)
        return self._converted[1]

    def check_holds(self, t: float) -> None:
        """Raise unless the video data reaches ``t`` (a clip's start): past the last
        frame a clip would only repeat it, work that the file's bytes do not pay for."""
        held = self.current or self.pending
        if not self.exhausted or held is None:
            return
        frame = held[1]
        shown_s = (float(frame.duration * self.time_base) if getattr(frame, "duration", None)
                   else self.frame_step_s)
        end_s = held[0] + shown_s
        if t > end_s + TRUNCATION_SLACK_S:
            raise InputError(
                f"{self.path}: video data ends at {end_s:.1f} s, before a clip at {t:.1f} s "
                "(the file claims more than it holds)"
            )


def _constant_rate(stream: Any) -> bool:
    """True when the stream's average rate is its base rate: a constant-rate
    stream, whose next frame comes one frame step after the last."""
    average, base = stream.average_rate, getattr(stream, "base_rate", None)
    return bool(average and base) and abs(float(average) / float(base) - 1.0) < 1e-3


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
    the last one repeats, but a clip that *starts* past the end of the data
    is refused (InputError), never decoded as one frame repeated. Starts
    should ascend: a start far ahead triggers a seek, an earlier one a
    rewind. Raises InputError for unreadable data.
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
            clip[0] = decoder.frame_at(float(start))
            decoder.check_holds(float(start))
            for i in range(1, n_frames):
                clip[i] = decoder.frame_at(float(start) + i / clip_fps)
            yield clip
    finally:
        decoder.container.close()
