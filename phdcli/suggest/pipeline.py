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
from typing import TYPE_CHECKING

import numpy as np

from phdcli.errors import (
    ClusterError,
    DeviceError,
    HistoryError,
    InputError,
    PhdError,
    UsageError,
    WeightsError,
)
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.engine import (
    OnFailure,
    Stages,
    failure_message,
    record_failures,
    run_in_order,
    stop_batch,
)
from phdcli.suggest.manifest import Owner
from phdcli.suggest.outputs import check_outputs, remember_written, write_picks
from phdcli.suggest.report import RunInfo, Timeline
from phdcli.suggest.results import BatchResult, Failure, Suggestion, VideoSuggestions
from phdcli.suggest.video import PreparedVideo

if TYPE_CHECKING:
    from phdcli.ranking.rank import Ranking
    from phdcli.suggest.rayrun import RayFeatures

log = logging.getLogger("phd")

# progress(stage, done, total): counted stages "download", "weights" (bytes), "clips",
# "gifs"; done == total == 0 says a stage of unknown length started ("probing",
# "segmenting", "history features", and from the extractor "loading C3D", "choosing
# the precision", "preparing int8 C3D").
Progress = Callable[[str, int, int], None]

# on_suggestion(input, suggestion): called as each GIF is written (--jsonl).
OnSuggestion = Callable[[str, Suggestion], None]

