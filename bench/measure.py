"""The measurements: each returns plain numbers (seconds, clips/s, KB).

Heavy imports (torch, PyAV, phdcli's pipeline) happen inside the functions,
after ``__main__`` has pointed ``PHD_HOME`` at the bench's own folder.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
C3D_GFLOP_PER_CLIP = 77.0  # 38.5 G multiply-accumulates


@dataclass
class Series:
    """Repeated samples of one measurement; ``value`` is their median."""

    samples: list[float] = field(default_factory=list)

    @property
    def value(self) -> float:
        return statistics.median(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)


def repeat(fn: Callable[[], float], reps: int, budget_s: float) -> Series:
    """Run ``fn`` at least once and up to ``reps`` times, stopping once ``budget_s`` is spent."""
    series = Series()
    t0 = time.perf_counter()
    for _ in range(max(reps, 1)):
        series.samples.append(float(fn()))
        if time.perf_counter() - t0 >= budget_s:
            break
    return series


# -- end to end ----------------------------------------------------------------
@dataclass
class PhdRun:
    wall_s: float
    start_s: float  # parent's launch -> first line of the child (interpreter start-up)
    maxrss_kb: int
    report: dict[str, Any]

    def stage(self, key: str) -> float:
        return float(self.report["times"].get(key, 0.0))


def run_phd(args: list[str], home: Path, weights: Path, timeout_s: float = 3600) -> PhdRun:
    """``python -m bench.child`` (phdcli.cli.main in-process, stage timers, peak RSS)."""
    env = dict(os.environ, PHD_HOME=str(home), PHD_C3D_WEIGHTS=str(weights))
    env.pop("PHD_DEBUG", None)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        report_path = Path(fh.name)
    try:
        t0_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.child", str(report_path), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"phd {' '.join(args)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[-2000:]}")
        report = json.loads(report_path.read_text())
    finally:
        report_path.unlink(missing_ok=True)
    return PhdRun(wall, report["t_start"] - t0_wall, int(report["maxrss_kb"]), report)


def suggest_args(video: Path, out: Path) -> list[str]:
    """What a user with a history runs (an empty history would run no C3D)."""
    from bench.inputs import history_dir

    return ["suggest", str(video), "-k", "5", "--out", str(out), "--device", "auto",
            "--history", str(history_dir())]


def ffmpeg_null_s(video: Path) -> float:
    """Plain ffmpeg decode of the whole video to null (its default threads)."""
    from bench.inputs import ffmpeg_exe

    t0 = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
                    "-i", str(video), "-map", "0:v:0", "-f", "null", "-"], check=True)
    return time.perf_counter() - t0


def command_s(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


# -- pieces of the pipeline ----------------------------------------------------
def extractor(device: str, precision: str, weights: Path) -> Any:
    """phdcli's FeatureExtractor with its network loaded (the bench's own PHD_HOME)."""
    from phdcli.features.extractor import FeatureExtractor

    ext = FeatureExtractor(c3d_weights=weights, device=device, precision=precision)
    ext.network.load()
    return ext


def c3d_clips_per_s(ext: Any, batch: int, reps: int, budget_s: float) -> Series:
    """C3D forward only (random float input, ``batch`` clips) in ext's runtime."""
    import torch

    net = ext.network.load().model
    rt = ext.runtime
    x = torch.randn(batch, 3, 16, 112, 112, device=rt.device)

    def once(n: int) -> float:
        with torch.inference_mode(), rt.autocast():
            if rt.device_type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x[:n], layer=ext.spec.layer)
            if rt.device_type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    once(1 if rt.device_type == "cpu" else batch)  # warm-up (oneDNN / cuDNN set-up)
    return repeat(lambda: batch / once(batch), reps, budget_s)


def matmul_gflops(n: int, reps: int) -> Series:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)

    def once() -> float:
        t0 = time.perf_counter()
        torch.mm(a, b)
        return 2 * n**3 / (time.perf_counter() - t0) / 1e9

    return repeat(once, reps, budget_s=60)


