"""C3D features of segments and history GIFs, with a content-keyed cache.

Every segment (and every history GIF, taken as one segment spanning the whole
file) becomes the mean of the C3D features of a few 16-frame clips sampled
inside it, L2-normalised (method.md, "Representation"). Clips are sampled at a
fixed rate (``FeatureSpec.clip_fps``) whatever the source's rate, so a GIF cut
from a video at 10 fps and its source segment at 30 fps give nearly the same
feature.

The cache is keyed by the file's content hash, the exact backbone weights, the
layer, the sampling and the segment bounds: a second ``phd suggest`` on the
same video loads features from disk and never loads C3D at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import NOTICE, paths
from phdcli.errors import PhdError, WeightsError
from phdcli.fsutil import atomic_path, cached_sha256
from phdcli.segments import Segment, clip_starts

if TYPE_CHECKING:
    from phdcli.device import Runtime
    from phdcli.video import VideoInfo
    from phdcli.weights import LoadedC3D

log = logging.getLogger("phd")

# progress(done, total) for clips; the CLI turns it into a bar.
ClipProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature vector is: written into model files and cache keys."""

    family: str = "c3d-sports1m"
    layer: str = "fc6"
    clip_fps: float = 25.0
    clips_per_segment: int = 2
    clip_frames: int = 16

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        return cls(
            family=str(data["family"]),
            layer=str(data["layer"]),
            clip_fps=float(data["clip_fps"]),  # type: ignore[arg-type]
            clips_per_segment=int(data["clips_per_segment"]),  # type: ignore[call-overload]
            clip_frames=int(data.get("clip_frames", 16)),  # type: ignore[call-overload]
        )


@dataclass
class SegmentFeatures:
    """Features of a video's segments and of the clips they were averaged from.

    segments: (n, D) float32, L2-normalised rows; clips: (c, D) float32,
    L2-normalised; clip_starts_s: (c,); clip_owner: (c,) segment index.
    The clip rows let ``phd suggest`` centre a GIF on a segment's best clip.
    """

    segments: np.ndarray
    clips: np.ndarray
    clip_starts_s: np.ndarray
    clip_owner: np.ndarray


@dataclass
class ExtractorStats:
    """Counters for tests and benchmarks (what ran, not how long it took)."""

    c3d_loads: int = 0
    clips_forwarded: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


