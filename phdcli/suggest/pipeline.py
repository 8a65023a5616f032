"""``phd suggest``: from videos (files, folders, URLs) to the GIFs this user would make.

sources (resolve) -> media (probe, segments) -> features (C3D, cached) ->
ranking (score, coarse to fine) -> picks -> outputs (write, remember) ->
report. ``Suggester`` holds what is loaded once for a whole batch (ranking
model, feature extractor, history features); ``suggest_batch`` runs it over
many inputs, and one failing input stops nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from phdcli import NOTICE
from phdcli.errors import DeviceError, HistoryError, InputError, PhdError, UsageError, WeightsError
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.manifest import Owner
from phdcli.suggest.outputs import check_outputs, remember_written, write_picks
from phdcli.suggest.report import RunInfo, Timeline
from phdcli.suggest.results import (
    BatchResult,
    BatchStopped,
    Failure,
    Suggestion,
    VideoSuggestions,
    count,
)

log = logging.getLogger("phd")

# progress(stage, done, total): counted stages "download", "weights" (bytes), "clips",
# "gifs"; done == total == 0 says a stage of unknown length started ("probing",
# "segmenting", "history features", and from the extractor "loading C3D", "choosing
# the precision", "preparing int8 C3D").
Progress = Callable[[str, int, int], None]

# on_suggestion(input, suggestion): called as each GIF is written (--jsonl).
OnSuggestion = Callable[[str, Suggestion], None]

# on_failure(failure): called as an input fails (--jsonl), the batch's stop included.
OnFailure = Callable[[Failure], None]

# Failures of what every input shares: no other input can succeed either.
SHARED_ERRORS = (UsageError, DeviceError, WeightsError, HistoryError)


class Suggester:
    """Everything loaded once per batch: model, C3D (lazily), history.

    ``single_report``: with ``--report``, this video's page is ``index.html``
    (one input) or ``<stem>.html`` beside the batch's index.
    """

    def __init__(self, config: SuggestConfig, progress: Progress | None = None,
                 single_report: bool = True) -> None:
        from phdcli.features.extractor import FeatureExtractor
        from phdcli.history.store import History
        from phdcli.media.budget import PixelBudget
        from phdcli.ranking.model import default_model_path, load_model

        self.config = config
        self.progress = progress
        self.single_report = single_report
        self.pixel_budget = PixelBudget.from_megapixels(config.max_megapixels)
        self._stems: set[str] = set()  # output stems taken in this batch
        self._written: set[Path] = set()  # files this batch claimed
        self.model_path = config.model_path or default_model_path()
        self.model = load_model(self.model_path)
        # The device is resolved (and said on stderr) when C3D first runs:
        # a batch whose features are all cached never imports torch.
        from phdcli.features.registry import AutoFetch

        # No weights: fetched when C3D first runs (never for a cached run), or refused offline.
        self.extractor = FeatureExtractor(
            self.model.spec, config.c3d_weights, config.device, config.precision,
            auto_fetch=AutoFetch(config.offline, self._stage_progress("weights")),
        )
        self.history = (
            History.from_folder(config.history_dir)
            if config.history_dir is not None
            else History.for_user(config.user)
        )
        self._history: tuple[list[str], np.ndarray] | None = None
        self.clips_skipped = 0
        if progress is not None:  # loading C3D, the precision probe: said while they run
            self.extractor.on_stage = lambda stage: progress(stage, 0, 0)

    def _stage(self, stage: str) -> None:
        """A stage of unknown length starts (a spinner on a terminal)."""
        if self.progress is not None:
            self.progress(stage, 0, 0)

    def history_features(self) -> tuple[list[str], np.ndarray]:
        """(names, (m, D) features) of the history, computed once per batch."""
        if self._history is None:
            self._stage("history features")
            names, feats = self.history.named_features(self.extractor)
            log.info("history: %d GIFs in %s", len(names), self.history.folder)
            if not names:
                self._say_cold_start()
            self._history = (names, feats)
        return self._history

    @property
    def content_needed(self) -> bool:
        """Whether a term of the model reads C3D features with this history (no:
        a cold start with the bundled model ranks by position alone)."""
        return self.model.needs_features(len(self.history.items()))

    def _say_cold_start(self) -> None:
        """Once a batch: why the picks cannot follow this user's taste yet."""
        user = "" if self.config.user == "default" else f" -u {self.config.user}"
        if not self.history.managed:
            where = f"the --history folder {self.history.folder} holds no GIF"
            fix = "put GIFs you made in it"
        else:
            where = "your history is empty"
            fix = f"`phd history add{user} GIF...` adds GIFs you made"
        what = ("the content model and the position in the video"
                if self.model.needs_features(0) else "position in the video only (no C3D needed)")
        log.log(NOTICE, "%s: ranking by %s; %s, so that picks follow your taste",
                where, what, fix)

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
        from phdcli.media.budget import using_pixel_budget

        with using_pixel_budget(self.pixel_budget):
            return self._run(str(item), on_suggestion)

    def _run(self, item: str, on_suggestion: OnSuggestion | None) -> VideoSuggestions:
        from phdcli.fsutil.contenthash import cached_sha256
        from phdcli.history.kept import same_span
        from phdcli.media.probe import probe
        from phdcli.media.segments import detect_cuts, fixed_segments, segments_from_cuts
        from phdcli.ranking.rank import rank_segments
        from phdcli.sources.heatmap import score_term
        from phdcli.sources.inputs import resolve_input
        from phdcli.suggest.picks import check_finite_scores, choose, make_picks
        from phdcli.suggest.spans import shot_fit, span_of

        cfg = self.config
        source = resolve_input(item, cfg.download, self._stage_progress("download"))
        stem = self._unique_stem(source.stem)
        self._stage("probing")
        try:
            info = probe(source.path)
        except InputError as exc:
            if not source.downloaded:
                raise
            reason = str(exc).removeprefix(f"{source.path}: ")
            raise InputError(f"{item}: the cached download is not a readable video ({reason}); "
                             "--refresh downloads it again") from None
        spec = self.model.spec
        if info.duration_s < spec.clip_s:
            raise InputError(
                f"{item}: {info.duration_s:.2f} s is shorter than one "
                f"{spec.clip_frames}-frame clip ({spec.clip_s:.2f} s)"
            )
        cuts: list[float] | None = None  # the whole video's, once --segments shots found them
        if cfg.segments == "shots":
            self._stage("segmenting")
            cuts = detect_cuts(info.path)
            segments = segments_from_cuts(cuts, info.duration_s, chunk_s=cfg.length_s)
        else:
            segments = fixed_segments(info.duration_s, cfg.length_s)
        log.info("%s: %.1f s, %d segments", stem, info.duration_s, len(segments))

        self.extractor.check_video = info  # the precision probe runs on the user's video
        names, history = self.history_features()
        starts = np.array([s.start_s for s in segments])
        ends = np.array([s.end_s for s in segments])
        replay, heat_term = score_term(source.heatmap, starts, ends, cfg.heatmap_weight)
        video_sha = cached_sha256(info.path)
        video_id = source.input if source.downloaded else str(info.path.resolve())
        kept_spans = self.history.kept_spans(video_sha, video_id)
        excluded = same_span(starts, ends, () if cfg.include_kept else kept_spans)
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
        total = ranking.terms.total + heat_term
        check_finite_scores(item, total)
        chosen = choose(ranking.candidates, starts, ends, cfg.k, cfg.gap_s,
                        span_of(ranking, starts, ends, history, spec, info.duration_s,
                                cfg.gif_length_s),
                        shot_fit(info, cuts, cfg.gif_length_s or cfg.length_s, video_sha)
                        if cfg.one_shot else None)
        if len(chosen) < min(cfg.k, len(segments)):
            log.info("%s: %d of %d picks (--min-gap %g s and one shot per GIF leave no more)",
                     stem, len(chosen), cfg.k, cfg.gap_s)
        picks = make_picks(ranking, chosen, total, starts, ends, names, replay, heat_term)
        ranked_by = ranking.active_terms + (("heatmap",) if replay is not None
                                            and cfg.heatmap_weight else ())

        owner = Owner(item, video_id, video_sha, stem)
        page = self._report_page(stem)
        timeline = Timeline(starts, ends, total, excluded, kept_spans, source.heatmap)

        def result_of(done: list[Suggestion]) -> VideoSuggestions:
            return VideoSuggestions(item, info.path, info.duration_s, len(segments), done,
                                    heatmap=source.heatmap, ranked_by=ranked_by)

        def render_page(done: list[Suggestion]) -> str:
            """--report: this video's page, placed with its GIFs (all or nothing)."""
            from phdcli.suggest.report import render_video_page

            assert page is not None
            return render_video_page(result_of(done), timeline, self.run_info(done),
                                     page.parent, stem)

        if not cfg.dry_run:
            picks = write_picks(info, stem, picks, cfg, self._written, self.progress, owner,
                                page, render_page)
            remember_written(picks, ranking, spec,
                             self.extractor.backbone_id if ranking.feats is not None else "",
                             video_id, video_sha)
        if on_suggestion is not None:  # with files, only once they are in place
            for pick in picks:
                on_suggestion(item, pick)
        result = result_of(picks)
        result.report = page
        return result

    def _report_page(self, stem: str) -> Path | None:
        """--report: this video's page (checked with its GIFs by ``write_picks``,
        before any is encoded)."""
        if not self.config.report:
            return None
        from phdcli.suggest.report import page_path

        return page_path(self.config.out_dir, stem, self.single_report)

    def run_info(self, picks: list[Suggestion] | None = None) -> RunInfo:
        """The features, model and history of this batch, in words for the report,
        and thumbnails of the history GIFs nearest to ``picks``."""
        from phdcli.media.thumbs import thumbnail
        from phdcli.paths import tilde
        from phdcli.suggest.report import model_terms

        cfg = self.config
        history = self.history
        names, _ = self.history_features()
        # What the features are, not where they were computed this time: a
        # rerun reads them from the cache and must write the same page (the
        # device and precision are said on stderr when C3D runs).
        features = (f"C3D {self.extractor.backbone_id}, {self.model.spec.layer}"
                    if self.model.needs_features(len(names)) else
                    "none needed: no history to compare with and no content model")
        if history.managed:
            n_kept = sum(1 for it in history.items() if it.source is not None)
            where = (f"profile {cfg.user!r}: {count(len(names), 'GIF')} "
                     f"({n_kept} kept from phd's picks)")
        else:
            where = f"--history folder: {count(len(names), 'GIF')} (read-only)"
        terms, hand_set = model_terms(self.model, has_history=bool(names))
        nearest = {p.explanation.nearest_gif for p in picks or ()} - {None}
        thumbs = {name: thumbnail(history.folder / name) for name in sorted(nearest)}
        return RunInfo(features=features, history=f"{where} in {tilde(history.folder)}",
                       command=cfg.command or "phd suggest {input} --report",
                       terms=terms, hand_set=hand_set, heatmap_weight=cfg.heatmap_weight,
                       thumbnails={name: data for name, data in thumbs.items() if data})

    def _stage_progress(self, stage: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        report = self.progress
        return lambda done, total: report(stage, done, total or 0)


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
    on_failure: OnFailure | None = None,
) -> BatchResult:
    """Suggest GIFs for many inputs; models load once, one failure stops nothing.

    Usage errors (flags, template) raise before any work. A problem with
    ``--out`` or the shared parts (model file, weights, device, history)
    raises BatchStopped, carrying the batch so far (every input not done
    listed as failed). A problem with one input is recorded and the batch
    goes on. ``on_failure`` hears of every failed input as it is recorded.
    """
    from phdcli.sources.inputs import expand_inputs

    items, problems = expand_inputs(inputs)
    batch = BatchResult()
    for item, message in problems:
        log.error("error: %s", message)
        _fail(batch, [Failure(item, message)], on_failure)
    try:
        check_outputs(config, len(items))
    except UsageError:
        raise  # the command line itself is wrong: no document, exit 2
    except PhdError as exc:  # --out cannot be used: every input fails, said once
        _stop(batch, items, exc, on_failure)
    if not items:
        return batch
    try:
        suggester = Suggester(config, progress, single_report=len(items) == 1)
        from phdcli.ranking.model import check_compatible

        # A model trained on one backbone's features must not score another's
        # (missing weights are named by the sha256 they will be fetched with).
        # A cold start that reads no feature needs no weights at all.
        if suggester.content_needed:
            check_compatible(suggester.model, suggester.extractor.spec,
                             "the features of these weights",
                             suggester.extractor.backbone_sha256)
    except SHARED_ERRORS as exc:
        _stop(batch, items, exc, on_failure)
    batch.stats.model_loads = 1
    for index, item in enumerate(items):
        try:
            batch.results.append(suggester.run(item, on_suggestion))
        except SHARED_ERRORS as exc:
            _stop(batch, items[index:], exc, on_failure)
        except (PhdError, OSError) as exc:
            message = failure_message(item, exc)
            log.error("error: %s", message)
            _fail(batch, [Failure(item, message)], on_failure)
    batch.stats.c3d_loads = suggester.extractor.stats.c3d_loads
    batch.stats.clips_forwarded = suggester.extractor.stats.clips_forwarded
    batch.stats.clips_skipped = suggester.clips_skipped
    if config.report:
        from phdcli.suggest.report import write_index

        try:
            batch.report = (write_index(batch, config.out_dir, config.force) if len(items) > 1
                            else next((r.report for r in batch.results), None))
        except PhdError as exc:  # index.html became someone else's file meanwhile
            _stop(batch, [], exc)
    return batch


def _stop(batch: BatchResult, remaining: list[str], exc: PhdError,
          on_failure: OnFailure | None = None) -> NoReturn:
    """Stop the batch: every remaining input failed with ``exc``, said in BatchStopped."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    _fail(batch, [Failure(item, message) for item in remaining], on_failure)
    raise BatchStopped(exc, batch) from exc


def _fail(batch: BatchResult, failures: list[Failure], on_failure: OnFailure | None) -> None:
    """Record failed inputs, each told to ``on_failure`` as it is recorded."""
    for failure in failures:
        batch.failures.append(failure)
        if on_failure is not None:
            on_failure(failure)


def suggest(video: str | Path, config: SuggestConfig) -> VideoSuggestions:
    """Rank one video's segments for the configured user and write the top k."""
    return Suggester(config).run(str(video))
