"""``phd suggest``: from a video to the k GIFs this user would most likely make.

source -> video (probe) -> segments -> features (C3D, cached) -> model (score)
-> gifs (write). ``Suggester`` holds what is loaded once for a whole batch
(runtime, ranking model, feature extractor, history features); ``suggest`` is
the one-video convenience over it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from phdcli import defaults
from phdcli.errors import PhdError, UsageError
from phdcli.gifs import GifOptions

log = logging.getLogger("phd")

# progress(stage, done, total): stages "clips", "history", "gifs".
Progress = Callable[[str, int, int], None]

SEGMENT_MODES = ("fixed", "shots")


@dataclass(frozen=True)
class SuggestConfig:
    k: int = defaults.K
    out_dir: Path = Path(".")
    segments: str = "fixed"
    length_s: float = defaults.SEGMENT_LENGTH_S
    gif: GifOptions = GifOptions()
    name_template: str = defaults.NAME_TEMPLATE
    device: str = "auto"
    precision: str = "auto"
    c3d_weights: Path | None = None
    model_path: Path | None = None
    user: str = "default"
    history_dir: Path | None = None
    force: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"-k must be at least 1, got {self.k}")
        if self.segments not in SEGMENT_MODES:
            raise UsageError(f"--segments must be one of {', '.join(SEGMENT_MODES)}")
        if not self.length_s > 0:
            raise UsageError(f"--length must be positive, got {self.length_s}")


@dataclass(frozen=True)
class Suggestion:
    rank: int
    start_s: float
    end_s: float
    score: float
    path: Path | None
    terms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "start": round(self.start_s, 3),
            "end": round(self.end_s, 3),
            "score": round(self.score, 6),
            "path": None if self.path is None else str(self.path),
        }


@dataclass
class VideoSuggestions:
    video: Path
    duration_s: float
    n_segments: int
    suggestions: list[Suggestion]


class Suggester:
    """Everything loaded once per batch: model, runtime, C3D (lazily), history."""

    def __init__(self, config: SuggestConfig, progress: Progress | None = None) -> None:
        from phdcli.device import resolve_runtime
        from phdcli.features import FeatureExtractor
        from phdcli.history import History
        from phdcli.model import default_model_path, load_model

        self.config = config
        self.progress = progress
        self.model = load_model(config.model_path or default_model_path())
        self.runtime = resolve_runtime(config.device, config.precision)
        log.info("device %s", self.runtime.describe())
        self.extractor = FeatureExtractor(self.runtime, self.model.spec, config.c3d_weights)
        self.history = (
            History.from_folder(config.history_dir)
            if config.history_dir is not None
            else History.for_user(config.user)
        )
        self._history_feats: np.ndarray | None = None

    def history_features(self) -> np.ndarray:
        if self._history_feats is None:
            self._history_feats = self.history.features(self.extractor)
            log.info("history: %d GIFs from %s", len(self._history_feats), self.history.folder)
        return self._history_feats

    def run(self, video_path: Path) -> VideoSuggestions:
        from phdcli.segments import fixed_segments, shot_segments
        from phdcli.video import probe

        cfg = self.config
        info = probe(Path(video_path))
        if cfg.segments == "shots":
            segments = shot_segments(info.path, info.duration_s, chunk_s=cfg.length_s)
        else:
            segments = fixed_segments(info.duration_s, cfg.length_s)
        log.info("%s: %.1f s, %d segments", info.path.name, info.duration_s, len(segments))

        history = self.history_features()
        feats = self.extractor.segment_features(info, segments, self._clip_progress)
        starts = np.array([s.start_s for s in segments])
        ends = np.array([s.end_s for s in segments])
        terms = self.model.score(feats, history, starts, ends, info.duration_s)
        # Ties go to the earlier segment: stable and predictable for scripts.
        order = np.argsort(-terms.total, kind="stable")[: cfg.k]

        picks = []
        for rank, idx in enumerate(order, start=1):
            near = int(terms.nearest_index[idx])
            picks.append(
                Suggestion(
                    rank=rank,
                    start_s=float(starts[idx]),
                    end_s=float(ends[idx]),
                    score=float(terms.total[idx]),
                    path=None,
                    terms={
                        "fnn": float(terms.fnn[idx]),
                        "svm": float(terms.svm[idx]),
                        "time": float(terms.time[idx]),
                        "nearest": near,
                        "similarity": float(terms.nearest_similarity[idx]),
                    },
                )
            )
        if not cfg.dry_run:
            picks = self._write_gifs(info.path, picks)
        return VideoSuggestions(info.path, info.duration_s, len(segments), picks)

    def _clip_progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress("clips", done, total)

    def _write_gifs(self, video: Path, picks: list[Suggestion]) -> list[Suggestion]:
        from phdcli.gifs import write_gif

        cfg = self.config
        targets = [output_path(cfg.out_dir, cfg.name_template, video, p) for p in picks]
        clash = [t for t in targets if t.exists()]
        if clash and not cfg.force:
            raise PhdError(f"{clash[0]} already exists (use --force to overwrite)")
        written = []
        for done, (pick, target) in enumerate(zip(picks, targets, strict=True), start=1):
            write_gif(video, pick.start_s, pick.end_s, target, cfg.gif)
            written.append(
                Suggestion(pick.rank, pick.start_s, pick.end_s, pick.score, target, pick.terms)
            )
            if self.progress is not None:
                self.progress("gifs", done, len(picks))
        return written


def suggest(
    video: Path, config: SuggestConfig, progress: Progress | None = None
) -> VideoSuggestions:
    """Rank one video's segments for the configured user and write the top k."""
    return Suggester(config, progress).run(video)


