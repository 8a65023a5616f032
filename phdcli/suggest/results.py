"""What ``phd suggest`` returns: suggestions, per-video results and the batch.

Plain values, shared by the pipeline (``phdcli.suggest.pipeline``), the
files it writes (``phdcli.suggest.outputs``, ``phdcli.suggest.report``) and
the command line's JSON (schema in the README) and tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli.errors import PhdError

if TYPE_CHECKING:
    from phdcli.sources.heatmap import Heatmap


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
    segment: int | None = None  # index of the segment among the video's

    def to_dict(self, explain: bool = False) -> dict[str, object]:
        doc: dict[str, object] = {
            "rank": self.rank,
            "start": round(self.start_s, 3),  # the GIF's window
            "end": round(self.end_s, 3),
            "segment": {"start": round(self.segment_start_s, 3),
                        "end": round(self.segment_end_s, 3)},
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
    ranked_by: tuple[str, ...] = ()  # the terms that ordered the segments (phd-ca, svm-d...)


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
        from phdcli.sources.heatmap import to_json

        results = []
        for r in self.results:
            doc: dict[str, object] = {
                "input": r.input,
                "video": str(r.video),
                "duration": round(r.duration_s, 3),
                "segments": r.n_segments,
                "ranked_by": list(r.ranked_by),
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


class BatchStopped(PhdError):
    """A failure of what every input shares (``--out``, weights, device, history)
    stopped the batch; ``batch`` is what was done, every input not done listed
    as failed, so that ``--json`` can still print its document."""

    def __init__(self, cause: PhdError, batch: BatchResult) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.batch = batch
        self.exit_code = cause.exit_code


def clock(seconds: float, tenths: bool = True) -> str:
    """``m:ss.s`` (or ``m:ss``), how phd shows a time in a video."""
    minutes, secs = divmod(max(float(seconds), 0.0), 60)
    return f"{int(minutes)}:{secs:04.1f}" if tenths else f"{int(minutes)}:{int(secs):02d}"


def count(n: int, noun: str) -> str:
    """``1 pick``, ``3 picks``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
