"""Shot cuts found around a pick, remembered per video content and range.

The one-shot rule (``phdcli.suggest.spans``) runs scenedetect on a few
seconds around each pick: about a third of a second per pick on 2 cores,
and a warm run (features cached) would pay it again for the same picks.
The cuts of a range depend only on the video's bytes, the range and the
detector, so they are kept in ``cache/cuts/<video sha256>.json`` and a
rerun reads them back. Like every cache entry, the file is checked before
it is trusted (a plain file, bounded, the detector named, every cut a finite
time inside its range); anything else is discarded and the cuts found anew.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

from phdcli.media.segments import detect_cuts

log = logging.getLogger("phd")

MAX_RANGES = 2000  # per video: a bound on the file, far above any real use


@functools.cache  # one metadata lookup a process, not one a pick
def _detector() -> str:
    """What found the cuts: a new scenedetect may find others, so it keys the memo."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"AdaptiveDetector/scenedetect-{version('scenedetect')}"
    except PackageNotFoundError:
        return "AdaptiveDetector/scenedetect-unknown"


def _memo_file(video_sha256: str) -> Path:
    from phdcli.paths import cache_dir

    return cache_dir() / "cuts" / f"{video_sha256}.json"


def _range_key(start_s: float, end_s: float) -> str:
    return f"{round(start_s * 1000)}-{round(end_s * 1000)}"  # milliseconds


def _valid(doc: Any, detector: str) -> dict[str, list[float]] | None:
    """The memo's ranges, or None when any part of it is not what phd writes."""
    if not isinstance(doc, dict) or doc.get("detector") != detector:
        return None
    ranges = doc.get("ranges")
    if not isinstance(ranges, dict) or len(ranges) > MAX_RANGES:
        return None
    for key, cuts in ranges.items():
        lo, sep, hi = str(key).partition("-")
        if not (sep and lo.isdigit() and hi.isdigit()) or not isinstance(cuts, list):
            return None
        lo_s, hi_s = int(lo) / 1000, int(hi) / 1000
        for cut in cuts:
            if (not isinstance(cut, (int, float)) or isinstance(cut, bool)
                    or not math.isfinite(cut) or not lo_s - 1e-3 <= cut <= hi_s + 1e-3):
                return None
    return ranges


def _read(memo: Path, detector: str) -> dict[str, list[float]]:
    from phdcli.fsutil.cachefile import discard, read_entry_text

    try:
        doc = json.loads(read_entry_text(memo))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("warning: %s: damaged cut memo (%s): finding the cuts again", memo,
                    exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
        discard(memo)
        return {}
    ranges = _valid(doc, detector)
    if ranges is None:
        if isinstance(doc, dict) and doc.get("detector") not in (None, detector):
            return {}  # another scenedetect's cuts: replaced below, nothing damaged
        log.warning("warning: %s: damaged cut memo: finding the cuts again", memo)
        discard(memo)
        return {}
    return ranges


def cuts_between(video: Path, video_sha256: str | None, start_s: float,
                 end_s: float) -> list[float]:
    """:func:`phdcli.media.segments.detect_cuts` on [start_s, end_s] of ``video``,
    read back from the memo when this video's range was searched before."""
    if video_sha256 is None:
        return detect_cuts(video, start_s, end_s)
    from phdcli.fsutil import atomic_write_text

    detector = _detector()
    memo = _memo_file(video_sha256)
    ranges = _read(memo, detector)
    key = _range_key(start_s, end_s)
    if key in ranges:
        return [float(c) for c in ranges[key]]
    cuts = detect_cuts(video, start_s, end_s)
    if len(ranges) >= MAX_RANGES:
        ranges = {}
    ranges[key] = cuts
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, json.dumps({"detector": detector, "ranges": ranges}))
    except OSError as exc:  # a memo only: a read-only cache costs time, not the run
        log.debug("cannot remember cuts in %s: %s", memo, exc)
    return cuts
