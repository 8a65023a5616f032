"""``python -m bench.scale [--quick] [--suggest-only] [--repeat N] [--json PATH]``: Ray, costs.

Measured here, on the same generated inputs (360p H.264 videos with hard
cuts, PHD^2-style annotations over them, RANDOM C3D weights: speed does not
depend on their values):

- videos/s and C3D clips/s of ``build_dataset`` with the local engine and
  with the Ray engine on a local cluster of this machine's CPUs; Ray's
  overhead as the ratio of the two (target: >= 0.9); the cluster's start-up
  is timed apart (a multi-day build pays it once);
- peak RSS of the driver process of each (Ray's workers are other processes);
- decoding (clips/s on one core) and shot detection (video s per s) alone;
- ``phd suggest`` on the same videos, local vs ``--engine ray`` (videos/s,
  same picks checked; ``bench.suggest_scale``), and the archive example
  (5,000 five-minute videos) at the local rate measured here.

Each build runs in a child process with a fresh store. The cost sheet then
scales PHD^2's size (119,938 videos; durations and GIF spans from the
annotation file given, PHD^2's test-dev split by default) by measured
rates: C3D at the H200 figure measured earlier (2274 clips/s bf16, README),
decoding and shot detection at this machine's per-core rates. Download
volume at 360p uses an ASSUMED bitrate (no YouTube here), and the node shape
is an assumption too: both are printed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.inputs import INPUTS_DIR, ffmpeg_exe, random_weights, start_local_ray

ROOT = Path(__file__).resolve().parent.parent
SCALE_DIR = INPUTS_DIR / "scale"
# ../shared beside a checkout (the README's path), or beside a worktree's parent.
DEV_CSV = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared")
                if (p / "data/phd2/phd2-test-dev.csv").is_file()),
               ROOT.parent / "shared") / "data" / "phd2" / "phd2-test-dev.csv"
PHD2_VIDEOS = 119_938
PHD2_USERS = 13_822  # one last video each
H200_CLIPS_S = 2274.0  # C3D bf16, batch 32, measured on an H200 (README, Performance)
ASSUMED_360P_MBIT_S = 0.7  # YouTube 360p H.264 + AAC, typical; NOT measured here
NODE_GPUS, NODE_CORES = 8, 64  # an assumed node: 8 GPUs, 64 cores
SOURCES = ["testsrc2", "smptebars", "rgbtestsrc", "testsrc", "smptehdbars", "mandelbrot"]


def make_videos(n: int, seconds: int) -> list[Path]:
    """``n`` 640x360 30 fps videos of ``seconds``, a hard cut every 5 s (cached)."""
    SCALE_DIR.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = SCALE_DIR / f"v{i:02d}-{seconds}s.mp4"
        if not path.exists():
            shots = [SOURCES[(i + j) % len(SOURCES)] for j in range(seconds // 5)]
            args: list[str] = []
            for src in shots:
                args += ["-t", "5", "-f", "lavfi", "-i", f"{src}=size=640x360:rate=30"]
            graph = "".join(f"[{j}:v]" for j in range(len(shots)))
            graph += f"concat=n={len(shots)}:v=1:a=0,format=yuv420p[out]"
            tmp = path.with_suffix(".part.mp4")
            subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args,
                            "-filter_complex", graph, "-map", "[out]", "-c:v", "libx264",
                            "-preset", "superfast", "-g", "60", str(tmp)], check=True)
            tmp.replace(path)
        out.append(path)
    return out


def write_annotations(videos: list[Path], seconds: int, path: Path) -> None:
    """User i: last video i (3 GIFs), history: the next two other videos (2 GIFs each)."""
    rows = ["youtubeId,start,duration,user_id,video_duration,is_last"]
    n = len(videos)
    for i in range(n):
        rows += [f"{videos[i].stem},{t},3.0,u{i},{seconds},True" for t in (2.0, 9.0, 14.5)]
        for j in sorted({(i + 1) % n, (i + 2) % n} - {i}):
            v = videos[j].stem
            rows += [f"{v},{t + j % 3},2.5,u{i},{seconds},False" for t in (1.0, 11.0)]
    path.write_text("\n".join(rows) + "\n")


# -- one build in a child process ---------------------------------------------------
def child(engine: str, annotations: Path, videos: Path, out: Path, weights: Path) -> None:
    from phdcli.training.dataset import BuildConfig, build_dataset
    from phdcli.training.engines import get_engine

    start_s = start_local_ray() if engine == "ray" else 0.0
    cfg = BuildConfig(annotations=annotations, videos_dir=videos, out=out, c3d_weights=weights,
                      device="cpu")
    summary = build_dataset(cfg, engine=get_engine(engine))
    print(json.dumps({"engine": engine, "wall_s": summary.wall_s, "cluster_start_s": start_s,
                      "videos": summary.videos_done, "failed": summary.videos_failed,
                      "clips": summary.clips_forwarded, "hours": summary.hours_done,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(engine: str, annotations: Path, videos: Path, out: Path, weights: Path,
              env: dict[str, str]) -> dict[str, Any]:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--child", engine,
                           str(annotations), str(videos), str(out), str(weights)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} build failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- CPU stages alone -----------------------------------------------------------------
def cpu_rates(video: Path) -> dict[str, float]:
    """Decoding (clips/s, one process) and shot detection (video s/s) on one video."""
    from phdcli.media.decode import decode_clips
    from phdcli.media.probe import probe
    from phdcli.media.segments import shot_segments
    from phdcli.training.evaluate import fixed_segment_bounds

    info = probe(video)
    starts = [a + 2.5 - 0.32 for a, _ in fixed_segment_bounds(info.duration_s)] * 4
    starts.sort()
    t = time.perf_counter()
    n = sum(1 for _ in decode_clips(video, starts, 25.0))
    decode = n / (time.perf_counter() - t)
    t = time.perf_counter()
    shot_segments(video, info.duration_s)
    shots = info.duration_s / (time.perf_counter() - t)
    return {"decode_clips_per_s_per_process": decode, "shot_detection_video_s_per_s": shots}


def cpu_name() -> str:
    """The CPU's model name and the vector features that matter for C3D (Linux)."""
    from phdcli.features.device import cpu_features

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name")), "unknown CPU")
    except OSError:
        name = "unknown CPU"
    return f"{name}; {', '.join(cpu_features()) or 'no vector features known'}"