class FeatureExtractor:
    """Turns files into feature vectors; loads C3D only when the cache misses.

    One extractor serves a whole batch of videos (and their history), so the
    network is loaded at most once per process.
    """

    def __init__(
        self,
        spec: FeatureSpec = FeatureSpec(),
        c3d_weights: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_clips: int = 8,
        cache_dir: Path | None = None,
    ) -> None:
        from phdcli.device import check_spec

        check_spec(device, precision)
        self._device, self._precision = device, precision
        self._runtime: Runtime | None = None
        self.spec = spec
        self.batch_clips = batch_clips
        self.cache_dir = cache_dir or paths.features_cache_dir()
        self.stats = ExtractorStats()
        self._weights_path = c3d_weights
        self._backbone_id: str | None = None
        self._c3d: LoadedC3D | None = None

    @property
    def runtime(self) -> Runtime:
        """Resolved on first use: a warm run (all features cached) never imports torch."""
        if self._runtime is None:
            from phdcli.device import resolve_runtime

            self._runtime = resolve_runtime(self._device, self._precision)
            log.log(NOTICE, "%s", self._runtime.describe())
        return self._runtime

    @property
    def runtime_in_use(self) -> Runtime | None:
        """The runtime if C3D was set up in this process; None: all features came from the cache."""
        return self._runtime

    # -- identity ---------------------------------------------------------
    @property
    def backbone_id(self) -> str:
        """``family@sha256-prefix`` of the weights, without loading them."""
        if self._backbone_id is None:
            from phdcli.weights import resolve_weights_path

            path = resolve_weights_path(self._weights_path)
            self._weights_path = path
            digest = cached_sha256(path)
            self._backbone_id = f"{self.spec.family}@{digest[:12]}"
        return self._backbone_id

    @property
    def backbone_sha256(self) -> str:
        """The full sha256 of the weights file (what model files and the feature store record)."""
        self.backbone_id  # noqa: B018 - resolves the weights path, or raises
        assert self._weights_path is not None
        return cached_sha256(self._weights_path)

    def _network(self) -> LoadedC3D:
        if self._c3d is None:
            from phdcli.weights import load_c3d

            self.backbone_id  # noqa: B018 - resolves the weights path, or raises
            assert self._weights_path is not None
            self._c3d = load_c3d(self._weights_path, self.runtime)
            if self._c3d.family != self.spec.family:
                raise WeightsError(
                    f"the C3D weights are a {self._c3d.family} model, but the ranking model "
                    f"expects {self.spec.family} features"
                )
            self.stats.c3d_loads += 1
        return self._c3d

    # -- public API -------------------------------------------------------
    def segment_features(
        self,
        video: VideoInfo,
        segments: Sequence[Segment],
        progress: ClipProgress | None = None,
    ) -> SegmentFeatures:
        """Features of ``segments`` of ``video``, from the cache when it has them."""
        bounds = np.array([[s.start_s, s.end_s] for s in segments], dtype=np.float64)
        key = self._cache_key(video.path, bounds)
        cached = self._cache_load(key)
        if cached is not None:
            return cached
        feats = self._extract(video, segments, progress)
        self._cache_store(key, feats)
        return feats

    def file_feature(self, video: VideoInfo, progress: ClipProgress | None = None) -> np.ndarray:
        """(D,) feature of a whole file (a history GIF or a short clip)."""
        whole = Segment(0.0, video.duration_s)
        return self.segment_features(video, [whole], progress).segments[0]

    # -- extraction -------------------------------------------------------
    def _extract(
        self, video: VideoInfo, segments: Sequence[Segment], progress: ClipProgress | None
    ) -> SegmentFeatures:
        spec = self.spec
        owners: list[int] = []
        starts: list[float] = []
        for index, segment in enumerate(segments):
            for start in clip_starts(
                segment, video.duration_s, spec.clip_fps, spec.clips_per_segment, spec.clip_frames
            ):
                owners.append(index)
                starts.append(start)
        order = np.argsort(np.asarray(starts), kind="stable")
        sorted_starts = [starts[i] for i in order]
        sorted_owners = [owners[i] for i in order]

        clip_feats = self.clip_features(video.path, sorted_starts, progress)
        owner = np.asarray(sorted_owners, dtype=np.int64)
        return SegmentFeatures(
            segments=pool_segments(clip_feats, owner, len(segments)),
            clips=l2_normalise(clip_feats).astype(np.float32),
            clip_starts_s=np.asarray(sorted_starts, dtype=np.float64),
            clip_owner=owner,
        )

    def clip_features(
        self, path: Path, starts_s: Sequence[float], progress: ClipProgress | None = None
    ) -> np.ndarray:
        """(c, D) float32 raw features of the clips starting at ``starts_s`` (ascending)."""
        from phdcli.video import decode_clips

        clips = decode_clips(path, starts_s, self.spec.clip_fps, self.spec.clip_frames)
        rows: list[np.ndarray] = []
        # The decode thread starts first, so that loading C3D (and converting
        # its weights on first use) overlaps decoding.
        with _Prefetch(clips, depth=2 * self.batch_clips) as decoded:
            net = self._network()
            for batch in _batched(iter(decoded), self.batch_clips):
                rows.append(self._forward(net, np.stack(batch)))
                if progress is not None:
                    progress(sum(len(r) for r in rows), len(starts_s))
        clip_feats = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
        if len(clip_feats) != len(starts_s):
            raise PhdError(f"{Path(path).name}: decoded {len(clip_feats)} of {len(starts_s)} clips")
        return clip_feats

    def forward_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (B, 16, 128, 171, 3) decoded elsewhere -> float32 (B, D) raw features."""
        if not clips.flags.writeable:  # e.g. zero-copy from Ray's object store
            clips = clips.copy()
        return self._forward(self._network(), clips)

    def _forward(self, net: LoadedC3D, clips: np.ndarray) -> np.ndarray:
        """clips: uint8 (B, 16, 128, 171, 3) -> float32 (B, D)."""
        import torch

        from phdcli.c3d import preprocess

        with torch.inference_mode(), self.runtime.autocast():
            x = torch.from_numpy(clips).to(self.runtime.device, non_blocking=True)
            out = net.model(preprocess(x, net.input_spec), layer=self.spec.layer)
        self.stats.clips_forwarded += len(clips)
        return out.float().cpu().numpy()

    # -- cache ------------------------------------------------------------
    def _cache_key(self, path: Path, bounds: np.ndarray) -> str:
        content = cached_sha256(path)
        ident = json.dumps(
            {
                "content": content,
                "backbone": self.backbone_id,
                "spec": self.spec.to_dict(),
                "bounds": hashlib.sha256(np.round(bounds, 4).tobytes()).hexdigest(),
            },
            sort_keys=True,
        )
        return f"{content[:16]}-{hashlib.sha256(ident.encode()).hexdigest()[:24]}"

    def _cache_file(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.npz"

    def _cache_load(self, key: str) -> SegmentFeatures | None:
        file = self._cache_file(key)
        try:
            with np.load(file, allow_pickle=False) as data:
                feats = SegmentFeatures(**{name: data[name] for name in _CACHED_ARRAYS})
        except (OSError, ValueError, KeyError):
            self.stats.cache_misses += 1
            return None
        self.stats.cache_hits += 1
        return feats

    def _cache_store(self, key: str, feats: SegmentFeatures) -> None:
        file = self._cache_file(key)
        try:
            with atomic_path(file, suffix=".part.npz") as tmp:
                np.savez(tmp, **{name: getattr(feats, name) for name in _CACHED_ARRAYS})
        except OSError as exc:  # a full or read-only cache costs speed, not results
            log.warning("could not cache features (%s)", exc)


_CACHED_ARRAYS = ("segments", "clips", "clip_starts_s", "clip_owner")


def pool_segments(clip_feats: np.ndarray, owner: np.ndarray, n_segments: int) -> np.ndarray:
    """Segment features (n, D) float32: the L2-normalised mean of each segment's clip rows."""
    sums = np.zeros((n_segments, clip_feats.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, clip_feats)
    counts = np.bincount(owner, minlength=n_segments)
    return l2_normalise(sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _batched(items: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_DONE = object()


class _Prefetch:
    """Run ``items`` in a thread, ``depth`` ahead: decoding overlaps the network.

    The thread starts at construction, not at the first ``next()``, so that
    whatever the caller does before consuming (loading C3D) overlaps decoding
    too. The bounded queue keeps memory flat whatever the video's length; an
    exception in the decoder is re-raised in the consumer. Use as a context
    manager: leaving it stops the thread, consumed or not.
    """

    def __init__(self, items: Iterator[np.ndarray], depth: int) -> None:
        self._items = items
        self._buffer: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name="phd-decode", daemon=True)
        self._worker.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # forwarded to the consumer, not lost
            self._put(exc)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self._buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
