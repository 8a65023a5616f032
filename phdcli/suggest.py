"""``phd suggest``: from videos (files, folders, URLs) to the GIFs this user would make.

source -> video (probe) -> segments -> features (C3D, cached) -> model (score)
-> gifs (write). ``Suggester`` holds what is loaded once for a whole batch
(runtime, ranking model, feature extractor, history features);
``suggest_batch`` runs it over many inputs, and one failing input stops
nothing.

Each input gets an output stem unique in the batch; how the files are
named, checked before any work, staged and claimed is ``phdcli.outputs``;
the values returned are ``phdcli.results``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from phdcli import defaults
from phdcli.errors import (
    DeviceError,
    HistoryError,
    InputError,
    PhdError,
    UsageError,
    WeightsError,
)
from phdcli.gifs import GifOptions
from phdcli.outputs import check_outputs, write_picks
from phdcli.results import (
    BatchResult,
    Explanation,
    Failure,
    Suggestion,
    VideoSuggestions,
)
from phdcli.source import DownloadOptions
from phdcli.video import DEFAULT_MAX_MEGAPIXELS

if TYPE_CHECKING:
    from phdcli.features import SegmentFeatures
    from phdcli.report import Timeline

log = logging.getLogger("phd")

# progress(stage, done, total): stages "download", "clips", "gifs".
Progress = Callable[[str, int, int], None]

SEGMENT_MODES = ("fixed", "shots")
# Shorter segments hold less than two 16-frame clips (and 1e-9 s segments
# would be billions of them); GIF delays are centiseconds, so more than 100
# frames a second is only a bigger file.
MIN_SEGMENT_S = 1.0
MAX_FPS = 100.0
# Failures of what every input shares: no other input can succeed either.
SHARED_ERRORS = (UsageError, DeviceError, WeightsError, HistoryError)
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
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    report: bool = False  # --report: an HTML contact sheet in out_dir
    include_kept: bool = False  # suggest spans the profile already kept
    heatmap_weight: float = 0.0  # hand-set, unmeasured (phdcli.heatmap)
    command: str = ""  # for the report: how to run this again ("{input}" for the video)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"-k must be at least 1, got {self.k}")
        if self.segments not in SEGMENT_MODES:
            raise UsageError(f"--segments must be one of {', '.join(SEGMENT_MODES)}")
        if not (math.isfinite(self.length_s) and self.length_s >= MIN_SEGMENT_S):
            raise UsageError(f"--length must be a number of seconds from {MIN_SEGMENT_S:g}, "
                             f"got {self.length_s}")
        if self.gif_length_s is not None and not (
                math.isfinite(self.gif_length_s) and self.gif_length_s > 0):
            raise UsageError(f"--gif-length must be a positive number of seconds, "
                             f"got {self.gif_length_s}")
        if not (math.isfinite(self.gif.fps) and self.gif.fps <= MAX_FPS):
            raise UsageError(f"--fps must be at most {MAX_FPS:g}, got {self.gif.fps}")
        if not (math.isfinite(self.max_megapixels) and self.max_megapixels > 0):
            raise UsageError(f"--max-megapixels must be positive, got {self.max_megapixels}")
        if not math.isfinite(self.heatmap_weight):
            raise UsageError(f"--heatmap-weight must be a finite number, got {self.heatmap_weight}")
        if self.report and self.dry_run:
            raise UsageError("--report shows the written GIFs: it cannot go with --dry-run")


# on_suggestion(input, suggestion): called as each GIF is written (--jsonl).
OnSuggestion = Callable[[str, Suggestion], None]


class Suggester:
    """Everything loaded once per batch: model, runtime, C3D (lazily), history."""

    def __init__(self, config: SuggestConfig, progress: Progress | None = None) -> None:
        from phdcli.features import FeatureExtractor
        from phdcli.history import History
        from phdcli.model import default_model_path, load_model
        from phdcli.video import PixelBudget

        self.config = config
        self.progress = progress
        self.pixel_budget = PixelBudget.from_megapixels(config.max_megapixels)
        self._stems: set[str] = set()  # output stems taken in this batch
        self._written: set[Path] = set()  # files this batch claimed
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
            names, feats = self.history.named_features(self.extractor)
            log.info("history: %d GIFs in %s", len(names), self.history.folder)
            self._history = (names, feats)
        return self._history

    def _unique_stem(self, stem: str) -> str:
        """``stem``, or ``stem-2``, ``stem-3``... when an earlier input of the batch
        has it (the same file twice, ``a/clip.mp4`` and ``b/clip.mp4``, titles
        that all sanitise to ``video``)."""
        candidate, n = stem, 2
        while candidate in self._stems:
            candidate, n = f"{stem}-{n}", n + 1
        self._stems.add(candidate)
        return candidate

    def run(self, item: str | Path, on_suggestion: OnSuggestion | None = None) -> VideoSuggestions:
        from phdcli.video import using_pixel_budget

        with using_pixel_budget(self.pixel_budget):
            return self._run(str(item), on_suggestion)

    def _run(self, item: str, on_suggestion: OnSuggestion | None) -> VideoSuggestions:
        from phdcli.rank import rank_segments
        from phdcli.segments import fixed_segments, shot_segments
        from phdcli.source import resolve_input
        from phdcli.video import probe

        cfg = self.config
        source = resolve_input(item, cfg.download, self._stage_progress("download"))
        stem = self._unique_stem(source.stem)
        try:
            info = probe(source.path)
        except InputError as exc:
            if not source.downloaded:
                raise
            reason = str(exc).removeprefix(f"{source.path}: ")
            raise InputError(f"{item}: the cached download is not a readable video ({reason}); "
                             "--refresh downloads it again") from None
        spec = self.model.spec
        clip_s = spec.clip_frames / spec.clip_fps
        if info.duration_s < clip_s:
            raise InputError(
                f"{item}: {info.duration_s:.2f} s is shorter than one "
                f"{spec.clip_frames}-frame clip ({clip_s:.2f} s)"
            )
        if cfg.segments == "shots":
            segments = shot_segments(info.path, info.duration_s, chunk_s=cfg.length_s)
        else:
            segments = fixed_segments(info.duration_s, cfg.length_s)
        log.info("%s: %.1f s, %d segments", stem, info.duration_s, len(segments))

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
                     stem, int(excluded.sum()))

        def ranked(model_total: np.ndarray) -> np.ndarray:
            """What orders segments: the model, the heatmap term, kept spans left out."""
            return np.where(excluded, -np.inf, model_total + heat_term)

        ranking = rank_segments(self.extractor, self.model, info, segments, history, cfg.k,
                                cfg.exhaustive, progress=self._stage_progress("clips"),
                                adjust=ranked)
        self.clips_skipped += ranking.clips_skipped
        feats, terms, order = ranking.feats, ranking.terms, ranking.order.tolist()
        total = terms.total + heat_term
        _check_finite(item, total)

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
        page = self._report_page(stem)
        if cfg.dry_run:
            if on_suggestion is not None:
                for pick in picks:
                    on_suggestion(item, pick)
        else:
            picks = write_picks(info, stem, picks, cfg, self._written, self.progress)
            if on_suggestion is not None:  # only once their files are in place
                for pick in picks:
                    on_suggestion(item, pick)
            spec = self.model.spec
            kept.remember_picks(picks, order, feats, spec.clip_frames / spec.clip_fps, video_id,
                                video_sha, self.extractor.backbone_id, spec.to_dict())
        result = VideoSuggestions(item, info.path, info.duration_s, len(segments), picks,
                                  heatmap=source.heatmap)
        if page is not None:
            from phdcli.report import Timeline

            result.report = self._write_report(result, page, stem, Timeline(
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

def _check_finite(item: str, total: np.ndarray) -> None:
    """The last line of defence: a NaN or Inf score never reaches the output."""
    bad = ~np.isfinite(total)
    if bad.any():
        raise InputError(
            f"{item}: the model gave {int(bad.sum())} of {len(bad)} segments a non-finite "
            "score (NaN or Inf: damaged weights, features or model file?); nothing written"
        )


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[Failure]]:
    """Folders become the videos in them (sorted); an empty folder is a failure."""
    expanded: list[str] = []
    failures: list[Failure] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:
                found = sorted(
                    str(p) for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                    and not p.name.startswith(".")
                )
            except OSError as exc:
                failures.append(Failure(item, f"{item}: cannot list the folder "
                                              f"({exc.strerror or exc})"))
                continue
            if not found:
                failures.append(Failure(item, f"no videos in {item}"))
            expanded.extend(found)
        else:
            expanded.append(item)
    return expanded, failures


def failure_message(item: str, exc: BaseException) -> str:
    """One line that names the input once (never ``clip.mp4: clip: ...``)."""
    if isinstance(exc, OSError) and not isinstance(exc, PhdError):
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{exc.strerror or type(exc).__name__}{where}"
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(item) else f"{item}: {text}"


def suggest_batch(
    inputs: list[str],
    config: SuggestConfig,
    progress: Progress | None = None,
    on_suggestion: OnSuggestion | None = None,
) -> BatchResult:
    """Suggest GIFs for many inputs; models load once, one failure stops nothing.

    Usage errors (flags, template) raise before any work. A problem with
    ``--out`` or the shared parts (model file, weights, device, history)
    raises too, with ``exc.partial`` the batch so far (every input not done
    listed as failed with it). A problem with one input is recorded and the
    batch goes on.
    """
    items, failures = expand_inputs(inputs)
    for failure in failures:
        log.error("error: %s", failure.message)
    batch = BatchResult(failures=failures)
    try:
        check_outputs(config, len(items))
    except UsageError:
        raise  # the command line itself is wrong: no document, exit 2
    except PhdError as exc:  # --out cannot be used: every input fails, said once
        _stop(batch, items, exc)
    if not items:
        return batch
    try:
        suggester = Suggester(config, progress)
        suggester.extractor.backbone_id  # noqa: B018 - missing weights fail once, up front
        from phdcli.model import check_compatible

        # A model trained on one backbone's features must not score another's.
        check_compatible(suggester.model, suggester.extractor.spec,
                         "the features of these weights", suggester.extractor.backbone_sha256)
    except SHARED_ERRORS as exc:
        _stop(batch, items, exc)
    suggester.single_report = len(items) == 1
    batch.stats.model_loads = 1
    for index, item in enumerate(items):
        try:
            batch.results.append(suggester.run(item, on_suggestion))
        except SHARED_ERRORS as exc:
            _stop(batch, items[index:], exc)
        except (PhdError, OSError) as exc:
            message = failure_message(item, exc)
            log.error("error: %s", message)
            batch.failures.append(Failure(item, message))
    batch.stats.c3d_loads = suggester.extractor.stats.c3d_loads
    batch.stats.clips_forwarded = suggester.extractor.stats.clips_forwarded
    batch.stats.clips_skipped = suggester.clips_skipped
    if config.report:
        from phdcli.report import write_index

        batch.report = (write_index(batch, config.out_dir) if len(items) > 1 else
                        next((r.report for r in batch.results), None))
    return batch


def _stop(batch: BatchResult, remaining: list[str], exc: PhdError) -> NoReturn:
    """Re-raise ``exc`` carrying the batch so far, every remaining input failed with it."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    batch.failures.extend(Failure(item, message) for item in remaining)
    exc.partial = batch
    raise exc


def suggest(video: str | Path, config: SuggestConfig) -> VideoSuggestions:
    """Rank one video's segments for the configured user and write the top k."""
    return Suggester(config).run(str(video))