# -- the cost sheet -----------------------------------------------------------------
def phd2_plan(csv: Path | None) -> dict[str, float]:
    """Mean duration, and clips and feature rows per last / history video, from annotations."""
    import math

    from phdcli.features.spec import FeatureSpec
    from phdcli.training.annotations import load_annotations
    from phdcli.training.jobs import plan_jobs

    spec = FeatureSpec()
    if csv is None or not csv.is_file():
        return {"source": "constants (no annotation file)", "mean_duration_s": 327.0,
                "clips_last": 2 * 2 * 327.0 / 5, "clips_history": 2 * 2.0, "rows_last": 131.0,
                "rows_history": 2.0}
    jobs = [j for j in plan_jobs(load_annotations(csv)) if j.annotated_duration_s > 0]
    durations = [j.annotated_duration_s for j in jobs]
    last = [j for j in jobs if j.segments]
    hist = [j for j in jobs if not j.segments]

    def spans(j: Any) -> int:
        return len(j.spans(j.annotated_duration_s))

    # Shots are not known without the videos: counted as many as the fixed segments
    # (5 s chunks), with no clip shared between the two (an upper bound on clips).
    fixed = [math.ceil(j.annotated_duration_s / 5) for j in last]
    per = spec.clips_per_segment
    return {
        "source": str(csv),
        "videos_in_file": len(jobs),
        "mean_duration_s": sum(durations) / len(durations),
        "mean_duration_last_s": sum(j.annotated_duration_s for j in last) / max(len(last), 1),
        "clips_last": sum(2 * f * per + spans(j) * per for f, j in zip(fixed, last, strict=True))
        / max(len(last), 1),
        "clips_history": sum(spans(j) * per for j in hist) / max(len(hist), 1),
        "rows_last": sum(2 * f + spans(j) for f, j in zip(fixed, last, strict=True))
        / max(len(last), 1),
        "rows_history": sum(spans(j) for j in hist) / max(len(hist), 1),
    }


