"""R9-R12: C3D that costs less on a CPU, and what that costs the ranking.

Every number is a ratio or a count taken in the same run (the machine may be
shared): int8 vs fp32 forwards alternate on the same batch; the decode-alone
and C3D-alone times re-run exactly the clips a ``phd suggest`` computed.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import Series


def real_clips(video: Path, n: int, spec: Any) -> np.ndarray:
    """``n`` uint8 clips spread over ``video``, as the int8 self-check takes them."""
    from phdcli.features.int8 import spread_clips
    from phdcli.media.probe import probe

    return spread_clips(probe(video), spec, n)


def forward_pair(fast: Any, base: Any, clips: np.ndarray, rounds: int,
                 budget_s: float) -> tuple[Series, Series, Series]:
    """clips/s of two extractors' networks (``forward``, preprocessing included),
    alternating on the same batch; the ratio is taken per round."""
    fast.network.forward(clips[:1])
    base.network.forward(clips[:1])
    a, b, ratio = Series(), Series(), Series()
    t0 = time.perf_counter()
    for _ in range(max(rounds, 1)):
        ta = time.perf_counter()
        fast.network.forward(clips)
        ta = time.perf_counter() - ta
        tb = time.perf_counter()
        base.network.forward(clips)
        tb = time.perf_counter() - tb
        a.samples.append(len(clips) / ta)
        b.samples.append(len(clips) / tb)
        ratio.samples.append(tb / ta)
        if time.perf_counter() - t0 > budget_s:
            break
    return a, b, ratio


def decode_recorded_s(computed: list[dict[str, Any]], spec: Any) -> tuple[float, int]:
    """decode_clips alone over exactly the clips a run computed (each pass as it ran)."""
    from phdcli.features.clips import TICKS_PER_S
    from phdcli.media.decode import decode_clips

    total, n = 0.0, 0
    for entry in computed:
        starts = [t / TICKS_PER_S for t in entry["ticks"]]
        t0 = time.perf_counter()
        n += sum(1 for _ in decode_clips(Path(entry["video"]), starts, spec.clip_fps,
                                         spec.clip_frames))
        total += time.perf_counter() - t0
    return total, n


def cut_gifs(video: Path, folder: Path, at_s: list[float], length_s: float = 3.0) -> Path:
    """History GIFs cut from ``video`` as users make them (10 fps, palette)."""
    from bench.inputs import ffmpeg_exe

    folder.mkdir(parents=True, exist_ok=True)
    graph = ("fps=10,scale=240:-1:flags=lanczos,split[a][b];"
             "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer")
    for t in at_s:
        out = folder / f"liked-{t:g}.gif"
        if not out.exists():
            subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
                            "-y", "-ss", str(t), "-t", str(length_s), "-i", str(video),
                            "-filter_complex", graph, "-loop", "0", str(out)], check=True)
    return folder


def agreement(video: Path, history: Path, weights: Path, k: int, home_default: Path,
              home_reference: Path) -> dict[str, Any]:
    """Top-k of the default path (auto precision, coarse to fine) vs fp32 exhaustive,
    and the margin the coarse pass needed on this video (from the cached clips)."""
    from phdcli.media.probe import probe
    from phdcli.media.segments import fixed_segments
    from phdcli.ranking.rank import DEFAULT_MARGIN
    from phdcli.suggest.config import SuggestConfig
    from phdcli.suggest.pipeline import Suggester

    saved = os.environ.get("PHD_HOME")
    try:
        os.environ["PHD_HOME"] = str(home_default)
        # The ranking's top k (no gap or shot rule), as `phd eval` compares them:
        # with the gap rule a near-tie swapped once changes every later pick.
        cfg = SuggestConfig(k=k, history_dir=history, c3d_weights=weights, device="cpu",
                            dry_run=True, min_gap_s=0.0, one_shot=False)
        default = Suggester(cfg)
        got = [s.segment_start_s for s in default.run(video).suggestions]
        runtime = default.extractor.runtime_in_use
        precision = runtime.precision if runtime is not None else "?"
        os.environ["PHD_HOME"] = str(home_reference)
        ref = Suggester(replace(cfg, precision="fp32", exhaustive=True))
        want = [s.segment_start_s for s in ref.run(video).suggestions]
        # The coarse pass's ranking, from clips the exhaustive run cached.
        info = probe(video)
        segments = fixed_segments(info.duration_s, cfg.length_s)
        _, hist = ref.history_features()
        coarse = ref.extractor.segment_features(info, segments, full=np.zeros(len(segments), bool))
        starts = np.array([s.start_s for s in segments])
        ends = np.array([s.end_s for s in segments])
        total = ref.model.score(coarse.segments, hist, starts, ends, info.duration_s).total
        place = np.empty(len(segments), int)
        place[np.argsort(-total, kind="stable")] = np.arange(1, len(segments) + 1)
        worst = max(int(place[np.searchsorted(starts, s)]) for s in want)
    finally:
        if saved is None:
            os.environ.pop("PHD_HOME", None)
        else:
            os.environ["PHD_HOME"] = saved
    return {
        "video": video.name, "segments": len(segments), "k": k, "precision": precision,
        "default_top": got, "reference_top": want, "same": len(set(got) & set(want)),
        "same_order": got == want, "clips_skipped": default.clips_skipped,
        "coarse_place_of_worst_reference_pick": worst,
        "margin_needed": worst / k, "margin_used": DEFAULT_MARGIN,
    }
