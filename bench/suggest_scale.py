"""The suggest row of ``python -m bench.scale``: ``phd suggest`` batches, local vs ``--engine ray``.

The same generated videos as the build rows, a history of one GIF cut from
the first (so that C3D runs), RANDOM C3D weights; each engine in a child
process with an empty feature cache (the converted weights kept: neither
pays the conversion). Ray runs on a local cluster of this machine's CPUs,
its start-up timed apart (``phd suggest --engine ray`` pays it once per
batch); the C3D actor's start is in the wall time, as the local engine's
C3D load is. The archive example scales the local rate measured here to
5,000 five-minute videos (by the clips of a five-minute video's plan), and
the GPU side by the H200 rate in the README.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.inputs import ffmpeg_exe, start_local_ray

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE_VIDEOS, ARCHIVE_VIDEO_S = 5_000, 300.0


def history_gif(video: Path, folder: Path) -> Path:
    """A small GIF cut from ``video`` (2-4 s): the history that makes C3D run."""
    folder.mkdir(parents=True, exist_ok=True)
    gif = folder / "liked.gif"
    if not gif.exists():
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-ss", "2",
                        "-t", "2", "-i", str(video), "-vf", "fps=10,scale=160:-1", str(gif)],
                       check=True)
    return folder


def child(engine: str, out: str, weights: str, history: str, *videos: str) -> None:
    """One batch with ``engine``; prints its numbers as one JSON line."""
    from phdcli.suggest.config import SuggestConfig
    from phdcli.suggest.pipeline import suggest_batch

    start_s = start_local_ray() if engine == "ray" else 0.0
    cfg = SuggestConfig(out_dir=Path(out), c3d_weights=Path(weights), history_dir=Path(history),
                        device="cpu", engine=engine, force=True)
    t = time.perf_counter()
    batch = suggest_batch(list(videos), cfg)
    wall_s = time.perf_counter() - t
    print(json.dumps({"engine": engine, "wall_s": wall_s, "cluster_start_s": start_s,
                      "videos": len(batch.results), "failed": len(batch.failures),
                      "clips": batch.stats.clips_forwarded,
                      "picks": [[(s.start_s, s.end_s) for s in r.suggestions]
                                for r in batch.results],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(engine: str, videos: list[Path], work: Path, weights: Path,
              env: dict[str, str]) -> dict[str, Any]:
    """``child`` in a fresh process, the feature cache emptied first."""
    shutil.rmtree(Path(env["PHD_HOME"]) / "cache" / "features", ignore_errors=True)
    history = history_gif(videos[0], work / "suggest-history")
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--suggest-child", engine,
                           str(work / f"suggest-{engine}"), str(weights), str(history),
                           *map(str, videos)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"suggest on {engine} failed: {proc.stderr.strip()[-2000:]}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    row["videos_per_s"] = row["videos"] / row["wall_s"]
    row["clips_per_s"] = row["clips"] / row["wall_s"]
    return row


def suggest_rows(videos: list[Path], seconds: int, work: Path, weights: Path,
                 env: dict[str, str], repeat: int = 1) -> dict[str, Any]:
    """Local and Ray, alternating ``repeat`` times on the same videos (the best wall of each
    kept: this machine may be shared); the same picks is checked, not assumed."""
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for _ in range(repeat):
        for engine in ("local", "ray"):
            runs[engine].append(run_child(engine, videos, work, weights, env))
    local, on_ray = (min(runs[e], key=lambda r: r["wall_s"]) for e in ("local", "ray"))
    if local["picks"] != on_ray["picks"]:
        raise RuntimeError(f"local and Ray picks differ: {local['picks']} vs {on_ray['picks']}")
    return {"local": local, "ray": on_ray, "runs_each": repeat,
            "walls_s": {e: [round(r["wall_s"], 1) for r in rs] for e, rs in runs.items()},
            "ray_over_local_throughput": local["wall_s"] / on_ray["wall_s"],
            "local_realtime_factor": len(videos) * seconds / local["wall_s"]}


def archive_example(rows: dict[str, Any], gpu_clips_per_s: float,
                    decode_clips_per_s: float) -> dict[str, float]:
    """5,000 five-minute videos: machine-hours like this one at the local engine's clips/s
    measured here (its per-video costs included: probe, GIF writing, C3D load spread over
    the batch's clips), and C3D alone at the GPU rate, both for the clips of the default
    coarse-to-fine plan of a five-minute video; with a GPU, decoding stays on CPU cores."""
    from phdcli import defaults
    from phdcli.features.spec import FeatureSpec
    from phdcli.ranking.rank import DEFAULT_MARGIN

    n_segments = ARCHIVE_VIDEO_S / defaults.SEGMENT_LENGTH_S
    # Coarse: one clip per segment; fine: the rest of the candidates' clips.
    clips = n_segments + DEFAULT_MARGIN * defaults.K * (FeatureSpec().clips_per_segment - 1)
    total = ARCHIVE_VIDEOS * clips
    return {"videos": ARCHIVE_VIDEOS, "video_hours": ARCHIVE_VIDEOS * ARCHIVE_VIDEO_S / 3600,
            "clips_per_video": clips, "c3d_clips": total,
            "machine_hours_like_this_one": total / rows["local"]["clips_per_s"] / 3600,
            "h200_gpu_hours_c3d": total / gpu_clips_per_s / 3600,
            "decode_core_hours": total / decode_clips_per_s / 3600}