# Failures of what every input shares (the Ray cluster too): no other input can succeed either.
SHARED_ERRORS = (UsageError, DeviceError, WeightsError, HistoryError, ClusterError)


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
                from phdcli.suggest.runinfo import say_cold_start

                say_cold_start(self.config, self.history, self.model)
            self._history = (names, feats)
        return self._history

    @property
    def content_needed(self) -> bool:
        """Whether a term of the model reads C3D features with this history (no:
        a cold start with the bundled model ranks by position alone)."""
        return self.model.needs_features(len(self.history.items()))

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
            video = self.prepare(str(item))
            return self.finish(video, self.rank(video), on_suggestion)

    def prepare(self, item: str) -> PreparedVideo:
        """Resolve, probe and segment ``item``; the terms from outside the model (in input
        order: the stem is the batch's next free one)."""
        from phdcli.fsutil.contenthash import cached_sha256
        from phdcli.history.kept import same_span
        from phdcli.media.probe import probe
        from phdcli.media.segments import detect_cuts, fixed_segments, segments_from_cuts
        from phdcli.sources.heatmap import score_term
        from phdcli.sources.inputs import resolve_input

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
        return PreparedVideo(item, source, stem, info, segments, cuts, starts, ends, replay,
                             heat_term, video_sha, video_id, kept_spans, excluded, names, history)

    def rank(self, video: PreparedVideo, progress: bool = True) -> Ranking:
        """The video's features (cached, computed here, or by the cluster) and scores;
        ``progress``: show the clips bar (not from the threads of a Ray batch)."""
        from phdcli.ranking.rank import rank_segments

        cfg = self.config
        return rank_segments(self.extractor, self.model, video.info, video.segments,
                             video.history, cfg.k, cfg.exhaustive,
                             progress=self._stage_progress("clips") if progress else None,
                             adjust=video.ranked)

    def finish(self, video: PreparedVideo, ranking: Ranking,
               on_suggestion: OnSuggestion | None) -> VideoSuggestions:
        """Pick, write and remember the GIFs of a ranked video (in input order)."""
        from phdcli.suggest.picks import check_finite_scores, choose, make_picks
        from phdcli.suggest.spans import shot_fit, span_of

        cfg = self.config
        item, info, stem, segments = video.item, video.info, video.stem, video.segments
        starts, ends, heat_term, replay = video.starts, video.ends, video.heat_term, video.replay
        spec = self.model.spec
        self.clips_skipped += ranking.clips_skipped
        total = ranking.terms.total + heat_term
        check_finite_scores(item, total)
        chosen = choose(ranking.candidates, starts, ends, cfg.k, cfg.gap_s,
                        span_of(ranking, starts, ends, video.history, spec, info.duration_s,
                                cfg.gif_length_s),
                        shot_fit(info, video.cuts, cfg.gif_length_s or cfg.length_s,
                                 video.video_sha)
                        if cfg.one_shot else None)
        if len(chosen) < min(cfg.k, len(segments)):
            log.info("%s: %d of %d picks (--min-gap %g s and one shot per GIF leave no more)",
                     stem, len(chosen), cfg.k, cfg.gap_s)
        picks = make_picks(ranking, chosen, total, starts, ends, video.history_names, replay,
                           heat_term)
        ranked_by = ranking.active_terms + (("heatmap",) if replay is not None
                                            and cfg.heatmap_weight else ())

        owner = Owner(item, video.video_id, video.video_sha, stem)
        page = self._report_page(stem)
        heatmap = video.source.heatmap
        timeline = Timeline(starts, ends, total, video.excluded, video.kept_spans, heatmap)

        def result_of(done: list[Suggestion]) -> VideoSuggestions:
            return VideoSuggestions(item, info.path, info.duration_s, len(segments), done,
                                    heatmap=heatmap, ranked_by=ranked_by)

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
                             video.video_id, video.video_sha)
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
        from phdcli.suggest.runinfo import describe_run

        names, _ = self.history_features()
        return describe_run(self.config, self.history, self.model, self.extractor.backbone_id,
                            names, picks)

    def _stage_progress(self, stage: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        report = self.progress
        return lambda done, total: report(stage, done, total or 0)


def suggest_batch(
    inputs: list[str],
    config: SuggestConfig,
    progress: Progress | None = None,
    on_suggestion: OnSuggestion | None = None,
    on_failure: OnFailure | None = None,
) -> BatchResult:
    """Suggest GIFs for many inputs; models load once, one failure stops nothing.

    Usage errors (flags, template) raise before any work. A problem with
    ``--out`` or the shared parts (model file, weights, device, history, the
    Ray cluster) raises BatchStopped, carrying the batch so far (every input
    not done listed as failed). A problem with one input is recorded and the
    batch goes on. ``on_failure`` hears of every failed input as it is
    recorded. ``config.engine`` "ray": the features on a Ray cluster (the
    running Ray session, the address, or one started on this machine).
    """
    from phdcli.media.budget import using_pixel_budget
    from phdcli.sources.inputs import expand_inputs

    items, problems = expand_inputs(inputs)
    batch = BatchResult()
    for item, message in problems:
        log.error("error: %s", message)
        record_failures(batch, [Failure(item, message)], on_failure)
    try:
        check_outputs(config, len(items))
    except UsageError:
        raise  # the command line itself is wrong: no document, exit 2
    except PhdError as exc:  # --out cannot be used: every input fails, said once
        stop_batch(batch, items, exc, on_failure)
    if not items:
        return batch
    cluster = None
    try:
        if config.engine == "ray":  # before anything is loaded: a wrong address fails at once
            from phdcli.suggest.rayrun import RayFeatures

            cluster = RayFeatures(config.address)
        suggester = Suggester(config, progress, single_report=len(items) == 1)
        from phdcli.ranking.model import check_compatible

        # A model trained on one backbone's features must not score another's
        # (missing weights are named by the sha256 they will be fetched with).
        # A cold start that reads no feature needs no weights at all.
        if suggester.content_needed:
            check_compatible(suggester.model, suggester.extractor.spec,
                             "the features of these weights",
                             suggester.extractor.backbone_sha256)
            if cluster is not None:
                _start_actors(cluster, suggester)
    except SHARED_ERRORS as exc:
        if cluster is not None:
            cluster.close()
        stop_batch(batch, items, exc, on_failure)
    batch.stats.model_loads = 1

    def failed(index: int, item: str, exc: Exception) -> None:
        if isinstance(exc, SHARED_ERRORS):
            stop_batch(batch, items[index:], exc, on_failure)
        message = failure_message(item, exc)
        log.error("error: %s", message)
        record_failures(batch, [Failure(item, message)], on_failure)

    stages: Stages[PreparedVideo, Ranking] = Stages(
        suggester.prepare, lambda video: suggester.rank(video, progress=cluster is None),
        lambda video, ranking: batch.results.append(
            suggester.finish(video, ranking, on_suggestion)),
        failed, cluster.check if cluster is not None else lambda: None)
    try:
        with using_pixel_budget(suggester.pixel_budget):
            if cluster is None:
                run_in_order(items, stages)
            else:
                with cluster.faults():
                    run_in_order(items, stages, ahead=cluster.ahead)
    finally:
        if cluster is not None:
            cluster.close()
    batch.stats.c3d_loads = suggester.extractor.stats.c3d_loads
    batch.stats.clips_forwarded = suggester.extractor.stats.clips_forwarded
    batch.stats.clips_skipped = suggester.clips_skipped
    if config.report:
        from phdcli.suggest.report import write_index

        try:
            batch.report = (write_index(batch, config.out_dir, config.force) if len(items) > 1
                            else next((r.report for r in batch.results), None))
        except PhdError as exc:  # index.html became someone else's file meanwhile
            stop_batch(batch, [], exc)
    return batch


def _start_actors(cluster: RayFeatures, suggester: Suggester) -> None:
    """The cluster's feature actors, with the driver's weights (fetched here if need be) and
    settings; the driver's extractor sends them the clips its cache lacks."""
    from phdcli.suggest.rayrun import WorkerExtractor

    cfg, extractor = suggester.config, suggester.extractor
    cluster.start(WorkerExtractor(extractor.spec, extractor.backbone.path, cfg.device,
                                  cfg.precision))
    extractor.remote = cluster.clip_features


def suggest(video: str | Path, config: SuggestConfig) -> VideoSuggestions:
    """Rank one video's segments for the configured user and write the top k."""
    return Suggester(config).run(str(video))