def cost_sheet(plan: dict[str, float], rates: dict[str, float]) -> dict[str, float]:
    n_last, n_hist = PHD2_USERS, PHD2_VIDEOS - PHD2_USERS
    hours = PHD2_VIDEOS * plan["mean_duration_s"] / 3600
    clips = n_last * plan["clips_last"] + n_hist * plan["clips_history"]
    gpu_h = clips / H200_CLIPS_S / 3600
    decode_core_h = clips / rates["decode_clips_per_s_per_process"] / 3600
    shots_core_h = n_last * plan.get("mean_duration_last_s", plan["mean_duration_s"]) \
        / rates["shot_detection_video_s_per_s"] / 3600
    download_tb = hours * 3600 * ASSUMED_360P_MBIT_S / 8 / 1e6
    rows = n_last * plan["rows_last"] + n_hist * plan["rows_history"]
    store_gb = rows * 4096 * 2 / 1e9
    nodes_gpu = gpu_h / 24 / NODE_GPUS
    nodes_cpu = (decode_core_h + shots_core_h) / 24 / NODE_CORES
    return {
        "video_hours": hours, "c3d_clips": clips, "h200_gpu_hours": gpu_h,
        "decode_core_hours": decode_core_h, "shot_detection_core_hours": shots_core_h,
        "download_tb_at_assumed_bitrate": download_tb,
        "download_gbit_s_for_24h": download_tb * 8e3 / (24 * 3600),
        "store_gb_fp16": store_gb, "nodes_for_24h_gpu_bound": nodes_gpu,
        "nodes_for_24h_cpu_bound": nodes_cpu,
        "nodes_for_24h": max(nodes_gpu, nodes_cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 videos of 20 s (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--annotations", type=Path, default=DEV_CSV,
                        help="annotations whose durations and GIFs scale the cost sheet")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--suggest-only", action="store_true",
                        help="only the suggest rows and the archive example")
    parser.add_argument("--repeat", type=int, default=1,
                        help="suggest runs per engine, alternating (the best is kept)")
    parser.add_argument("--suggest-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, *paths = args.child
        child(engine, *(Path(p) for p in paths))
        return
    if args.suggest_child:
        from bench import suggest_scale

        suggest_scale.child(*args.suggest_child)
        return
    n, seconds = (2, 20) if args.quick else (4, 30)
    videos = make_videos(n, seconds)
    work = SCALE_DIR / "work"
    work.mkdir(parents=True, exist_ok=True)
    annotations = work / "annotations.csv"
    write_annotations(videos, seconds, annotations)
    weights = random_weights()
    env = {**os.environ, "PHD_HOME": str(work / "phd-home")}
    from bench import suggest_scale

    if args.suggest_only:
        suggest = suggest_scale.suggest_rows(videos, seconds, work, weights, env, args.repeat)
        rates = cpu_rates(videos[0])
        print(json.dumps({"machine": f"{os.cpu_count()} CPUs ({cpu_name()})",
                          "inputs": f"{n} videos x {seconds} s", "suggest": suggest,
                          "archive_example": suggest_scale.archive_example(
                              suggest, H200_CLIPS_S, rates["decode_clips_per_s_per_process"]),
                          "cpu_stages": rates}, indent=1))
        return
    # Convert the weights once, so that neither timed build pays it.
    run_child("local", annotations, SCALE_DIR, work / "warm-up", weights, env)
    local = run_child("local", annotations, SCALE_DIR, work / "local", weights, env)
    on_ray = run_child("ray", annotations, SCALE_DIR, work / "ray", weights, env)
    for r in (local, on_ray):
        r["videos_per_s"] = r["videos"] / r["wall_s"]
        r["clips_per_s"] = r["clips"] / r["wall_s"]
    suggest = suggest_scale.suggest_rows(videos, seconds, work, weights, env, args.repeat)
    rates = cpu_rates(videos[0])
    plan = phd2_plan(args.annotations)
    result = {
        "machine": f"{os.cpu_count()} CPUs ({cpu_name()}); C3D on CPU with RANDOM weights",
        "inputs": f"{n} videos x {seconds} s, 640x360 30 fps, a cut every 5 s",
        "local": local, "ray": on_ray,
        "ray_over_local_throughput": on_ray["wall_s"] and local["wall_s"] / on_ray["wall_s"],
        "cpu_stages": rates, "phd2_plan": plan, "cost_sheet": cost_sheet(plan, rates),
        "suggest": suggest,
        "archive_example": suggest_scale.archive_example(
            suggest, H200_CLIPS_S, rates["decode_clips_per_s_per_process"]),
        "assumptions": {"c3d_clips_per_s_per_gpu": f"{H200_CLIPS_S} (H200 bf16, measured earlier)",
                        "download_bitrate_mbit_s": f"{ASSUMED_360P_MBIT_S} (assumed, not measured)",
                        "node": f"{NODE_GPUS} GPUs + {NODE_CORES} cores (assumed)",
                        "shots_per_last_video": "as many as its 5 s segments (not measured)"},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
