"""GPU lines for a machine without ffmpeg or our inputs (``python -m bench.gpu CLIP``).

Builds a 10-minute video by remuxing copies of a carried H.264 clip with
PyAV (no re-encode), writes RANDOM C3D weights, then measures C3D clips/s on
CUDA (the precision phd picks, and fp32) and ``phd suggest`` end to end on
it (cold, then warm), with the same instrumented child as ``python -m bench``.
Without an ffmpeg binary the GIFs cannot be written: the runs are then
``--dry-run`` and the R1 baseline is a PyAV decode of every frame.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench import measure as m


def remux_copies(src: Path, out: Path, copies: int) -> Path:
    import av

    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        s_in = inp.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        packets = [p for p in inp.demux(s_in) if p.dts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        for i in range(copies):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + i * span, p.dts + i * span
                q.duration, q.time_base, q.is_keyframe = p.duration, p.time_base, p.is_keyframe
                q.stream = s_out
                dst.mux(q)
    return out


def pyav_decode_all_s(video: Path) -> float:
    import av

    t0 = time.perf_counter()
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t0


def main() -> int:
    clip, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PHD_HOME"] = str(work / "bench-home")
    res: dict[str, object] = {}
    video = remux_copies(clip, work / "long.mp4", 20)
    sys.path.insert(0, str(m.ROOT / "tests"))
    from c3d_files import write_mmaction2_pth

    weights = write_mmaction2_pth(work / "c3d-random.pth")
    os.environ["PHD_C3D_WEIGHTS"] = str(weights)
    from phdcli.media.probe import probe

    info = probe(video)
    res["video"] = f"{info.duration_s:.0f} s {info.width}x{info.height} {info.fps:g} fps"
    import torch

    res["gpu"] = torch.cuda.get_device_name(0)
    for prec in ("auto", "fp32"):
        ext = m.extractor("cuda", prec, weights)
        for batch in (8, 32):
            t = m.c3d_clips_per_s(ext, batch, 5, 30)
            res[f"c3d_cuda_{ext.runtime.precision}_b{batch}_clips_per_s"] = round(t.value, 1)
        del ext
        torch.cuda.empty_cache()
    ffmpeg = shutil.which("ffmpeg")
    extra = [] if ffmpeg else ["--dry-run"]
    if ffmpeg:
        os.environ["PHD_FFMPEG"] = ffmpeg
        res["baseline"] = "ffmpeg null"
        res["baseline_s"] = min(m.command_s([ffmpeg, "-nostdin", "-loglevel", "error", "-i",
                                             str(video), "-f", "null", "-"]) for _ in range(2))
    else:
        res["baseline"] = "PyAV decode of every frame (no ffmpeg binary here)"
        res["baseline_s"] = min(pyav_decode_all_s(video) for _ in range(2))
    home = m.fresh_home()
    runs = []
    for i in range(3):  # cold, warm, warm
        runs.append(m.run_phd(m.suggest_args(video, home / f"out{i}") + extra, home,
                              weights))
    cold2_home = m.fresh_home()
    cold2 = m.run_phd(m.suggest_args(video, cold2_home / "out") + extra, cold2_home, weights)
    colds = sorted([runs[0].wall_s, cold2.wall_s])
    res["r1_cold_s"] = colds
    res["r1_ratio"] = round(min(colds) / float(res["baseline_s"]), 3)  # type: ignore[arg-type]
    res["realtime_factor"] = round(info.duration_s / min(colds), 1)
    res["r6_warm_s"] = [r.wall_s for r in runs[1:]]
    res["r6_ratio"] = round(min(r.wall_s for r in runs[1:]) / min(colds), 3)
    res["gifs_written"] = not extra
    res["cold_times"] = runs[0].report["times"]
    res["cold_start_s"] = runs[0].start_s + runs[0].report["import_cli_s"]
    res["cold_rss_mb"] = runs[0].maxrss_kb / 1024
    res["warm_times"] = runs[1].report["times"]
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
