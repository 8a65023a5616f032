"""``--report``: a contact sheet of the picks, one self-contained HTML page per video.

The page needs no network and no script: inline CSS and SVG, the GIFs by
relative path (the folder can move), the nearest history GIFs as small
embedded stills (they live elsewhere, in the user's profile; whole GIFs
would make the page MBs). It shows the picks in rank order with their span,
score, the terms that ranked them as bars and the nearest history GIF; a
timeline of the whole video (``phdcli.suggest.timeline``); and the features,
model, history and command, in words, with the home folder written ``~``.

A page one can mail: at most ``PAGE_BUDGET`` beside the GIFs it links for
any usual number of picks and segments (history thumbnails are embedded
while the page stays within it; the timeline shares bars past
``timeline.MAX_BARS``), and readable on a phone (no sideways scroll at
420 px).

Pure string building from what ``phd suggest`` already computed (the
thumbnails come made, from ``phdcli.media.thumbs``); pages are written
atomically.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from phdcli import __version__
from phdcli.paths import shell_path, tilde, tilde_text
from phdcli.suggest.manifest import INDEX, INDEX_OWNER, place_text
from phdcli.suggest.results import clock, count
from phdcli.suggest.timeline import Timeline, render_timeline

if TYPE_CHECKING:
    from phdcli.ranking.model import FusedModel
    from phdcli.sources.heatmap import Heatmap
    from phdcli.suggest.results import BatchResult, Suggestion, VideoSuggestions

__all__ = ["RunInfo", "Timeline", "page_path", "render_video_page", "write_index"]

GENERATOR = f"phd {__version__}"
INPUT = "{input}"  # RunInfo.command's placeholder for the video
PAGE_BUDGET = 200_000  # bytes of one page, beside the files it links: it can be mailed
_MIME = {".gif": "image/gif", ".webp": "image/webp", ".mp4": "video/mp4",
         ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska"}
_SNIFF = ((b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"\x89PNG", "image/png"))

# The score's terms, by the names RunInfo.terms uses: what each is, in words,
# and its short label on a card's bars.
TERM_WORDS = {
    "svm-d": "your history's closest GIFs (SVM-D)",
    "phd-ca": "a content model (PHD-CA)",
    "prior": "position in the video",
    "heatmap": "the site's \u201cmost replayed\u201d heatmap",
}
_BAR_LABELS = {"svm-d": "closest GIFs", "phd-ca": "content", "prior": "position",
               "heatmap": "heatmap"}
# What RunInfo.hand_set can name: a part of the model set by hand, not trained.
HAND_SET_WORDS = {
    "svm-d": "the closest-GIFs term (a fixed rule: the more like your nearest GIF, the higher)",
    "phd-ca": "the content model",
    "prior": "the position term",
    "fusion": "how much each term counts",
}


@dataclass(frozen=True)
class RunInfo:
    """What produced the picks, said on the page.

    ``terms``: the model's terms that ranked this run, by TERM_WORDS' names
    (a cold run with no history names only those that could tell segments
    apart); the site's heatmap is added by the page when it was in the score.
    ``hand_set``: of those (and ``"fusion"``, the weights that add them up),
    the parts that were set by hand rather than trained.
    """

    features: str  # what the segments were described with (or why nothing was needed)
    history: str
    command: str  # "phd suggest {input} ...": the first "{input}" is where the video goes
    terms: tuple[str, ...] = ("svm-d", "phd-ca", "prior")
    hand_set: tuple[str, ...] = ()
    heatmap_weight: float = 0.0
    thumbnails: Mapping[str, bytes] = field(default_factory=dict)  # history GIF name -> image


def model_terms(model: FusedModel, has_history: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(terms, hand_set) of RunInfo for ``model``: its terms that can rank
    (``FusedModel.active_terms``: SVM-D needs a history), and the parts its file
    records as set by hand, not fitted (``phd train content`` fits them all;
    the bundled model's card says which)."""
    terms = model.active_terms(1 if has_history else 0)
    notes = model.provenance
    hand_set = tuple(part for part, key, prefix in (("svm-d", "h_svm", "untrained"),
                                                   ("fusion", "omega", "set by hand"))
                     if str(notes.get(key, "")).startswith(prefix))
    return terms, hand_set


def page_path(out_dir: Path, stem: str, single: bool) -> Path:
    """index.html for a lone video; ``<stem>.html`` beside an index in a batch."""
    if single:
        return Path(out_dir) / INDEX
    return Path(out_dir) / (f"{stem}-video.html" if f"{stem}.html" == INDEX else f"{stem}.html")


