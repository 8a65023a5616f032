"""The report's timeline: one SVG of a whole video (segment scores, picks, kept
spans, the site's heatmap) on one time axis.

A long video has thousands of segments (two hours of 5 s segments: 1,440);
one bar each would make the page hundreds of KB for bars a pixel wide. Past
``MAX_BARS`` neighbouring segments share a bar, drawn at their best score
(what a pick could come from), and its tooltip says how many it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from phdcli.suggest.results import clock

if TYPE_CHECKING:
    from phdcli.sources.heatmap import Heatmap
    from phdcli.suggest.results import Suggestion

_W = 1000  # the timeline's viewBox width
MAX_BARS = 250  # more segments than this share bars (4 viewBox units each at least)


@dataclass(frozen=True)
class Timeline:
    """Every segment of one video, for the report's timeline."""

    starts_s: np.ndarray  # (n,)
    ends_s: np.ndarray  # (n,)
    scores: np.ndarray  # (n,) the fused score (heatmap term included)
    excluded: np.ndarray  # (n,) bool: left out because the user already kept it
    kept_spans: tuple[tuple[float, float], ...] = ()
    heatmap: Heatmap | None = None


@dataclass(frozen=True)
class _Bar:
    start_s: float
    end_s: float
    score: float  # the best finite score of its segments (nan if none)
    excluded: bool  # every segment of it was kept before
    n: int  # segments it holds


def bars(t: Timeline, max_bars: int = MAX_BARS) -> list[_Bar]:
    """One bar per segment, or per run of ``ceil(n / max_bars)`` neighbouring segments."""
    scores = np.asarray(t.scores, dtype=np.float64)
    n = len(scores)
    size = max(1, math.ceil(n / max_bars))
    out = []
    for i in range(0, n, size):
        group, kept = scores[i:i + size], np.asarray(t.excluded[i:i + size], dtype=bool)
        all_kept = bool(kept.all())
        candidates = group if all_kept else group[~kept]  # a kept segment is never picked
        finite = candidates[np.isfinite(candidates)]
        out.append(_Bar(float(t.starts_s[i]), float(t.ends_s[min(i + size, n) - 1]),
                        float(finite.max()) if finite.size else math.nan, all_kept, len(group)))
    return out


def render_timeline(t: Timeline, picks: Sequence[Suggestion], duration_s: float) -> str:
    """One SVG: segment scores as bars, a mark per pick, kept spans, the heatmap band."""
    duration_s = max(duration_s, 1e-6)

    def x(sec: float) -> float:
        return min(max(sec / duration_s, 0.0), 1.0) * _W

    bars_top, bars_h = 26, 90
    heat_top, heat_h = bars_top + bars_h + 8, 40 if t.heatmap else 0
    axis_y = heat_top + heat_h + 4
    height = axis_y + 22
    parts = []
    shown = bars(t)
    finite = np.array([b.score for b in shown if math.isfinite(b.score)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = (hi - lo) or 1.0
    for bar in shown:
        score = bar.score
        h = 6 + (score - lo) / span * (bars_h - 6) if math.isfinite(score) else 6
        cls = "seg kept" if bar.excluded else "seg"
        what = f"best of {bar.n} segments: " if bar.n > 1 else ""
        tip = (f"{clock(bar.start_s)}-{clock(bar.end_s)}: {what}score {score:.3f}"
               + (" (kept before)" if bar.excluded else ""))
        parts.append(f'<rect class="{cls}" x="{x(bar.start_s):.1f}" '
                     f'y="{bars_top + bars_h - h:.1f}" '
                     f'width="{max(x(bar.end_s) - x(bar.start_s) - 1, 0.5):.1f}" '
                     f'height="{h:.1f}"><title>{tip}</title></rect>')
    for a, b in t.kept_spans:
        parts.append(f'<rect class=kept-span x="{x(a):.2f}" y="{bars_top}" '
                     f'width="{max(x(b) - x(a), 1):.2f}" height="{bars_h}">'
                     f"<title>kept before: {clock(a)}-{clock(b)}</title></rect>")
    for s in picks:
        left, right = x(s.start_s), x(s.end_s)
        parts.append(
            f'<a href="#pick-{s.rank}"><rect class=pick-mark data-rank="{s.rank}" '
            f'x="{left:.2f}" y="2" width="{max(right - left, 2):.2f}" height="{bars_top + bars_h}">'
            f"<title>#{s.rank}: {clock(s.start_s)}-{clock(s.end_s)}</title></rect>"
            f'<text class=pick-label x="{(left + right) / 2:.2f}" y="16">{s.rank}</text></a>')
    if t.heatmap:
        peak = max(v for _, _, v in t.heatmap) or 1.0
        points = [f"{x(t.heatmap[0][0]):.2f},{heat_top + heat_h}"]
        for a, b, v in t.heatmap:
            y = heat_top + heat_h - max(v, 0.0) / peak * heat_h
            points += [f"{x(a):.2f},{y:.2f}", f"{x(b):.2f},{y:.2f}"]
        points.append(f"{x(t.heatmap[-1][1]):.2f},{heat_top + heat_h}")
        parts.append(f'<polygon class=heatmap points="{" ".join(points)}">'
                     "<title>most replayed (from the site)</title></polygon>")
    step = _tick_step(duration_s)
    ticks = []
    sec = 0.0
    while sec <= duration_s + 1e-9:
        ticks.append(f'<line class=tick x1="{x(sec):.2f}" x2="{x(sec):.2f}" y1="{axis_y}" '
                     f'y2="{axis_y + 5}"/><text class=tick x="{x(sec):.2f}" '
                     f'y="{axis_y + 17}">{clock(sec, tenths=False)}</text>')
        sec += step
    return (f'<svg id=timeline viewBox="-12 0 {_W + 24} {height}" role=img '
            f'aria-label="timeline of the video">'
            f'<line class=axis x1="0" x2="{_W}" y1="{axis_y}" y2="{axis_y}"/>'
            f'{"".join(parts)}{"".join(ticks)}</svg>')


def _tick_step(duration_s: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration_s / step <= 12:
            return float(step)
    return 7200.0
