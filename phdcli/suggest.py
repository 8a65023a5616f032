"""``phd suggest``: from videos (files, folders, URLs) to the GIFs this user would make.

source -> video (probe) -> segments -> features (C3D, cached) -> model (score)
-> gifs (write). ``Suggester`` holds what is loaded once for a whole batch
(runtime, ranking model, feature extractor, history features);
``suggest_batch`` runs it over many inputs, and one failing input stops
nothing.

Output files: everything that can be checked before decoding is (the
``--name`` template against -k and the number of inputs, name length,
``--out`` writability); each input gets a stem unique in the batch; a
video's files are encoded into a private folder inside ``--out`` and only
when all of them succeeded are they claimed under their final names, without
replacing anything (unless ``--force``). So a failed video leaves nothing, two
runs into one folder never overwrite each other, and a reported path always
holds that suggestion's file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from phdcli import defaults, fsutil
from phdcli.errors import (
    DeviceError,
    HistoryError,
    InputError,
    PhdError,
    UsageError,
    WeightsError,
)
from phdcli.gifs import GifOptions, WrittenClip
from phdcli.source import DownloadOptions
from phdcli.video import DEFAULT_MAX_MEGAPIXELS

if TYPE_CHECKING:
    from phdcli.features import SegmentFeatures
    from phdcli.heatmap import Heatmap
    from phdcli.report import Timeline
    from phdcli.video import VideoInfo

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
            picks = self._write_gifs(info, stem, picks, item, on_suggestion)
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

    def _write_gifs(
        self, video: VideoInfo, stem: str, picks: list[Suggestion], item: str,
        on_suggestion: OnSuggestion | None,
    ) -> list[Suggestion]:
        """Encode every pick into a private folder, then claim all final names.

        A failure before the claims leaves ``--out`` untouched; a name taken
        meanwhile (another phd) undoes this video's claims. Suggestions are
        reported (``on_suggestion``) only once their files are in place.
        """
        cfg = self.config
        # Never upscale: a wider GIF than its source (as displayed, rotation
        # applied) is only bigger and slower.
        options = replace(cfg.gif, width=min(cfg.gif.width, video.display_width))
        targets = [output_path(cfg.out_dir, cfg.name_template, stem, p, cfg.gif.format)
                   for p in picks]
        if len(set(targets)) < len(targets):
            raise UsageError(
                f"--name {cfg.name_template!r} gives several files the same name: use {{rank}}"
            )
        again = [t for t in targets if t in self._written]
        if again:
            raise PhdError(f"{again[0]} was already written by this run for another input "
                           "(--name needs {stem} to tell the inputs apart)")
        clash = [t for t in targets if (os.path.lexists(t) if not cfg.force else t.is_dir())]
        if clash:
            raise PhdError(f"{clash[0]} already exists" +
                           ("" if cfg.force else " (use --force to overwrite)"))
        with fsutil.temp_dir(cfg.out_dir, "gifs") as staging:
            clips = self._encode_all(video, picks, [staging / t.name for t in targets], options)
            claimed: list[tuple[Path, tuple[int, int]]] = []
            current = targets[0]
            try:
                for current, clip in zip(targets, clips, strict=True):
                    claimed.append((current, fsutil.claim(clip.path, current, cfg.force)))
            except BaseException as exc:
                for target, identity in claimed:
                    fsutil.unclaim(target, identity)
                if isinstance(exc, FileExistsError):
                    raise PhdError(f"{current} already exists: another phd wrote it meanwhile "
                                   "(use --force to overwrite)") from None
                raise
        self._written.update(targets)
        written = []
        for pick, target, clip in zip(picks, targets, clips, strict=True):
            if cfg.gif.max_size_bytes is not None:
                log.info("%s: %.2f MB (fps %g, width %d)", target.name,
                         clip.size_bytes / 1e6, clip.fps, clip.width)
            done_pick = replace(pick, path=target, size_bytes=clip.size_bytes)
            written.append(done_pick)
            if on_suggestion is not None:
                on_suggestion(item, done_pick)
        return written

    def _encode_all(self, video: VideoInfo, picks: list[Suggestion], outs: list[Path],
                    options: GifOptions) -> list[WrittenClip]:
        """Write every pick's clip; the first failure raises (the rest are cancelled)."""
        from phdcli.gifs import write_clip

        # Each file is its own ffmpeg process whose GIF encoder is mostly one
        # thread: writing them side by side uses the other cores (measured:
        # ~2 s per 480-px GIF, 36 % of a short video's cold run on 2 cores).
        workers = max(1, min(len(picks), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="phd-gif") as pool:
            futures = [pool.submit(write_clip, video.path, p.start_s, p.end_s, out, options)
                       for p, out in zip(picks, outs, strict=True)]
            try:
                clips = []
                for done, future in enumerate(futures, start=1):
                    clips.append(future.result())
                    if self.progress is not None:
                        self.progress("gifs", done, len(picks))
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return clips


def _check_finite(item: str, total: np.ndarray) -> None:
    """The last line of defence: a NaN or Inf score never reaches the output."""
    bad = ~np.isfinite(total)
    if bad.any():
        raise InputError(
            f"{item}: the model gave {int(bad.sum())} of {len(bad)} segments a non-finite "
            "score (NaN or Inf: damaged weights, features or model file?); nothing written"
        )


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


def check_name_template(template: str, k: int = 1, n_videos: int = 1, fmt: str = "gif",
                        out_dir: Path = Path(".")) -> None:
    """Refuse, before any work, a template that cannot give every file its own name."""
    from phdcli.source import _STEM_MAX

    def render(stem: str = "video", rank: int = 1, start_s: float = 0.0) -> str:
        pick = Suggestion(rank, start_s, start_s + 5.0, start_s, start_s + 5.0, 0.0,
                          Explanation(0, 0, 0, None, None))
        return output_path(out_dir, template, stem, pick, fmt).name

    longest = render(stem="x" * _STEM_MAX + f"-{n_videos}", rank=k, start_s=999_999.0)
    limit = fsutil.name_max(out_dir)
    if len(longest.encode("utf-8", "surrogateescape")) > limit:
        raise UsageError(f"--name {template!r} gives file names too long for {out_dir} "
                         f"(up to {len(longest.encode())} bytes; at most {limit})")
    name = render()
    if k > 1 and render(rank=2) == name:
        raise UsageError(f"--name {template!r} gives every GIF of a video the same name: "
                         "use {rank}")
    if n_videos > 1 and render(stem="video-2") == name:
        raise UsageError(f"--name {template!r} gives the GIFs of different videos the same "
                         "names: use {stem}")


def check_outputs(config: SuggestConfig, n_videos: int) -> None:
    """Everything about the outputs that can be known before decoding a frame."""
    check_name_template(config.name_template, config.k, n_videos, config.gif.format,
                        config.out_dir)
    if config.dry_run:
        return
    fsutil.writable_folder(config.out_dir, "--out")
    fsutil.clean_stale_temps(config.out_dir)  # what a killed run left behind
    if config.report:  # index.html: the page of a lone video, or the batch's index
        from phdcli.report import INDEX, check_free

        check_free(config.out_dir / INDEX, config.force)


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