def output_path(out_dir: Path, template: str, video: Path, pick: Suggestion) -> Path:
    """Render the GIF's file name; nothing in it may leave ``out_dir``."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in video.stem).strip("._")
    try:
        name = template.format(
            stem=stem or "video", rank=pick.rank, start=pick.start_s, end=pick.end_s,
            score=pick.score,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"bad --name template {template!r} ({exc})") from None
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise UsageError(f"--name template {template!r} gives {name!r}, which would leave --out")
    return Path(out_dir) / f"{name}.gif"


VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif", ".flv", ".ts", ".mpg")


@dataclass(frozen=True)
class Failure:
    input: str
    message: str


@dataclass
class BatchResult:
    results: list[tuple[str, VideoSuggestions]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` document (schema in the README)."""
        return {
            "version": 1,
            "results": [
                {
                    "input": source,
                    "video": str(r.video),
                    "duration": round(r.duration_s, 3),
                    "segments": r.n_segments,
                    "suggestions": [s.to_dict() for s in r.suggestions],
                }
                for source, r in self.results
            ],
            "errors": [{"input": f.input, "error": f.message} for f in self.failures],
        }


def expand_inputs(inputs: list[str]) -> list[str]:
    """Folders become the videos in them (sorted); everything else stays."""
    expanded: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                log.warning("%s: no videos in this folder", item)
            expanded.extend(found)
        else:
            expanded.append(item)
    return expanded


def suggest_batch(
    inputs: list[str], config: SuggestConfig, progress: Progress | None = None
) -> BatchResult:
    """Suggest GIFs for many inputs; models load once, one failure stops nothing.

    A problem with the shared parts (model file, weights, device, history)
    raises at once; a problem with one input is recorded and the batch goes on.
    """
    suggester = Suggester(config, progress)
    suggester.extractor.backbone_id  # noqa: B018 - missing weights fail once, up front
    batch = BatchResult()
    for item in expand_inputs(inputs):
        try:
            result = suggester.run(Path(item))
        except PhdError as exc:
            if isinstance(exc, UsageError):
                raise
            batch.failures.append(Failure(item, " ".join(str(exc).split())))
            continue
        batch.results.append((item, result))
    return batch