# -- the per-video page -------------------------------------------------------
def ranking_terms(run: RunInfo, heatmap: Heatmap | None) -> tuple[str, ...]:
    """The terms that ranked this video: the model's, and the heatmap when it was scored."""
    heat = ("heatmap",) if heatmap and run.heatmap_weight != 0 else ()
    return tuple(t for t in run.terms if t != "heatmap") + heat


def model_words(terms: tuple[str, ...], hand_set: tuple[str, ...],
                heatmap_weight: float = 0.0) -> str:
    """The model row, in plain words: what ranked, what is trained, what is set by hand."""
    if not terms:
        return "nothing told the segments apart: they are in video order"
    words = "ranked by " + " + ".join(TERM_WORDS.get(t, t) for t in terms) + "."
    trained = [TERM_WORDS.get(t, t) for t in terms if t not in hand_set and t != "heatmap"]
    manual = [HAND_SET_WORDS[t] for t in terms if t in hand_set and t in HAND_SET_WORDS]
    if "fusion" in hand_set and len(terms) > 1:
        manual.append(HAND_SET_WORDS["fusion"])
    if "heatmap" in terms:
        manual.append(f"the heatmap's weight ({heatmap_weight:g}), never measured")
    if trained:
        words += " Trained: " + ", ".join(trained) + "."
    if manual:
        words += " Set by hand, not trained: " + "; ".join(manual) + "."
    return words


def command_words(command: str, video: str) -> str:
    """``command`` with the video in place of its first ``{input}`` only: a value
    that happens to contain ``{input}`` (quoted further on) stays as it is."""
    return command.replace(INPUT, shell_path(video), 1)


def render_video_page(result: VideoSuggestions, timeline: Timeline, run: RunInfo,
                      page_dir: Path, title: str) -> str:
    """``title``: the video's name as phd shows it (the sanitised stem)."""
    picks = result.suggestions
    terms = ranking_terms(run, timeline.heatmap)
    scale = max((abs(v) for s in picks for _, v in _terms(s, terms)), default=0.0) or 1.0
    # Each history thumbnail is embedded once, as a CSS background that every
    # card showing it reuses (an <img> per card would repeat the data).
    nearest = list(dict.fromkeys(s.explanation.nearest_gif for s in picks
                                 if s.explanation.nearest_gif is not None))  # rank order
    thumbs = {name: f"h{i}" for i, name in enumerate(nearest)}
    cards = "\n".join(_card(s, page_dir, thumbs, scale, terms) for s in picks)
    n_kept = int(np.count_nonzero(timeline.excluded))
    kept_note = (f"; {n_kept} segment(s) left out because you kept them "
                 "(<code>--include-kept</code> brings them back)" if n_kept else "")
    shown_input = tilde(result.input)
    facts = [
        ("input", _e(shown_input)),
        ("length", f"{clock(result.duration_s)} "
                   f"({count(result.n_segments, 'segment')}{kept_note})"),
        ("features", _e(tilde_text(run.features))),
        ("model", _e(model_words(terms, run.hand_set, run.heatmap_weight))),
        ("history", _e(tilde_text(run.history))),
        ("heatmap", _heatmap_note(timeline.heatmap, run.heatmap_weight)),
        ("command", f"<code>{_e(command_words(run.command, result.input))}</code> "
                    f"<span class=dim>(in {_e(tilde(os.getcwd()))})</span>"),
    ]
    rows = "\n".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = f"""<header><h1>{_e(title)}</h1>
<p class=dim>{count(len(picks), 'pick')} from {_e(shown_input)}</p></header>
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
    # Thumbnails in rank order while the page stays within PAGE_BUDGET; past it
    # a history GIF is named without a picture (typically 20 and more fit).
    size = len(_page(f"phd: {title}", body).encode())
    thumb_css = []
    for name in nearest:
        rule = _thumb_rule(thumbs[name], run.thumbnails.get(name))
        if rule and size + len(rule) <= PAGE_BUDGET:
            thumb_css.append(rule)
            size += len(rule)
    return _page(f"phd: {title}", body, "".join(thumb_css))


def _card(s: Suggestion, page_dir: Path, thumbs: dict[str, str], scale: float,
          terms: tuple[str, ...]) -> str:
    media = "<p class=dim>(not written)</p>"
    if s.path is not None:
        src = _relative_url(Path(s.path), page_dir)
        alt = f"rank {s.rank}: {clock(s.start_s)}-{clock(s.end_s)}"
        media = _media(src, Path(s.path).suffix.lower(), "pick", alt)
    e = s.explanation
    nearest = "<p class=dim>no history yet: nothing to compare with</p>"
    if e.nearest_gif is not None:
        thumb = (f'<div class="history {thumbs[e.nearest_gif]}" role=img '
                 f'aria-label="{_e(e.nearest_gif)}"></div>')
        nearest = (f"<div class=nearest>{thumb}<p>nearest in your history:<br>"
                   f"<b>{_e(e.nearest_gif)}</b><br>similarity {e.similarity:.3f}</p></div>")
    return f"""<article class=card id="pick-{s.rank}">
