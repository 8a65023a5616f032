"""The files ``phd suggest`` writes: their names, the checks made before any
work, how a video's files are staged and placed, and what is remembered of
them for ``phd history add``.

Everything about the outputs that can be checked before decoding is (the
``--name`` template against -k and the number of inputs, name length,
``--out`` writability, names taken by files that are not this input's). A
video's files (its GIFs, its report page) are encoded into a private folder
inside ``--out`` and only when all of them succeeded are they placed under
their final names (``phdcli.suggest.manifest``): replacing only what phd
wrote there for the same input, never another file (unless ``--force``). So
a failed video leaves nothing, two runs into one folder never overwrite each
other's files, running the same command twice leaves what one run leaves,
and a reported path always holds that suggestion's file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli import fsutil
from phdcli.errors import PhdError, UsageError
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.manifest import (
    INDEX,
    INDEX_OWNER,
    MANIFEST_DIR,
    Owner,
    check_targets,
    place,
)
from phdcli.suggest.names import NameTemplate, NameValues, check_in_domain, name_problem
from phdcli.suggest.results import Suggestion

if TYPE_CHECKING:
    from phdcli.features.spec import FeatureSpec
    from phdcli.media.gifs import GifOptions, WrittenClip
    from phdcli.media.probe import VideoInfo
    from phdcli.ranking.rank import Ranking

log = logging.getLogger("phd")

# progress(stage, done, total): this module reports the stage "gifs".
Progress = Callable[[str, int, int], None]

def output_path(out_dir: Path, template: NameTemplate, stem: str, pick: Suggestion,
                fmt: str) -> Path:
    """Render the output file's name; nothing in it may leave ``out_dir``.

    ``check_name_template`` made sure, before any work, that every value in
    the fields' domains gives a good name: the checks here only catch a value
    outside them (this input fails, before anything is encoded).
    """
    from phdcli.media.gifs import FORMAT_SUFFIX

    values = NameValues(stem, pick.rank, pick.start_s, pick.end_s, pick.score)
    check_in_domain(values)
    name = template.render(values)
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"--name {template.text!r} gives {name!r}: {problem}")
    return Path(out_dir) / f"{name}{FORMAT_SUFFIX[fmt]}"


def check_name_template(template: NameTemplate, k: int = 1, n_videos: int = 1,
                        fmt: str = "gif", out_dir: Path = Path(".")) -> None:
    """Refuse, before any work, a template that cannot give every file its own
    good name: rendered with each field's narrowest and widest values (the
    longest stem a batch of ``n_videos`` can give, rank ``k``, the longest
    float reprs and magnitudes), never with just one example."""
    from phdcli.media.gifs import FORMAT_SUFFIX
    from phdcli.sources.inputs import STEM_MAX

    text = template.text
    longest_stem = "x" * STEM_MAX + (f"-{n_videos}" if n_videos > 1 else "")
    stems = ("x", longest_stem)
    for name in template.samples(stems, k):
        problem = name_problem(name)
        if problem is not None:
            raise UsageError(f"--name {text!r} can give {name!r}: {problem}")
    longest = template.widest_bytes(stems, k) + len(FORMAT_SUFFIX[fmt])
    limit = fsutil.name_max(out_dir)
    if longest > limit:
        raise UsageError(f"--name {text!r} gives file names too long for {out_dir} "
                         f"(up to {longest} bytes; at most {limit})")

    def render(stem: str = "video", rank: int = 1) -> str:
        return template.render(NameValues(stem, rank, 0.0, 5.0, 0.0))

    if k > 1 and len({render(rank=r) for r in range(1, k + 1)}) < k:
        raise UsageError(f"--name {text!r} gives several GIFs of a video the same name: "
                         "use {rank}")
    if n_videos > 1 and any(render(stem=stem) == render(stem=f"{stem}-2")
                            for stem in ("video", longest_stem.rsplit("-", 1)[0])):
        raise UsageError(f"--name {text!r} gives the GIFs of different videos the same "
                         "names: use {stem}")


def check_outputs(config: SuggestConfig, n_videos: int) -> None:
    """Everything about the outputs that can be known before decoding a frame."""
    check_name_template(config.name, config.k, n_videos, config.gif.format, config.out_dir)
    if config.dry_run:
        return
    fsutil.writable_folder(config.out_dir, "--out")
    fsutil.clean_stale_temps(config.out_dir)  # what a killed run left behind
    fsutil.clean_stale_temps(config.out_dir / MANIFEST_DIR)
    if config.report:  # index.html: the page of a lone video, or the batch's index
        check_targets(config.out_dir, INDEX_OWNER, [config.out_dir / INDEX], config.force)


def write_picks(
    video: VideoInfo, stem: str, picks: list[Suggestion], cfg: SuggestConfig,
    written: set[Path], progress: Progress | None = None, owner: Owner | None = None,
    page: Path | None = None, render_page: Callable[[list[Suggestion]], str] | None = None,
) -> list[Suggestion]:
    """Encode every pick (and ``render_page``'s page of them, at ``page``) into a
    private folder, then place them all under their final names.

    A failure before the placement leaves ``--out`` untouched; a name that is
    not this input's (``owner``) is refused (``manifest.place``). ``written``
    holds the files this batch wrote so far (another input's name is refused)
    and gains this video's. Returns the picks with their paths and sizes.
    """
    owner = owner or Owner(str(video.path), str(Path(video.path).resolve()), "", stem)
    # Never upscale: a wider GIF than its source (as displayed, rotation
    # applied) is only bigger and slower.
    options = replace(cfg.gif, width=min(cfg.gif.width, video.display_width))
    targets = [output_path(cfg.out_dir, cfg.name, stem, p, cfg.gif.format)
               for p in picks]
    if len(set(targets)) < len(targets):
        raise UsageError(
            f"--name {cfg.name_template!r} gives several files the same name: use {{rank}}"
        )
    again = [t for t in targets if t in written]
    if again:
        raise PhdError(f"{again[0]} was already written by this run for another input "
                       "(--name needs {stem} to tell the inputs apart)")
    check_targets(cfg.out_dir, owner, targets + ([page] if page else []), cfg.force)
    with fsutil.temp_dir(cfg.out_dir, "gifs") as staging:
        clips = _encode_all(video, picks, [staging / t.name for t in targets], options, progress)
        done = [replace(pick, path=target, size_bytes=clip.size_bytes)
                for pick, target, clip in zip(picks, targets, clips, strict=True)]
        staged = {target: clip.path for target, clip in zip(targets, clips, strict=True)}
        if page is not None and render_page is not None:
            staged[page] = staging / page.name
            staged[page].write_text(render_page(done), encoding="utf-8")
        place(cfg.out_dir, owner, staged, cfg.force)
    written.update(staged)
    if cfg.gif.max_size_bytes is not None:
        for target, clip in zip(targets, clips, strict=True):
            log.info("%s: %.2f MB (fps %g, width %d)", target.name,
                     clip.size_bytes / 1e6, clip.fps, clip.width)
    return done


def _encode_all(video: VideoInfo, picks: list[Suggestion], outs: list[Path],
                options: GifOptions, progress: Progress | None) -> list[WrittenClip]:
    """Write every pick's clip; the first failure raises (the rest are cancelled)."""
    from phdcli.media.gifs import parallel_encodes, write_clip

    if not picks:  # every segment left out (kept before): a page, if asked, and no clip
        return []
    frame = (video.display_width, video.display_height)  # each side of a clip >= 2 px
    at_once, threads = parallel_encodes(len(picks), frame, options,
                                        max(p.end_s - p.start_s for p in picks),
                                        os.cpu_count() or 1)
    with ThreadPoolExecutor(at_once, thread_name_prefix="phd-gif") as pool:
        futures = [pool.submit(write_clip, video.path, p.start_s, p.end_s, out, options, frame,
                               threads)
                   for p, out in zip(picks, outs, strict=True)]
        try:
            clips = []
            for done, future in enumerate(futures, start=1):
                clips.append(future.result())
                if progress is not None:
                    progress("gifs", done, len(picks))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return clips


def remember_written(picks: list[Suggestion], ranking: Ranking, spec: FeatureSpec,
                     backbone_id: str, video: str, video_sha256: str) -> None:
    """Record each written pick's provenance and feature for ``phd history add``
    (``phdcli.history.records``); without features (a cold start) the provenance."""
    from phdcli.history.kept import span_feature
    from phdcli.history.records import Provenance, SpanFeature, remember

    for pick in picks:
        if pick.path is None:
            continue
        feature = None
        if ranking.feats is not None and pick.segment is not None:
            vector = span_feature(ranking.feats, pick.segment, pick.start_s, pick.end_s,
                                  (pick.segment_start_s, pick.segment_end_s), spec.clip_s)
            feature = SpanFeature(vector, backbone_id, spec.to_dict())
        remember(Path(pick.path), Provenance(video, video_sha256, pick.start_s, pick.end_s),
                 feature)
