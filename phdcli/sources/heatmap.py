"""Where viewers replay a video ("most replayed"), as sites publish it through yt-dlp.

yt-dlp's info dict may carry ``heatmap``: a list of ``{start_time, end_time,
value}`` (YouTube's values are relative replay intensity in [0, 1]). phd keeps
it with the cached download, shows it beside the model's scores (JSON,
``--explain``, the report's timeline) and, only when asked with
``--heatmap-weight W``, adds one hand-set term to the fused score:

    heatmap_term(segment) = W * replay(segment)
    replay([a, b]) = sum_i value_i * overlap([a, b], [start_i, end_i]) / (b - a)

i.e. the heatmap's mean value over the segment, weighted by time; seconds
that no heatmap span covers count as 0. The weight is **hand-set and
unmeasured**: nothing here has checked it against PHD^2's users, so the
default is 0 and the ranking is then exactly the model's.

Pure Python and numpy; nothing remote is trusted unchecked: ``parse`` drops a heatmap
that is not a short list of finite, ordered spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# (start_s, end_s, value), sorted by start.
Heatmap = tuple[tuple[float, float, float], ...]

# YouTube publishes 100 spans per video; anything far beyond that is not a
# heatmap we understand (and would only bloat source.json and the report).
MAX_SPANS = 10_000


def parse(raw: object) -> Heatmap | None:
    """yt-dlp's ``heatmap`` (list of dicts) or our cached ``[[s, e, v], ...]`` -> Heatmap.

    None when absent, empty or malformed: a bad heatmap is ignored, never an error.
    """
    if not isinstance(raw, list | tuple) or not raw or len(raw) > MAX_SPANS:
        return None
    spans: list[tuple[float, float, float]] = []
    for entry in raw:
        if isinstance(entry, dict):
            values = (entry.get("start_time"), entry.get("end_time"), entry.get("value"))
        elif isinstance(entry, list | tuple) and len(entry) == 3:
            values = tuple(entry)
        else:
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        start_s, end_s, value = (float(v) for v in values)  # type: ignore[arg-type]
        if not all(math.isfinite(v) for v in (start_s, end_s, value)):
            return None
        if start_s < 0 or end_s <= start_s:
            return None
        spans.append((start_s, end_s, value))
    spans.sort()
    # Overlapping spans would count their seconds twice in ``replay``.
    if any(nxt[0] < prev[1] - 1e-6 for prev, nxt in zip(spans, spans[1:], strict=False)):
        return None
    return tuple(spans)


def to_json(heatmap: Heatmap) -> list[list[float]]:
    """``[[start_s, end_s, value], ...]`` for source.json and ``--json``."""
    return [[round(s, 3), round(e, 3), round(v, 6)] for s, e, v in heatmap]


def replay(heatmap: Heatmap, starts_s: Sequence[float] | np.ndarray,
           ends_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) time-weighted mean heatmap value over each [start, end] (module docstring)."""
    import numpy as np
    starts = np.asarray(starts_s, dtype=np.float64)[:, None]
    ends = np.asarray(ends_s, dtype=np.float64)[:, None]
    spans = np.asarray(heatmap, dtype=np.float64).reshape(-1, 3)
    overlap = np.clip(np.minimum(ends, spans[:, 1]) - np.maximum(starts, spans[:, 0]), 0.0, None)
    length = np.maximum(ends - starts, 1e-9)[:, 0]
    return (overlap @ spans[:, 2]) / length


def score_term(heatmap: Heatmap | None, starts_s: Sequence[float] | np.ndarray,
               ends_s: Sequence[float] | np.ndarray, weight: float
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """(replay per segment, or None without a heatmap; the term ``weight * replay``).

    Without a heatmap, or with weight 0, the term is exactly 0.0 everywhere:
    the fused score, and so the ranking, is the model's own.
    """
    import numpy as np

    n = len(starts_s)
    if heatmap is None:
        return None, np.zeros(n)
    values = replay(heatmap, starts_s, ends_s)
    return values, (weight * values if weight != 0 else np.zeros(n))
