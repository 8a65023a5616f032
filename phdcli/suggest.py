"""``phd suggest``: from videos (files, folders, URLs) to the GIFs this user would make.

source -> video (probe) -> segments -> features (C3D, cached) -> model (score)
-> gifs (write). ``Suggester`` holds what is loaded once for a whole batch
(runtime, ranking model, feature extractor, history features);
``suggest_batch`` runs it over many inputs, and one failing input stops
nothing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import defaults
from phdcli.errors import DeviceError, InputError, PhdError, UsageError, WeightsError
from phdcli.gifs import GifOptions
from phdcli.source import DownloadOptions

if TYPE_CHECKING:
    from phdcli.features import SegmentFeatures
    from phdcli.heatmap import Heatmap
    from phdcli.report import Timeline
    from phdcli.video import VideoInfo

log = logging.getLogger("phd")

# progress(stage, done, total): stages "download", "clips", "gifs".
Progress = Callable[[str, int, int], None]

SEGMENT_MODES = ("fixed", "shots")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif", ".flv", ".ts", ".mpg")


@dataclass(frozen=True)
class SuggestConfig:
    k: int = defaults.K
    out_dir: Path = Path(".")
    segments: str = "fixed"
    length_s: float = defaults.SEGMENT_LENGTH_S
    gif: GifOptions = GifOptions()
    gif_length_s: float | None = None  # None: the GIF is the whole segment
    name_template: str = defaults.NAME_TEMPLATE
    download: DownloadOptions = DownloadOptions()
    device: str = "auto"
    precision: str = "auto"
    c3d_weights: Path | None = None
    model_path: Path | None = None
    user: str = "default"
    history_dir: Path | None = None
    force: bool = False
    dry_run: bool = False
    exhaustive: bool = False  # full C3D spec for every segment (no coarse-to-fine pass)
    report: bool = False  # --report: an HTML contact sheet in out_dir
    include_kept: bool = False  # suggest spans the profile already kept
    heatmap_weight: float = 0.0  # hand-set, unmeasured (phdcli.heatmap)
    command: str = ""  # for the report: how to run this again ("{input}" for the video)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"-k must be at least 1, got {self.k}")
        if self.segments not in SEGMENT_MODES:
            raise UsageError(f"--segments must be one of {', '.join(SEGMENT_MODES)}")
        if not self.length_s > 0:
            raise UsageError(f"--length must be positive, got {self.length_s}")
        if self.gif_length_s is not None and not self.gif_length_s > 0:
            raise UsageError(f"--gif-length must be positive, got {self.gif_length_s}")
        if not math.isfinite(self.heatmap_weight):
            raise UsageError(f"--heatmap-weight must be a finite number, got {self.heatmap_weight}")
        if self.report and self.dry_run:
            raise UsageError("--report shows the written GIFs: it cannot go with --dry-run")


@dataclass(frozen=True)
class Explanation:
    """Why a segment ranks where it does: each term of the fused score."""

    fnn: float
    svm: float
    time: float
    nearest_gif: str | None
    similarity: float | None
    heatmap_value: float | None = None  # replay over the span, when the source has a heatmap
    heatmap_term: float | None = None  # --heatmap-weight x heatmap_value

    def to_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "content_fnn": round(self.fnn, 6),
            "svm_d": round(self.svm, 6),
            "temporal_prior": round(self.time, 6),
            "nearest_history_gif": self.nearest_gif,
            "similarity": None if self.similarity is None else round(self.similarity, 6),
        }
        if self.heatmap_value is not None and self.heatmap_term is not None:
            doc["heatmap_value"] = round(self.heatmap_value, 6)
            doc["heatmap_term"] = round(self.heatmap_term, 6)
        return doc


@dataclass(frozen=True)
class Suggestion:
    rank: int
    start_s: float  # the GIF's span (the segment, or --gif-length around its best clip)
    end_s: float
    segment_start_s: float
    segment_end_s: float
    score: float
    explanation: Explanation
    path: Path | None = None
    size_bytes: int | None = None

    def to_dict(self, explain: bool = False) -> dict[str, object]:
        doc: dict[str, object] = {
            "rank": self.rank,
            "start": round(self.start_s, 3),
            "end": round(self.end_s, 3),
            "score": round(self.score, 6),
            "path": None if self.path is None else str(self.path),
            "size_bytes": self.size_bytes,
        }
        if explain:
            doc["explain"] = self.explanation.to_dict()
        return doc


@dataclass
class VideoSuggestions:
    input: str
    video: Path
    duration_s: float
    n_segments: int
    suggestions: list[Suggestion]
    heatmap: Heatmap | None = None
    report: Path | None = None


@dataclass
class BatchStats:
    model_loads: int = 0
    c3d_loads: int = 0
    clips_forwarded: int = 0
    clips_skipped: int = 0  # by the coarse-to-fine pass, against the exhaustive one


@dataclass(frozen=True)
class Failure:
    input: str
    message: str


@dataclass
class BatchResult:
    results: list[VideoSuggestions] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    stats: BatchStats = field(default_factory=BatchStats)
    report: Path | None = None  # --report: index.html

    def to_dict(self, explain: bool = False) -> dict[str, object]:
        """The ``--json`` document (schema in the README)."""
        from phdcli.heatmap import to_json

        results = []
        for r in self.results:
            doc: dict[str, object] = {
                "input": r.input,
                "video": str(r.video),
                "duration": round(r.duration_s, 3),
                "segments": r.n_segments,
                "suggestions": [s.to_dict(explain) for s in r.suggestions],
            }
            if r.heatmap is not None:
                doc["heatmap"] = to_json(r.heatmap)
            if r.report is not None:
                doc["report"] = str(r.report)
            results.append(doc)
        doc = {"version": 1, "results": results,
               "errors": [{"input": f.input, "error": f.message} for f in self.failures]}
        if self.report is not None:
            doc["report"] = str(self.report)
        return doc


# on_suggestion(input, suggestion): called as each GIF is written (--jsonl).
OnSuggestion = Callable[[str, Suggestion], None]


class Suggester:
    """Everything loaded once per batch: model, runtime, C3D (lazily), history."""

    def __init__(self, config: SuggestConfig, progress: Progress | None = None) -> None:
        from phdcli.features import FeatureExtractor
        from phdcli.history import History
        from phdcli.model import default_model_path, load_model

        self.config = config
        self.progress = progress
        self.model = load_model(config.model_path or default_model_path())
        # The device is resolved (and said on stderr) when C3D first runs:
        # a batch whose features are all cached never imports torch.
        self.extractor = FeatureExtractor(
            self.model.spec, config.c3d_weights, config.device, config.precision
        )
        self.history = (
            History.from_folder(config.history_dir)
            if config.history_dir is not None
            else History.for_user(config.user)
        )
        self._history: tuple[list[str], np.ndarray] | None = None
        self.clips_skipped = 0
        self.single_report = True  # --report: index.html, or <stem>.html beside an index

    def history_features(self) -> tuple[list[str], np.ndarray]:
        """(names, (m, D) features) of the history, computed once per batch."""
        if self._history is None:
            names = [item.name for item in self.history.items()]
            feats = self.history.features(self.extractor)
            log.info("history: %d GIFs in %s", len(names), self.history.folder)
            self._history = (names, feats)
        return self._history

    def run(self, item: str | Path, on_suggestion: OnSuggestion | None = None) -> VideoSuggestions:
        from phdcli.rank import rank_segments
        from phdcli.segments import fixed_segments, shot_segments
        from phdcli.source import resolve_input
        from phdcli.video import probe

        cfg = self.config
        item = str(item)
        source = resolve_input(item, cfg.download, self._stage_progress("download"))
        info = probe(source.path)
        spec = self.model.spec
        clip_s = spec.clip_frames / spec.clip_fps
        if info.duration_s < clip_s:
            raise InputError(
                f"{source.stem}: {info.duration_s:.2f} s is shorter than one "
                f"{spec.clip_frames}-frame clip ({clip_s:.2f} s)"
            )
        if cfg.segments == "shots":
            segments = shot_segments(info.path, info.duration_s, chunk_s=cfg.length_s)
        else:
            segments = fixed_segments(info.duration_s, cfg.length_s)
        log.info("%s: %.1f s, %d segments", source.stem, info.duration_s, len(segments))

        from phdcli import heatmap, kept
        from phdcli.fsutil import cached_sha256

        self.extractor.check_video = info  # the int8 self-check runs on the user's video
        names, history = self.history_features()
        starts = np.array([s.start_s for s in segments])
        ends = np.array([s.end_s for s in segments])
        replay, heat_term = heatmap.score_term(source.heatmap, starts, ends, cfg.heatmap_weight)
        video_sha = cached_sha256(info.path)
        video_id = source.input if source.downloaded else str(info.path.resolve())
        kept_spans = kept.spans_kept_from(self.history, video_sha, video_id)
        excluded = kept.same_span(starts, ends, () if cfg.include_kept else kept_spans)
        if excluded.any():
            log.info("%s: %d segment(s) left out: you kept them before (--include-kept)",
                     source.stem, int(excluded.sum()))

        def ranked(model_total: np.ndarray) -> np.ndarray:
            """What orders segments: the model, the heatmap term, kept spans left out."""
            return np.where(excluded, -np.inf, model_total + heat_term)

        ranking = rank_segments(self.extractor, self.model, info, segments, history, cfg.k,
                                cfg.exhaustive, progress=self._stage_progress("clips"),
                                adjust=ranked)
        self.clips_skipped += ranking.clips_skipped
        feats, terms, order = ranking.feats, ranking.terms, ranking.order.tolist()
        total = terms.total + heat_term

        picks = []
        for rank, idx in enumerate(order, start=1):
            near = int(terms.nearest_index[idx])
            start_s, end_s = float(starts[idx]), float(ends[idx])
            if cfg.gif_length_s is not None:
                start_s, end_s = self._gif_window(
                    feats, history, int(idx), near, (start_s, end_s), info.duration_s
                )
            explanation = Explanation(
                fnn=float(terms.fnn[idx]),
                svm=float(terms.svm[idx]),
                time=float(terms.time[idx]),
                nearest_gif=names[near] if near >= 0 else None,
                similarity=float(terms.nearest_similarity[idx]) if near >= 0 else None,
                heatmap_value=None if replay is None else float(replay[idx]),
                heatmap_term=None if replay is None else float(heat_term[idx]),
            )
            picks.append(Suggestion(rank, start_s, end_s, float(starts[idx]), float(ends[idx]),
                                    float(total[idx]), explanation))
        page = self._report_page(source.stem)
        if cfg.dry_run:
            if on_suggestion is not None:
                for pick in picks:
                    on_suggestion(item, pick)
        else:
            picks = self._write_gifs(info, source.stem, picks, item, on_suggestion)
            spec = self.model.spec
            kept.remember_picks(picks, order, feats, spec.clip_frames / spec.clip_fps, video_id,
                                video_sha, self.extractor.backbone_id, spec.to_dict())
        result = VideoSuggestions(item, info.path, info.duration_s, len(segments), picks,
                                  heatmap=source.heatmap)
        if page is not None:
            from phdcli.report import Timeline

            result.report = self._write_report(result, page, source.stem, Timeline(
                starts, ends, total, excluded, kept_spans, source.heatmap))
        return result

    def _report_page(self, stem: str) -> Path | None:
        """--report: this video's page, refused up front if it would overwrite a file."""
        if not self.config.report:
            return None
        from phdcli.report import check_free, page_path

        page = page_path(self.config.out_dir, stem, self.single_report)
        check_free(page, self.config.force)
        return page

    def _write_report(self, result: VideoSuggestions, page: Path, title: str,
                      timeline: Timeline) -> Path:
        from phdcli.report import run_info, write_video_page

        return write_video_page(result, timeline, run_info(self), page, title)

    def _gif_window(
        self, feats: SegmentFeatures, history: np.ndarray, segment: int, nearest: int,
        segment_bounds_s: tuple[float, float], duration_s: float,
    ) -> tuple[float, float]:
        """--gif-length seconds centred on the segment's best clip.

        The best clip is the one closest to the history GIF that made the
        segment rank (the middle clip when the history is empty).
        """
        from phdcli.gifs import centred_window

        assert self.config.gif_length_s is not None
        spec = self.model.spec
        mine = np.flatnonzero(feats.clip_owner == segment)
        best = mine[len(mine) // 2]
        if nearest >= 0 and len(mine) > 1:
            best = mine[int(np.argmax(feats.clips[mine] @ history[nearest]))]
        centre_s = float(feats.clip_starts_s[best]) + spec.clip_frames / spec.clip_fps / 2
        return centred_window(*segment_bounds_s, centre_s, self.config.gif_length_s, duration_s)

    def _stage_progress(self, stage: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        report = self.progress
        return lambda done, total: report(stage, done, total or 0)

    def _write_gifs(
        self, video: VideoInfo, stem: str, picks: list[Suggestion], item: str,
        on_suggestion: OnSuggestion | None,
    ) -> list[Suggestion]:
        from phdcli.gifs import write_clip

        cfg = self.config
        # Never upscale: a wider GIF than its source is only bigger and slower.
        options = replace(cfg.gif, width=min(cfg.gif.width, video.width))
        targets = [output_path(cfg.out_dir, cfg.name_template, stem, p, cfg.gif.format)
                   for p in picks]
        if len(set(targets)) < len(targets):
            raise UsageError(
                f"--name {cfg.name_template!r} gives several files the same name: use {{rank}}"
            )
        clash = [t for t in targets if t.exists()]
        if clash and not cfg.force:
            raise PhdError(f"{clash[0]} already exists (use --force to overwrite)")
        written = []
        # Each file is its own ffmpeg process whose GIF encoder is mostly one
        # thread: writing them side by side uses the other cores (measured:
        # ~2 s per 480-px GIF, 36 % of a short video's cold run on 2 cores).
        # Results are still reported in rank order.
        workers = max(1, min(len(picks), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="phd-gif") as pool:
            futures = [pool.submit(write_clip, video.path, p.start_s, p.end_s, t, options)
                       for p, t in zip(picks, targets, strict=True)]
            try:
                for done, (pick, target, future) in enumerate(
                    zip(picks, targets, futures, strict=True), start=1
                ):
                    clip = future.result()
                    if cfg.gif.max_size_bytes is not None:
                        log.info("%s: %.2f MB (fps %g, width %d)", target.name,
                                 clip.size_bytes / 1e6, clip.fps, clip.width)
                    done_pick = replace(pick, path=target, size_bytes=clip.size_bytes)
                    written.append(done_pick)
                    if on_suggestion is not None:
                        on_suggestion(item, done_pick)
                    if self.progress is not None:
                        self.progress("gifs", done, len(picks))
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return written


def output_path(out_dir: Path, template: str, stem: str, pick: Suggestion, fmt: str) -> Path:
    """Render the output file's name; nothing in it may leave ``out_dir``."""
    from phdcli.gifs import FORMAT_SUFFIX

    try:
        name = template.format(
            stem=stem, rank=pick.rank, start=pick.start_s, end=pick.end_s, score=pick.score,
        )
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise UsageError(f"bad --name template {template!r} ({exc!r})") from None
    if not name or any(c in name for c in "/\\\0") or name.startswith(".") or name == "..":
        raise UsageError(f"--name template {template!r} gives {name!r}, which would leave --out")
    return Path(out_dir) / f"{name}{FORMAT_SUFFIX[fmt]}"


def check_name_template(template: str) -> None:
    """Refuse a bad template before any work is done (a usage error)."""
    probe_pick = Suggestion(1, 0.0, 5.0, 0.0, 5.0, 0.0, Explanation(0, 0, 0, None, None))
    output_path(Path("."), template, "video", probe_pick, "gif")


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[Failure]]:
    """Folders become the videos in them (sorted); an empty folder is a failure."""
    expanded: list[str] = []
    failures: list[Failure] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                failures.append(Failure(item, f"{item}: no videos in this folder"))
            expanded.extend(found)
        else:
            expanded.append(item)
    return expanded, failures


def suggest_batch(
    inputs: list[str],
    config: SuggestConfig,
    progress: Progress | None = None,
    on_suggestion: OnSuggestion | None = None,
) -> BatchResult:
    """Suggest GIFs for many inputs; models load once, one failure stops nothing.

    A problem with the shared parts (model file, weights, device, history)
    raises at once; a problem with one input is recorded and the batch goes on.
    """
    check_name_template(config.name_template)
    items, failures = expand_inputs(inputs)
    suggester = Suggester(config, progress)
    suggester.extractor.backbone_id  # noqa: B018 - missing weights fail once, up front
    from phdcli.model import check_compatible

    # A model trained on one backbone's features must not score another's.
    check_compatible(suggester.model, suggester.extractor.spec, "the features of these weights",
                     suggester.extractor.backbone_sha256)
    suggester.single_report = len(items) == 1
    if config.report:  # index.html: the page of a lone video, or the batch's index
        from phdcli.report import INDEX, check_free

        check_free(config.out_dir / INDEX, config.force)
    batch = BatchResult(failures=failures)
    batch.stats.model_loads = 1
    for item in items:
        try:
            batch.results.append(suggester.run(item, on_suggestion))
        except (UsageError, DeviceError, WeightsError):
            raise  # the shared parts: no other input can succeed either
        except PhdError as exc:
            message = " ".join(str(exc).split())
            log.error("error: %s", message if item in message else f"{item}: {message}")
            batch.failures.append(Failure(item, message))
    batch.stats.c3d_loads = suggester.extractor.stats.c3d_loads
    batch.stats.clips_forwarded = suggester.extractor.stats.clips_forwarded
    batch.stats.clips_skipped = suggester.clips_skipped
    if config.report:
        from phdcli.report import write_index

        batch.report = (write_index(batch, config.out_dir) if len(items) > 1 else
                        next((r.report for r in batch.results), None))
    return batch


def suggest(video: str | Path, config: SuggestConfig) -> VideoSuggestions:
    """Rank one video's segments for the configured user and write the top k."""
    return Suggester(config).run(str(video))
