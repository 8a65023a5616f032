"""One video of a batch between its stages: prepared, ranked, then written.

``Suggester.prepare`` (resolve, probe, segment, the terms from outside the
model) fills a ``PreparedVideo`` on the driver, in input order;
``Suggester.rank`` reads its features and scores it (on a thread of the
driver while a Ray cluster computes the clips); ``Suggester.finish`` picks,
writes and reports, in input order again. The local engine runs the three
back to back, so both engines run the same code on the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from phdcli.media.probe import VideoInfo
    from phdcli.media.segments import Segment
    from phdcli.sources.inputs import ResolvedInput


@dataclass
class PreparedVideo:
    """What ``finish`` needs of a video besides its ranking (arrays: one row per segment)."""

    item: str  # the input as the user gave it
    source: ResolvedInput
    stem: str  # unique in the batch
    info: VideoInfo
    segments: list[Segment]
    cuts: list[float] | None  # the whole video's, when --segments shots found them
    starts: np.ndarray
    ends: np.ndarray
    replay: np.ndarray | None  # the site's heatmap per segment, if any
    heat_term: np.ndarray
    video_sha: str
    video_id: str
    kept_spans: tuple[tuple[float, float], ...]
    excluded: np.ndarray  # spans kept before, left out (unless --include-kept)
    history_names: list[str]
    history: np.ndarray

    def ranked(self, model_total: np.ndarray) -> np.ndarray:
        """What orders segments: the model, the heatmap term, kept spans left out."""
        return np.where(self.excluded, -np.inf, model_total + self.heat_term)
