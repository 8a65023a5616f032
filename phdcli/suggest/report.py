"""``--report``: a contact sheet of the picks, one self-contained HTML page per video.

The page needs no network and no script: inline CSS and SVG, the GIFs by
relative path (the folder can move), the nearest history GIFs embedded as
data URIs (they live elsewhere, in the user's profile). It shows the picks in
rank order with their span, score, the ``--explain`` terms as bars and the
nearest history GIF; a timeline of the whole video (every segment's score,
the picks marked, kept spans hatched, the site's "most replayed" heatmap on
the same axis); and the device, precision, model, history and command.

Pure string building from what ``phd suggest`` already computed; pages are
written atomically.
"""

from __future__ import annotations

import base64
import html
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from phdcli import __version__
from phdcli.fsutil import atomic_write_text
from phdcli.suggest.manifest import INDEX, INDEX_OWNER, place_text
from phdcli.suggest.results import clock, count

if TYPE_CHECKING:
    from phdcli.sources.heatmap import Heatmap
    from phdcli.suggest.results import BatchResult, Suggestion, VideoSuggestions

GENERATOR = f"phd {__version__}"
# A history GIF larger than this is named, not embedded: the page stays light.
MAX_EMBED_BYTES = 3_000_000
_MIME = {".gif": "image/gif", ".webp": "image/webp", ".mp4": "video/mp4",
         ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska"}
_W = 1000  # the timeline's viewBox width


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
class RunInfo:
    """What produced the picks, said on the page."""

    device: str
    model: str
    history: str
    command: str  # with "{input}" where the video goes
    heatmap_weight: float = 0.0
    history_files: dict[str, Path] = field(default_factory=dict)  # name -> file


def page_path(out_dir: Path, stem: str, single: bool) -> Path:
    """index.html for a lone video; ``<stem>.html`` beside an index in a batch."""
    if single:
        return Path(out_dir) / INDEX
    return Path(out_dir) / (f"{stem}-video.html" if f"{stem}.html" == INDEX else f"{stem}.html")


# -- the per-video page -------------------------------------------------------
def write_video_page(result: VideoSuggestions, timeline: Timeline, run: RunInfo,
                     path: Path, title: str) -> Path:
    atomic_write_text(path, render_video_page(result, timeline, run, path.parent, title))
    return path


def render_video_page(result: VideoSuggestions, timeline: Timeline, run: RunInfo,
                      page_dir: Path, title: str) -> str:
    """``title``: the video's name as phd shows it (the sanitised stem)."""
    picks = result.suggestions
    scale = max((abs(v) for s in picks for _, v in _terms(s)), default=0.0) or 1.0
    # Each history GIF is embedded once, as a CSS background that every card
    # showing it reuses (an <img> per card would repeat the data).
    nearest = sorted({s.explanation.nearest_gif for s in picks} - {None})
    thumbs = {name: f"h{i}" for i, name in enumerate(nearest)}
    thumb_css = "".join(_thumb_rule(thumbs[name], run.history_files.get(name)) for name in nearest)
    cards = "\n".join(_card(s, page_dir, thumbs, scale) for s in picks)
    n_kept = int(np.count_nonzero(timeline.excluded))
    kept_note = (f"; {n_kept} segment(s) left out because you kept them "
                 "(<code>--include-kept</code> brings them back)" if n_kept else "")
    facts = [
        ("input", _e(result.input)),
        ("length", f"{clock(result.duration_s)} "
                   f"({count(result.n_segments, 'segment')}{kept_note})"),
        ("device", _e(run.device)),
        ("model", _e(run.model)),
        ("history", _e(run.history)),
        ("heatmap", _heatmap_note(timeline.heatmap, run.heatmap_weight)),
        ("command", f"<code>{_e(run.command.replace('{input}', shlex.quote(result.input)))}"
                    f"</code> <span class=dim>(in {_e(os.getcwd())})</span>"),
    ]
    rows = "\n".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = f"""<header><h1>{_e(title)}</h1>
<p class=dim>{count(len(picks), 'pick')} from {_e(result.input)}</p></header>
<section><h2>Timeline</h2>
{render_timeline(timeline, picks, result.duration_s)}
<p class="legend dim"><span class=sw-seg></span> score of each segment
<span class=sw-pick></span> picked
{'<span class=sw-kept></span> kept before' if timeline.kept_spans else ''}
{'<span class=sw-heat></span> most replayed (from the site)' if timeline.heatmap else ''}</p>
</section>
<section><h2>Picks</h2>
<div class=cards>
{cards}
</div></section>
<section><h2>How these were made</h2><dl>
{rows}
</dl></section>"""
    return _page(f"phd: {title}", body, thumb_css)


def _card(s: Suggestion, page_dir: Path, thumbs: dict[str, str], scale: float) -> str:
    media = "<p class=dim>(not written)</p>"
    if s.path is not None:
        src = _relative_url(Path(s.path), page_dir)
        alt = f"rank {s.rank}: {clock(s.start_s)}-{clock(s.end_s)}"
        media = _media(src, Path(s.path).suffix.lower(), "pick", alt)
    e = s.explanation
    nearest = "<p class=dim>no history yet: the temporal prior ranks alone</p>"
    if e.nearest_gif is not None:
        thumb = (f'<div class="history {thumbs[e.nearest_gif]}" role=img '
                 f'aria-label="{_e(e.nearest_gif)}"></div>')
        nearest = (f"<div class=nearest>{thumb}<p>nearest in your history:<br>"
                   f"<b>{_e(e.nearest_gif)}</b><br>similarity {e.similarity:.3f}</p></div>")
    return f"""<article class=card id="pick-{s.rank}">
<div class=media>{media}</div>
<h3><span class=rank>#{s.rank}</span> {clock(s.start_s)}&ndash;{clock(s.end_s)}
<span class=score>score {s.score:.3f}</span></h3>
{_term_bars(s, scale)}
{nearest}
</article>"""


def _terms(s: Suggestion) -> list[tuple[str, float]]:
    e = s.explanation
    terms = [("content FNN", e.fnn), ("SVM-D", e.svm), ("temporal prior", e.time)]
    if e.heatmap_term is not None:
        terms.append(("heatmap", e.heatmap_term))
    return terms


def _term_bars(s: Suggestion, scale: float) -> str:
    """Each term as a bar from a zero line; one scale for all cards, so they compare."""
    terms = _terms(s)
    row, label_w, bar_w = 18, 110, 150
    mid = label_w + bar_w / 2
    parts = []
    for i, (name, value) in enumerate(terms):
        y = i * row
        width = abs(value) / scale * (bar_w / 2)
        x = mid if value >= 0 else mid - width
        cls = "pos" if value >= 0 else "neg"
        parts.append(
            f'<text x="0" y="{y + 13}">{name}</text>'
            f'<rect class="{cls}" x="{x:.1f}" y="{y + 3}" width="{max(width, 0.5):.1f}" '
            f'height="12"><title>{name}: {value:.4f}</title></rect>'
            f'<text class=val x="{label_w + bar_w + 6}" y="{y + 13}">{value:+.3f}</text>'
        )
    height = len(terms) * row
    return (f'<svg class=terms viewBox="0 0 {label_w + bar_w + 60} {height}" role=img '
            f'aria-label="score terms"><line x1="{mid}" x2="{mid}" y1="0" y2="{height}"/>'
            f'{"".join(parts)}</svg>')


# -- the timeline -------------------------------------------------------------
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
    scores = np.asarray(t.scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = (hi - lo) or 1.0
    for start, end, score, out in zip(t.starts_s, t.ends_s, scores, t.excluded, strict=True):
        h = 6 + (score - lo) / span * (bars_h - 6) if math.isfinite(score) else 6
        cls = "seg kept" if out else "seg"
        tip = f"{clock(start)}-{clock(end)}: score {score:.3f}" + (" (kept before)" if out
                                                                     else "")
        parts.append(f'<rect class="{cls}" x="{x(start):.2f}" y="{bars_top + bars_h - h:.2f}" '
                     f'width="{max(x(end) - x(start) - 1, 0.5):.2f}" height="{h:.2f}">'
                     f"<title>{tip}</title></rect>")
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


def _heatmap_note(heatmap: Heatmap | None, weight: float) -> str:
    if heatmap is None:
        return "the source published none"
    effect = ("not in the score (<code>--heatmap-weight</code> 0)" if weight == 0 else
              f"in the score with the hand-set, unmeasured weight {weight:g}")
    return f"{len(heatmap)} spans from the site; {effect}"


# -- the index of a batch -----------------------------------------------------
def write_index(batch: BatchResult, out_dir: Path, force: bool = False) -> Path:
    """The batch's index.html, placed as phd places its files (``manifest.place``):
    replacing an index.html phd wrote, refusing a file of the user's without ``force``."""
    path = Path(out_dir) / INDEX
    rows = []
    for r in batch.results:
        link = (f'<a href="{_relative_url(r.report, path.parent)}">{_e(r.input)}</a>'
                if r.report is not None else _e(r.input))
        thumbs = "".join(_media(_relative_url(Path(s.path), path.parent),
                                Path(s.path).suffix.lower(), "thumb", f"rank {s.rank}")
                         for s in r.suggestions[:3] if s.path is not None)
        rows.append(f"<li>{link} <span class=dim>{clock(r.duration_s)}, "
                    f"{count(len(r.suggestions), 'pick')}</span>"
                    f"<div class=thumbs>{thumbs}</div></li>")
    for f in batch.failures:
        rows.append(f"<li class=failed>{_e(f.input)}: {_e(f.message)}</li>")
    body = (f"<header><h1>phd suggest: {count(len(batch.results), 'video')}</h1></header>"
            f"<section><ul class=index>{''.join(rows)}</ul></section>")
    place_text(Path(out_dir), INDEX_OWNER, path, _page("phd: contact sheets", body), force)
    return path


# -- helpers ------------------------------------------------------------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _relative_url(target: Path, page_dir: Path) -> str:
    """A relative URL from the page to ``target``: the folder can move as a whole."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return quote(Path(rel).as_posix(), safe="/")


def _media(src: str, suffix: str, cls: str, alt: str) -> str:
    if _MIME.get(suffix, "image/").startswith("video/"):
        return (f'<video class="{cls}" src="{src}" autoplay loop muted playsinline '
                f'aria-label="{_e(alt)}"></video>')
    return f'<img class="{cls}" src="{src}" alt="{_e(alt)}" loading="eager">'


def _thumb_rule(css_class: str, path: Path | None) -> str:
    """A history GIF as a data URI (the page must not depend on the profile's folder).

    Images only (GIF, WebP): a history clip in a video format, or one over
    MAX_EMBED_BYTES, is named without a picture.
    """
    if path is None or not _MIME.get(path.suffix.lower(), "").startswith("image/"):
        return ""
    try:
        if path.stat().st_size > MAX_EMBED_BYTES:
            return ""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return ""
    return (f".{css_class}{{background-image:url(data:{_MIME[path.suffix.lower()]};base64,"
            f"{data})}}\n")


def _page(title: str, body: str, extra_css: str = "") -> str:
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta name=generator content="{_e(GENERATOR)}">
<title>{_e(title)}</title>
<style>{_CSS}{extra_css}</style></head>
<body>
{body}
<footer class=dim>made by {_e(GENERATOR)}; scores compare within one video only</footer>
</body></html>
"""


_CSS = """
:root{--ink:#1d2330;--dim:#6b7385;--line:#d9dde5;--pick:#e0542e;--seg:#8aa4c8;
--kept:#9b9b9b;--heat:#f2b134;--pos:#3c8d5a;--neg:#c24a4a;--bg:#f7f8fa}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1200px;padding:20px 28px;font:15px/1.45 system-ui,sans-serif;
color:var(--ink);background:var(--bg)}
h1{font-size:24px;margin:0 0 2px}h2{font-size:17px;margin:26px 0 10px}
.dim{color:var(--dim)}code{font:13px ui-monospace,monospace;word-break:break-all}
#timeline{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:8px}
#timeline .seg{fill:var(--seg)}#timeline .seg.kept{fill:var(--kept)}
#timeline .kept-span{fill:rgba(120,120,120,.18);stroke:var(--kept);
stroke-dasharray:4 3}
#timeline .pick-mark{fill:rgba(224,84,46,.07);stroke:var(--pick);stroke-width:2}
#timeline .pick-label{fill:var(--pick);font:bold 13px system-ui;text-anchor:middle}
#timeline .heatmap{fill:var(--heat);fill-opacity:.8}
#timeline .axis,#timeline line.tick{stroke:var(--dim)}
#timeline text.tick{fill:var(--dim);font-size:11px;text-anchor:middle}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;
vertical-align:-1px;border-radius:2px}
.sw-seg{background:var(--seg)}.sw-pick{background:var(--pick)}.sw-kept{background:var(--kept)}
.sw-heat{background:var(--heat)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px}
.card:target{outline:3px solid var(--pick)}
.card h3{margin:8px 0;font-size:16px}.rank{color:var(--pick)}
.score{float:right;color:var(--dim);font-weight:normal}
.media img,.media video{width:100%;border-radius:6px;display:block;background:#000}
svg.terms{width:100%;max-width:330px;height:auto;font:12px system-ui}
svg.terms line{stroke:var(--dim)}svg.terms .pos{fill:var(--pos)}svg.terms .neg{fill:var(--neg)}
svg.terms .val{fill:var(--dim)}
.nearest{display:flex;gap:10px;align-items:center;margin-top:8px;font-size:13px}
.nearest p{margin:0}.nearest .history{width:128px;height:72px;flex:none;border-radius:4px;
background-color:#ddd;background-position:center;background-size:cover;
background-repeat:no-repeat}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;
border:1px solid var(--line);border-radius:8px;padding:12px}dt{color:var(--dim)}dd{margin:0}
.index li{margin:10px 0}.thumbs img,.thumbs video{height:80px;margin:4px 4px 0 0}
.failed{color:var(--neg)}
footer{margin-top:30px;font-size:12px}
"""