<div class=media>{media}</div>
<h3><span class=rank>#{s.rank}</span> {clock(s.start_s)}&ndash;{clock(s.end_s)}
<span class=score>score {s.score:.3f}</span></h3>
{_term_bars(s, scale, terms)}
{nearest}
</article>"""


def _terms(s: Suggestion, terms: tuple[str, ...]) -> list[tuple[str, float]]:
    e = s.explanation
    values = {"phd-ca": e.fnn, "svm-d": e.svm, "prior": e.time, "heatmap": e.heatmap_term}
    return [(_BAR_LABELS.get(t, t), float(values[t])) for t in terms
            if values.get(t) is not None]


def _term_bars(s: Suggestion, scale: float, terms: tuple[str, ...]) -> str:
    """Each term as a bar from a zero line; one scale for all cards, so they compare."""
    shown = _terms(s, terms)
    row, label_w, bar_w = 18, 100, 150
    mid = label_w + bar_w / 2
    parts = []
    for i, (name, value) in enumerate(shown):
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
    height = max(len(shown), 1) * row
    return (f'<svg class=terms viewBox="0 0 {label_w + bar_w + 60} {height}" role=img '
            f'aria-label="score terms"><line x1="{mid}" x2="{mid}" y1="0" y2="{height}"/>'
            f'{"".join(parts)}</svg>')


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
        name = _e(tilde(r.input))
        link = (f'<a href="{_relative_url(r.report, path.parent)}">{name}</a>'
                if r.report is not None else name)
        thumbs = "".join(_media(_relative_url(Path(s.path), path.parent),
                                Path(s.path).suffix.lower(), "thumb", f"rank {s.rank}")
                         for s in r.suggestions[:3] if s.path is not None)
        rows.append(f"<li>{link} <span class=dim>{clock(r.duration_s)}, "
                    f"{count(len(r.suggestions), 'pick')}</span>"
                    f"<div class=thumbs>{thumbs}</div></li>")
    for f in batch.failures:
        text = f.message if f.message.startswith(f.input) else f"{f.input}: {f.message}"
        rows.append(f"<li class=failed>{_e(tilde_text(text))}</li>")
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


def _thumb_rule(css_class: str, data: bytes | None) -> str:
    """A history thumbnail as a data URI (the page must not depend on the profile's
    folder); none for a history file that gave no thumbnail."""
    mime = next((m for magic, m in _SNIFF if data and data.startswith(magic)), None)
    if data is None or mime is None:
        return ""
    return (f".{css_class}{{background-image:url(data:{mime};base64,"
            f"{base64.b64encode(data).decode('ascii')})}}\n")


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
h1{font-size:24px;margin:0 0 2px;overflow-wrap:anywhere}h2{font-size:17px;margin:26px 0 10px}
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
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(300px,100%),1fr));gap:16px}
.card{min-width:0;background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px}
.card:target{outline:3px solid var(--pick)}
.card h3{margin:8px 0;font-size:16px}.rank{color:var(--pick)}
.score{float:right;color:var(--dim);font-weight:normal}
.media img,.media video{width:100%;border-radius:6px;display:block;background:#000}
svg.terms{width:100%;max-width:330px;height:auto;font:12px system-ui}
svg.terms line{stroke:var(--dim)}svg.terms .pos{fill:var(--pos)}svg.terms .neg{fill:var(--neg)}
svg.terms .val{fill:var(--dim)}
.nearest{display:flex;gap:10px;align-items:center;margin-top:8px;font-size:13px}
.nearest p{margin:0;min-width:0;overflow-wrap:anywhere}
.nearest .history{width:128px;height:72px;flex:none;border-radius:4px;
background-color:#ddd;background-position:center;background-size:cover;
background-repeat:no-repeat}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;
border:1px solid var(--line);border-radius:8px;padding:12px}
dt{color:var(--dim)}dd{margin:0;min-width:0;overflow-wrap:anywhere}
.index li{margin:10px 0}.thumbs img,.thumbs video{height:80px;margin:4px 4px 0 0}
.failed{color:var(--neg)}
footer{margin-top:30px;font-size:12px}
p,li{overflow-wrap:anywhere}
@media (max-width:600px){body{padding:12px}dl{grid-template-columns:1fr;gap:0}
dd{margin-bottom:8px}.legend span{margin-left:8px}}
"""
