"""Cut a video's timeline into segments and place C3D clips inside them.

Pure arithmetic, except :func:`shot_segments`, which runs PySceneDetect.
Two protocols from the paper: fixed 5 s segments (its test protocol) and
detected shots with long shots split into 5 s chunks (its training protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phdcli.errors import InputError

# A trailing remainder shorter than this is merged into the previous segment
# instead of becoming its own: under a second is less than two 16-frame clips
# at 25 fps, too short to score or to make a GIF a person would keep.
MIN_REMAINDER_S = 1.0


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _chunks(start_s: float, end_s: float, length_s: float) -> list[Segment]:
    """Consecutive ``length_s`` pieces of [start_s, end_s]; a tiny tail is merged."""
    span = end_s - start_s
    # Round before flooring so 15.000000001 / 5 is 3 pieces, not 3 + a sliver.
    n_full = int(round(span / length_s, 9) // 1)
    bounds = [start_s + i * length_s for i in range(n_full + 1)]
    if end_s - bounds[-1] >= MIN_REMAINDER_S or n_full == 0:
        bounds.append(end_s)  # the remainder is a segment of its own
    else:
        bounds[-1] = end_s  # merge the sliver into the last full piece
    return [Segment(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def fixed_segments(duration_s: float, length_s: float = 5.0) -> list[Segment]:
    """Consecutive ``length_s`` segments covering [0, duration_s].

    The final remainder is kept as its own (shorter) segment, as in the
    paper's test protocol, unless it is shorter than MIN_REMAINDER_S (1 s):
    then it is merged into the previous segment, which becomes up to
    ``length_s + 1`` s long. A video shorter than ``length_s`` is one segment.
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    if length_s <= 0:
        raise ValueError(f"segment length must be positive, got {length_s}")
    return _chunks(0.0, float(duration_s), float(length_s))


def _seconds(timecode: Any) -> float:
    # `.seconds` from scenedetect 0.7 on; `get_seconds()` before (now deprecated).
    if hasattr(type(timecode), "seconds"):
        return float(timecode.seconds)
    return float(timecode.get_seconds())


def shot_segments(
    path: Path, duration_s: float, max_shot_s: float = 15.0, chunk_s: float = 5.0
) -> list[Segment]:
    """Detected shots covering [0, duration_s]; shots over ``max_shot_s`` cut in ``chunk_s``.

    Uses PySceneDetect's AdaptiveDetector on the PyAV backend. A video without
    a cut is a single shot.
    """
    return segments_from_cuts(detect_cuts(path), duration_s, max_shot_s, chunk_s)


def segments_from_cuts(cuts: list[float], duration_s: float, max_shot_s: float = 15.0,
                       chunk_s: float = 5.0) -> list[Segment]:
    """The shots between ``cuts`` over [0, duration_s], long ones cut in ``chunk_s``."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    bounds = [0.0, *(c for c in cuts if 0.0 < c < duration_s), float(duration_s)]
    segments: list[Segment] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b - a > max_shot_s:
            segments.extend(_chunks(a, b, chunk_s))
        else:
            segments.append(Segment(a, b))
    return segments


def detect_cuts(path: Path, start_s: float | None = None,
                end_s: float | None = None) -> list[float]:
    """Times of the shot changes (the first frame of each new shot), ascending,
    in the whole video or only in [start_s, end_s] (decoding only that).

    PySceneDetect's AdaptiveDetector on the PyAV backend; a range that holds
    no cut gives ``[]``.
    """
    # Lazy: scenedetect pulls in OpenCV.
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    try:
        # Frame threading: a quarter less time on 2 cores for the same cuts
        # (the one-shot rule searches a few seconds around each pick).
        video = open_video(str(path), backend="pyav", threading_mode="FRAME")
        manager = SceneManager()
        manager.add_detector(AdaptiveDetector())
        if start_s:
            video.seek(start_s)
        manager.detect_scenes(video, end_time=end_s)
        scenes = manager.get_scene_list(start_in_scene=True)
    except Exception as exc:  # scenedetect raises assorted types for bad files
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path}: shot detection failed ({detail})") from exc
    # Inner boundaries only: a range's own ends are not cuts.
    return sorted({_seconds(start) for start, _end in scenes[1:]})


def clip_starts(
    segment: Segment,
    video_duration_s: float,
    clip_fps: float,
    clips_per_segment: int,
    n_frames: int = 16,
) -> list[float]:
    """Ascending start times of the clips that represent ``segment``.

    A clip spans ``n_frames / clip_fps`` seconds. Clips are centred at
    (i + 0.5) / n of the segment and kept inside it. A segment shorter than
    one clip gets a single clip centred on it that reaches beyond it, kept
    inside the video (start 0 when the video itself is shorter than a clip):
    short segments are scored too, never dropped.
    """
    if clip_fps <= 0 or clips_per_segment < 1 or n_frames < 1:
        raise ValueError("clip_fps, clips_per_segment and n_frames must be positive")
    span = n_frames / clip_fps
    latest_in_video = max(0.0, video_duration_s - span)
    if segment.duration_s < span:
        centre = (segment.start_s + segment.end_s) / 2
        return [min(max(centre - span / 2, 0.0), latest_in_video)]
    step = segment.duration_s / clips_per_segment
    starts = []
    for i in range(clips_per_segment):
        start = segment.start_s + (i + 0.5) * step - span / 2
        # Keep the clip inside the segment, then inside the video.
        start = min(max(start, segment.start_s), segment.end_s - span)
        starts.append(min(max(start, 0.0), latest_in_video))
    return sorted(starts)