def decode_clips_s(video: Path, ext: Any, segment_length_s: float = 5.0) -> tuple[float, int]:
    """decode_clips alone over exactly the clip starts ``phd suggest`` uses."""
    from phdcli.media.decode import decode_clips
    from phdcli.media.probe import probe
    from phdcli.media.segments import clip_starts, fixed_segments

    info = probe(video)
    spec = ext.spec
    starts = sorted(
        s for seg in fixed_segments(info.duration_s, segment_length_s)
        for s in clip_starts(seg, info.duration_s, spec.clip_fps, spec.clips_per_segment,
                             spec.clip_frames)
    )
    t0 = time.perf_counter()
    n = sum(1 for _ in decode_clips(video, starts, spec.clip_fps, spec.clip_frames))
    return time.perf_counter() - t0, n


@dataclass
class Dense:
    seconds: float  # for all windows (extrapolated when measured < total)
    measured_s: float
    windows_total: int
    windows_measured: int
    precision: str = "?"  # what C3D ran in

    @property
    def extrapolated(self) -> bool:
        return self.windows_measured < self.windows_total


def dense_extraction(video: Path, ext: Any, max_windows: int) -> Dense:
    """Video2GIF-style features: a 16-frame window every 8 frames at the native
    rate, each window and its horizontal mirror through C3D, batched.

    Same decoder (decode_clips, consecutive 16-frame blocks at the native
    rate, decoded once in a prefetch thread) and same C3D call as phd. Only
    the first ``max_windows`` windows are run when there are more; the time
    is extrapolated linearly to all of them.
    """
    import numpy as np

    from phdcli.features.network import Prefetch
    from phdcli.media.decode import decode_clips
    from phdcli.media.probe import probe

    info = probe(video)
    fps = info.fps
    n_frames = info.n_frames or int(info.duration_s * fps)
    total = (n_frames - 16) // 8 + 1
    todo = min(total, max_windows)
    need_frames = 16 + 8 * (todo - 1)
    blocks = [i * 16 / fps for i in range((need_frames + 15) // 16)]
    half = ext.batch_clips // 2  # a batch holds half windows, half mirrors

    t0 = time.perf_counter()
    frames = np.empty((0, 128, 171, 3), np.uint8)
    pending: list[np.ndarray] = []
    done = 0
    with Prefetch(decode_clips(video, blocks, fps, 16), depth=4) as decoded:
        for block in decoded:
            frames = np.concatenate([frames, block])
            while len(frames) >= 16 and done + len(pending) < todo:
                pending.append(frames[:16])
                frames = frames[8:]
                if len(pending) == half:
                    ext.network.forward(np.stack(pending + [w[:, :, ::-1] for w in pending]))
                    done += len(pending)
                    pending = []
            if done + len(pending) >= todo:
                break
    if pending:
        ext.network.forward(np.stack(pending + [w[:, :, ::-1] for w in pending]))
        done += len(pending)
    measured = time.perf_counter() - t0
    return Dense(measured * total / done, measured, total, done,
                 ext.runtime.precision)


def score_s(n_segments: int, n_history: int, reps: int, rows: int | None = None) -> Series:
    """FusedModel.score, bundled model, random L2-normalised 4096-d features;
    ``rows``: only that many segments rescored (the fine pass's candidates),
    with the history's norms from the first scoring, as rank_segments does."""
    import numpy as np

    from phdcli.features.clips import l2_normalise
    from phdcli.ranking.model import default_model_path, load_model, squared_norms

    model = load_model(default_model_path())
    rng = np.random.default_rng(0)
    dim = 4096
    seg = l2_normalise(np.abs(rng.standard_normal((n_segments, dim)))).astype(np.float32)
    hist = l2_normalise(np.abs(rng.standard_normal((n_history, dim)))).astype(np.float32)
    starts = np.arange(n_segments) * 5.0
    ends = starts + 5.0
    picked = None if rows is None else rng.permutation(n_segments)[:rows]
    norms = None if rows is None else squared_norms(hist)
    model.score(seg, hist, starts, ends, float(ends[-1]), rows=picked,
                history_sq=norms)  # warm-up

    def once() -> float:
        t0 = time.perf_counter()
        model.score(seg, hist, starts, ends, float(ends[-1]), rows=picked, history_sq=norms)
        return time.perf_counter() - t0

    return repeat(once, reps, budget_s=30)


def fresh_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="phd-bench-home-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
