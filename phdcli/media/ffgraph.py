"""ffmpeg command lines, built with ffmpeg-python: the one module that knows
ffmpeg's filter graphs and codec flags.

Each function returns the arguments for :func:`phdcli.media.ffmpeg.run_ffmpeg`,
which adds the binary (``PHD_FFMPEG`` or imageio-ffmpeg's) and its global
flags and is the only place that starts ffmpeg. ffmpeg-python is used for
what it is good at, composing and escaping filter graphs; its ``probe`` (it
needs an ffprobe no wheel ships) is not: PyAV probes and decodes
(``phdcli.media.probe``, ``phdcli.media.decode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PALETTE_STATS_WIDTH = 240  # px: the GIF palette is chosen from frames this wide at most


@dataclass(frozen=True)
class ClipEncoding:
    """One encode of a clip: ``quality`` is the GIF palette size, the mp4 crf
    or the WebP quality, by ``format`` (gif, mp4 or webp)."""

    format: str
    fps: float
    width: int
    quality: int
    height: int | None = None  # None: the aspect ratio's, rounded to even (scale=W:-2)
    frames: int | None = None  # at most this many frames (the span's own count at ``fps``)
    threads: int | None = None  # decoder and filter threads; None: ffmpeg's own choice


def clip_args(
    source: str | Path, start_s: float, duration_s: float, out: Path, enc: ClipEncoding,
    source_format: str | None = None,
) -> list[str]:
    """ffmpeg arguments that cut ``duration_s`` from ``start_s`` of ``source`` into ``out``.

    ``source_format`` forces the input format (``"lavfi"`` for a generated
    test source); ffmpeg picks the output muxer from ``out``'s suffix. Audio
    is always dropped. ``enc.format`` was checked where the user gave it
    (``phdcli.media.gifs.GifOptions``).
    """
    import ffmpeg  # lazy: `phd --help` must not pay for it

    options: dict[str, Any] = {"ss": f"{start_s:.3f}", "t": f"{duration_s:.3f}"}  # fast input seek
    if source_format is not None:
        options["f"] = source_format
    if enc.threads is not None:
        options["threads"] = enc.threads
    video = (
        ffmpeg.input(str(source), **options).video
        .filter("fps", fps=f"{enc.fps:g}")
        .filter("scale", enc.width, -2 if enc.height is None else enc.height, flags="lanczos")
    )
    codec: dict[str, Any]
    if enc.format == "gif":
        # Palette made from this very stretch in the same run (one decode):
        # stats_mode=diff favours moving parts, bayer dithering with
        # diff_mode=rectangle only redraws what changed, so GIFs stay small.
        split = video.split()
        stats = split[0]
        if enc.width > PALETTE_STATS_WIDTH:
            # palettegen's histogram from area-averaged frames at most this wide:
            # a quarter of the pixels at 480 px, a third less CPU per GIF with
            # frames as close to the source (bench.gif_cost measures both).
            stats = stats.filter("scale", PALETTE_STATS_WIDTH, -1, flags="area")
        palette = stats.filter("palettegen", max_colors=enc.quality, stats_mode="diff")
        video = ffmpeg.filter([split[1], palette], "paletteuse", dither="bayer", bayer_scale=5,
                              diff_mode="rectangle")
        codec = {"loop": 0}
    elif enc.format == "mp4":
        # faststart moves the index to the front so browsers play while loading.
        codec = {"c:v": "libx264", "pix_fmt": "yuv420p", "crf": enc.quality,
                 "movflags": "+faststart"}
    else:  # webp
        # libwebp_anim (not libwebp) diffs frames against each other: smaller files.
        codec = {"c:v": "libwebp_anim", "quality": enc.quality, "loop": 0}
    if enc.frames is not None:  # the fps filter may round up a frame past the span
        codec["frames:v"] = enc.frames
    output = ffmpeg.output(video, str(out), an=None, **codec)
    if enc.threads is not None:
        output = output.global_args("-filter_complex_threads", str(enc.threads))
    command = output.compile(cmd="ffmpeg")
    return command[1:]  # run_ffmpeg owns the binary
