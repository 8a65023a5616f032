"""C3D features of segments and history GIFs: the face of the features stage.

Every segment (and every history GIF, taken as one segment spanning the
whole file) becomes the mean of the C3D features of a few 16-frame clips
sampled inside it, L2-normalised (method.md, "Representation"). Clips are
sampled at a fixed rate (``FeatureSpec.clip_fps``) whatever the source's
rate, so a GIF cut from a video at 10 fps and its source segment at 30 fps
give nearly the same feature.

``FeatureExtractor`` puts the stage's parts together, one job each: which
clips a request needs (``clips``), the clip cache (``cache``), the weights
(``registry.Backbone``), the precision (``precision``) and the network
(``network``). A clip computed once is never computed again, for any
segmentation or pass; a second ``phd suggest`` on the same video loads
features from disk and never loads C3D at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import paths
from phdcli.features.c3d_spec import FEATURE_DIMS
from phdcli.features.cache import ClipCache, cache_key
from phdcli.features.clips import (
    TICKS_PER_S,
    ClipProgress,
    ClipTable,
    SegmentFeatures,
    assemble,
    plan_clips,
)
from phdcli.features.network import C3DNetwork, ExtractorStats
from phdcli.features.precision import PrecisionChoice
from phdcli.features.registry import AutoFetch, Backbone
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.media.segments import Segment

if TYPE_CHECKING:
    from phdcli.features.device import Runtime
    from phdcli.media.probe import VideoInfo

# remote(path, clip starts in s) -> ((c, D) raw features, (c,) rows computed in int8): the
# clips computed elsewhere (``phd suggest --engine ray``: the cluster's feature actors).
RemoteClips = Callable[[Path, list[float]], tuple[np.ndarray, np.ndarray]]


class FeatureExtractor:
    """Turns files into feature vectors; loads C3D only when the cache misses.

    ``auto_fetch``: with no weights, fetch the default ones when C3D first
    runs (``registry.fetch_for_run``); None: no weights is a WeightsError.

    One extractor serves a whole batch of videos (and their history), so the
    network is loaded at most once per process. With ``remote`` set, the
    clips the cache lacks are computed there (C3D never loads here), and
    ``segment_features`` may be called from several threads at once.
    """

    def __init__(
        self,
        spec: FeatureSpec = FeatureSpec(),  # noqa: B008 (frozen)
        c3d_weights: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_clips: int = 8,
        cache_dir: Path | None = None,
        auto_int8: bool = True,
        auto_fetch: AutoFetch | None = None,
    ) -> None:
        self.spec = spec
        self.batch_clips = batch_clips
        self.stats = ExtractorStats()
        self.precision = PrecisionChoice(device, precision, auto_int8)
        self.backbone = Backbone(spec.family, c3d_weights, auto_fetch)
        self.network = C3DNetwork(spec, self.backbone, self.precision, batch_clips, self.stats)
        self.cache = ClipCache(cache_dir or paths.features_cache_dir(), FEATURE_DIMS[spec.layer])
        self.remote: RemoteClips | None = None
        self._counting = threading.Lock()  # the stats, from the threads a remote run uses

    @property
    def runtime(self) -> Runtime:
        """Resolved on first use: a warm run (all features cached) never imports torch."""
        return self.precision.runtime

    @property
    def runtime_in_use(self) -> Runtime | None:
        """The runtime if C3D was set up in this process; None: all features came from the cache."""
        return self.precision.in_use

    @property
    def backbone_id(self) -> str:
        """``family@sha256-prefix`` of the weights, without loading them."""
        return self.backbone.id

    @property
    def backbone_sha256(self) -> str:
        return self.backbone.sha256

    @property
    def on_stage(self) -> Callable[[str], None] | None:
        """Told the name of a slow step as it starts (loading C3D, building int8)."""
        return self.network.on_stage

    @on_stage.setter
    def on_stage(self, callback: Callable[[str], None] | None) -> None:
        self.network.on_stage = callback

    @property
    def check_video(self) -> VideoInfo | None:
        """The video the int8 self-check runs on (``phd suggest`` sets the video at hand)."""
        return self.network.check_video

    @check_video.setter
    def check_video(self, video: VideoInfo | None) -> None:
        self.network.check_video = video

    def segment_features(
        self,
        video: VideoInfo,
        segments: Sequence[Segment],
        progress: ClipProgress | None = None,
        full: Sequence[bool] | np.ndarray | None = None,
    ) -> SegmentFeatures:
        """Features of ``segments`` of ``video``, from the cache when it has them.

        ``full`` (one flag per segment; None: all) says which segments get
        the full spec; the others get their first clip only (the coarse pass
        of ``phdcli.ranking.rank``).
        """
        owners, ticks = plan_clips(self.spec, video.duration_s, segments, full)
        needed = np.unique(ticks)
        key = self.cache_key(video.path)
        table = self.cache.load(key)
        accept_int8 = self.precision.accepts_int8_rows
        rows = table.rows(needed, accept_int8) if table is not None else np.full(len(needed), -1)
        missing = needed[rows < 0]
        if len(missing):
            new = self._compute(video, missing, progress)
            table = table.merged(new) if table is not None else new
            self.cache.store(key, table)
        assert table is not None
        with self._counting:
            self.stats.cache_misses += bool(len(missing))
            self.stats.cache_hits += not len(missing)
            self.stats.clips_used += len(needed)
        return assemble(table, table.rows(ticks, True), owners, ticks, len(segments))

    def clips_needed(
        self, video: VideoInfo, segments: Sequence[Segment],
        full: Sequence[bool] | np.ndarray | None = None,
    ) -> int:
        """Distinct clips ``segment_features`` reads for this request (cached or not)."""
        return len(np.unique(plan_clips(self.spec, video.duration_s, segments, full)[1]))

    def file_feature(self, video: VideoInfo, progress: ClipProgress | None = None) -> np.ndarray:
        """(D,) feature of a whole file (a history GIF or a short clip)."""
        whole = Segment(0.0, video.duration_s)
        return self.segment_features(video, [whole], progress).segments[0]

    def cache_key(self, path: Path) -> str:
        """The name of ``path``'s clip table for these weights and this spec."""
        return cache_key(cached_sha256(path), self.backbone_id, self.spec)

    def _compute(
        self, video: VideoInfo, ticks: np.ndarray, progress: ClipProgress | None
    ) -> ClipTable:
        """Decode and run C3D on the clips starting at ``ticks`` (ascending)."""
        starts_s = (ticks / TICKS_PER_S).tolist()
        if self.remote is not None:
            feats, int8 = self.remote(video.path, starts_s)
            with self._counting:
                self.stats.clips_forwarded += len(ticks)
            return ClipTable(ticks.astype(np.int64), feats.astype(np.float32), int8.astype(bool))
        feats = self.network.clip_features(video.path, starts_s, progress, video)
        return ClipTable(ticks.astype(np.int64), feats.astype(np.float32),
                         np.full(len(ticks), self.network.computes_int8))

    def clip_features(
        self, path: Path, starts_s: Sequence[float], progress: ClipProgress | None = None,
        video: VideoInfo | None = None,
    ) -> np.ndarray:
        """(c, D) float32 raw features of the clips starting at ``starts_s`` (ascending).

        Not cached (the training side keeps its own store). NaN/Inf features raise.
        """
        return self.network.clip_features(path, starts_s, progress, video)

    def forward_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (B, 16, 128, 171, 3) decoded elsewhere -> float32 (B, D) raw features."""
        return self.network.forward_clips(clips)
