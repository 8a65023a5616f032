"""C3D features of segments and history GIFs, with a content-keyed cache.

Every segment (and every history GIF, taken as one segment spanning the whole
file) becomes the mean of the C3D features of a few 16-frame clips sampled
inside it, L2-normalised (method.md, "Representation"). Clips are sampled at a
fixed rate (``FeatureSpec.clip_fps``) whatever the source's rate, so a GIF cut
from a video at 10 fps and its source segment at 30 fps give nearly the same
feature.

The cache holds clips, not segments: one table per file, keyed by the file's
content hash, the exact backbone weights, the layer and how a clip is
sampled. Any segmentation (or the coarse and fine passes of
``phdcli.rank``) reads the clips it needs from it and computes only those it
lacks; a second ``phd suggest`` on the same video loads features from disk
and never loads C3D at all. Entries are checked before they are trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import NOTICE, paths
from phdcli.c3d_spec import FEATURE_DIMS
from phdcli.errors import PhdError, WeightsError
from phdcli.fsutil import atomic_path, cached_sha256
from phdcli.segments import Segment, clip_starts

if TYPE_CHECKING:
    from phdcli.device import Runtime
    from phdcli.int8 import Int8C3D
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


# Clip starts are cached on a 0.1 ms grid (and decoded at the grid point, so
# a cached clip is exactly the clip it stands for); frames are >= 1 ms apart.
TICKS_PER_S = 10_000


@dataclass
class ClipTable:
    """Raw C3D features of one video's clips, one row per clip start.

    ticks: (c,) int64, ascending and unique (start * TICKS_PER_S); feats:
    (c, D) float32 as C3D gave them (not normalised, so that segment means
    are today's exactly); int8: (c,) bool, rows computed by the int8 network.
    """

    ticks: np.ndarray
    feats: np.ndarray
    int8: np.ndarray

    def rows(self, ticks: np.ndarray, accept_int8: bool) -> np.ndarray:
        """Row index of each tick, -1 where there is none (or only an int8 one
        and int8 is not acceptable)."""
        if len(self.ticks) == 0:
            return np.full(len(ticks), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ticks, ticks), len(self.ticks) - 1)
        found = self.ticks[pos] == ticks
        if not accept_int8:
            found &= ~self.int8[pos]
        return np.where(found, pos, -1)

    def merged(self, new: ClipTable) -> ClipTable:
        """Rows of both; where both have a tick, ``new``'s row wins unless it is
        int8 and the old one is not (a float row is never replaced by int8)."""
        ticks = np.concatenate([self.ticks, new.ticks])
        feats = np.concatenate([self.feats, new.feats])
        int8 = np.concatenate([self.int8, new.int8])
        # Sort by tick, the preferred row of each tick first: float before
        # int8, then the newer before the older.
        order = np.lexsort((-np.arange(len(ticks)), int8, ticks))
        ticks, feats, int8 = ticks[order], feats[order], int8[order]
        first = np.ones(len(ticks), bool)
        first[1:] = ticks[1:] != ticks[:-1]
        return ClipTable(ticks[first], feats[first], int8[first])


@dataclass
class ExtractorStats:
    """Counters for tests and benchmarks (what ran, not how long it took).

    ``clips_used``: clips the requests were built from (cached or computed);
    a coarse-to-fine ranking compares it with what the full spec needs.
    """

    c3d_loads: int = 0
    clips_forwarded: int = 0
    clips_used: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


class FeatureExtractor:
    """Turns files into feature vectors; loads C3D only when the cache misses.

    One extractor serves a whole batch of videos (and their history), so the
    network is loaded at most once per process. The cache holds each video's
    clips (``ClipTable``), whatever segments asked for them: a clip computed
    once is never computed again, for any segmentation or pass.
    """

    def __init__(
        self,
        spec: FeatureSpec = FeatureSpec(),
        c3d_weights: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_clips: int = 8,
        cache_dir: Path | None = None,
        auto_int8: bool = True,
    ) -> None:
        from phdcli.device import check_spec

        check_spec(device, precision)
        self._device, self._precision = device, precision.strip().lower()
        self._auto_int8 = auto_int8  # False: ``auto`` stays float (training features)
        self._runtime: Runtime | None = None
        self.spec = spec
        self.batch_clips = batch_clips
        self.cache_dir = cache_dir or paths.features_cache_dir()
        self.stats = ExtractorStats()
        self._weights_path = c3d_weights
        self._backbone_id: str | None = None
        self._c3d: LoadedC3D | None = None
        self._int8: Int8C3D | None = None
        # The video the int8 self-check uses (set by ``phd suggest`` to the
        # video at hand, so that a short history GIF computed first is not it).
        self.check_video: VideoInfo | None = None

    @property
    def runtime(self) -> Runtime:
        """Resolved on first use: a warm run (all features cached) never imports torch.

        An ``auto`` int8 is only a candidate until ``_settle_precision`` has
        the self-check's verdict; the line on stderr waits for it.
        """
        if self._runtime is None:
            from phdcli.device import resolve_runtime

            self._runtime = resolve_runtime(self._device, self._precision, self._auto_int8)
            if not self._runtime.needs_self_check:
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

    def _settle_precision(self, video: VideoInfo | None) -> None:
        """Turn an int8 runtime into a usable network, or fall back to fp32.

        ``auto`` chose int8 only as a candidate: the self-check on this video
        (or its cached verdict for these weights on this CPU) decides, and
        the decision is said on stderr. ``--precision int8`` skips the check.
        """
        rt = self.runtime
        if rt.precision != "int8" or self._int8 is not None:
            return

        from phdcli import int8

        net = self._network()
        assert self._weights_path is not None
        video = self.check_video or video
        if video is None and not rt.needs_self_check:
            raise WeightsError("int8 C3D is built on clips of a video: run phd suggest once "
                               "with --precision int8, or use fp32 here")
        if video is None:  # clips decoded elsewhere (training): nothing to check int8 on
            self._runtime = replace(rt, precision="fp32", needs_self_check=False,
                                    reason="no video to run the int8 self-check on")
            log.log(NOTICE, "%s", self._runtime.describe())
            return
        try:
            engine, final = int8.prepare(net, rt, video, self.spec, self._weights_path)
        except PhdError:
            raise
        except Exception as exc:  # an OpenVINO/NNCF install that does not work
            if not rt.needs_self_check:
                raise WeightsError(f"int8 C3D failed ({type(exc).__name__}: {exc}); "
                                   "use --precision fp32") from None
            log.warning("warning: int8 C3D failed (%s: %s): using fp32", type(exc).__name__,
                        " ".join(str(exc).split())[:200])
            engine, final = None, replace(rt, precision="fp32", needs_self_check=False,
                                          reason=f"int8 failed ({type(exc).__name__})")
        self._runtime = final
        self._int8 = engine
        log.log(NOTICE, "%s", final.describe())

    # -- public API -------------------------------------------------------
    def segment_features(
        self,
        video: VideoInfo,
        segments: Sequence[Segment],
        progress: ClipProgress | None = None,
        full: Sequence[bool] | np.ndarray | None = None,
    ) -> SegmentFeatures:
        """Features of ``segments`` of ``video``, from the cache when it has them.

        ``full`` (one flag per segment; None: all) says which segments get
        the full spec (``clips_per_segment`` clips); the others get one clip,
        the first of theirs, so that refining a segment later costs only its
        remaining clips (the coarse pass of ``phdcli.rank``).
        """
        owners, ticks = self._plan(video, segments, full)
        needed = np.unique(ticks)
        key = self._cache_key(video.path)
        table = self._cache_load(key)
        # Rows computed in int8 serve only a run that may itself use int8.
        accept_int8 = self._precision == "int8" or (self._precision == "auto"
                                                    and self._auto_int8)
        rows = table.rows(needed, accept_int8) if table is not None else np.full(len(needed), -1)
        missing = needed[rows < 0]
        if len(missing):
            self.stats.cache_misses += 1
            new = self._compute(video, missing, progress)
            table = table.merged(new) if table is not None else new
            self._cache_store(key, table)
        else:
            self.stats.cache_hits += 1
        assert table is not None
        self.stats.clips_used += len(needed)
        return _assemble(table, table.rows(ticks, True), owners, ticks, len(segments))

    def clips_needed(
        self, video: VideoInfo, segments: Sequence[Segment],
        full: Sequence[bool] | np.ndarray | None = None,
    ) -> int:
        """Distinct clips ``segment_features`` reads for this request (cached or not)."""
        return len(np.unique(self._plan(video, segments, full)[1]))

    def file_feature(self, video: VideoInfo, progress: ClipProgress | None = None) -> np.ndarray:
        """(D,) feature of a whole file (a history GIF or a short clip)."""
        whole = Segment(0.0, video.duration_s)
        return self.segment_features(video, [whole], progress).segments[0]

    # -- extraction -------------------------------------------------------
    def _plan(
        self, video: VideoInfo, segments: Sequence[Segment],
        full: Sequence[bool] | np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(owner segment, start tick) of every clip the request needs, by start."""
        spec = self.spec
        if full is not None and len(full) != len(segments):
            raise ValueError(f"full has {len(full)} flags for {len(segments)} segments")
        owners: list[int] = []
        starts: list[float] = []
        for index, segment in enumerate(segments):
            mine = clip_starts(
                segment, video.duration_s, spec.clip_fps, spec.clips_per_segment, spec.clip_frames
            )
            if full is not None and not full[index]:
                mine = mine[:1]
            owners.extend([index] * len(mine))
            starts.extend(mine)
        ticks = np.round(np.asarray(starts, dtype=np.float64) * TICKS_PER_S).astype(np.int64)
        order = np.argsort(ticks, kind="stable")
        return np.asarray(owners, dtype=np.int64)[order], ticks[order]

    def _compute(
        self, video: VideoInfo, ticks: np.ndarray, progress: ClipProgress | None
    ) -> ClipTable:
        """Decode and run C3D on the clips starting at ``ticks`` (ascending)."""
        feats = self.clip_features(video.path, (ticks / TICKS_PER_S).tolist(), progress, video)
        return ClipTable(ticks.astype(np.int64), feats.astype(np.float32),
                         np.full(len(ticks), self._int8 is not None))

    def clip_features(
        self, path: Path, starts_s: Sequence[float], progress: ClipProgress | None = None,
        video: VideoInfo | None = None,
    ) -> np.ndarray:
        """(c, D) float32 raw features of the clips starting at ``starts_s`` (ascending).

        Not cached. NaN/Inf features raise: never cached, never scored.
        """
        from phdcli.video import decode_clips, probe

        clips = decode_clips(path, starts_s, self.spec.clip_fps, self.spec.clip_frames)
        rows: list[np.ndarray] = []
        # The decode thread starts first, so that loading C3D (and converting
        # its weights on first use) overlaps decoding.
        with _Prefetch(clips, depth=2 * self.batch_clips) as decoded:
            net = self._network()
            if self.runtime.precision == "int8" and self._int8 is None:
                self._settle_precision(video or self.check_video or probe(path))
            for batch in _batched(iter(decoded), self.batch_clips):
                rows.append(self._forward(net, np.stack(batch)))
                if progress is not None:
                    progress(sum(len(r) for r in rows), len(starts_s))
        feats = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
        if len(feats) != len(starts_s):
            raise PhdError(f"{Path(path).name}: decoded {len(feats)} of {len(starts_s)} clips")
        _check_finite(feats, Path(path).name, self.runtime.precision, self._weights_path)
        return feats

    def forward_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (B, 16, 128, 171, 3) decoded elsewhere -> float32 (B, D) raw features."""
        if not clips.flags.writeable:  # e.g. zero-copy from Ray's object store
            clips = clips.copy()
        net = self._network()
        if self.runtime.precision == "int8" and self._int8 is None:
            self._settle_precision(None)
        feats = self._forward(net, clips)
        _check_finite(feats, "decoded clips", self.runtime.precision, self._weights_path)
        return feats

    def _forward(self, net: LoadedC3D, clips: np.ndarray) -> np.ndarray:
        """clips: uint8 (B, 16, 128, 171, 3) -> float32 (B, D)."""
        import torch

        from phdcli.c3d import preprocess

        with torch.inference_mode(), self.runtime.autocast():
            x = preprocess(torch.from_numpy(clips).to(self.runtime.device, non_blocking=True),
                           net.input_spec)
            if self._int8 is not None:
                out = torch.from_numpy(self._int8.forward(x.numpy()))
            else:
                out = net.model(x, layer=self.spec.layer)
        self.stats.clips_forwarded += len(clips)
        return out.float().cpu().numpy()

    # -- cache ------------------------------------------------------------
    def _cache_key(self, path: Path) -> str:
        """The clip table's name: the file's content, the weights and how a clip
        is made (layer, rate, length), but not how segments sample clips."""
        content = cached_sha256(path)
        spec = self.spec
        ident = json.dumps(
            {
                "content": content,
                "backbone": self.backbone_id,
                "layer": spec.layer,
                "clip_fps": spec.clip_fps,
                "clip_frames": spec.clip_frames,
                "ticks_per_s": TICKS_PER_S,
            },
            sort_keys=True,
        )
        return f"{content[:16]}-{hashlib.sha256(ident.encode()).hexdigest()[:24]}"

    def _cache_file(self, key: str) -> Path:
        return self.cache_dir / "clips" / key[:2] / f"{key}.npz"

    def _cache_load(self, key: str) -> ClipTable | None:
        """The cached clip table, checked before it is trusted.

        A damaged entry (truncated, empty, garbage, wrong shapes, NaN) is
        removed with a one-line warning and recomputed: the cache can cost
        time, never a run.
        """
        file = self._cache_file(key)
        if not file.exists():
            return None
        table, problem = _read_table(file, FEATURE_DIMS[self.spec.layer])
        if table is None:
            log.warning("warning: feature cache entry %s is damaged (%s): removed, recomputing",
                        file.name, problem)
            with contextlib.suppress(OSError):
                file.unlink()
        return table

    def _cache_store(self, key: str, table: ClipTable) -> None:
        file = self._cache_file(key)
        # Another run may have added clips since we read: keep its rows too.
        on_disk, _ = _read_table(file, table.feats.shape[1]) if file.exists() else (None, "")
        if on_disk is not None:
            table = on_disk.merged(table)
        try:
            with atomic_path(file, suffix=".part.npz") as tmp:
                np.savez(tmp, ticks=table.ticks, feats=table.feats, int8=table.int8)
        except OSError as exc:  # a full or read-only cache costs speed, not results
            log.warning("warning: could not cache features (%s)", exc)


def _check_finite(feats: np.ndarray, what: str, precision: str, weights: Path | None) -> None:
    if not np.isfinite(feats).all():
        # Never cached, never scored: NaN would reach the JSON as "NaN".
        raise WeightsError(
            f"C3D gave NaN/Inf features on {what} (precision {precision}): the weights "
            f"{weights} hold non-finite values or are damaged; nothing was cached"
        )


def _read_table(file: Path, dim: int) -> tuple[ClipTable | None, str]:
    """(table, "") or (None, what is wrong with the file)."""
    try:
        with np.load(file, allow_pickle=False) as data:
            table = ClipTable(data["ticks"], data["feats"], data["int8"])
    # np.load raises whatever its zip/format layers hit (BadZipFile, EOFError
    # for an empty file, zlib errors...): all mean "not a usable entry".
    except Exception as exc:
        return None, f"unreadable: {type(exc).__name__}"
    c = len(table.ticks)
    if not (table.ticks.dtype == np.int64 and table.ticks.ndim == 1
            and table.feats.dtype == np.float32 and table.feats.shape == (c, dim)
            and table.int8.dtype == bool and table.int8.shape == (c,)):
        return None, "wrong shapes or types"
    if c > 1 and not (np.diff(table.ticks) > 0).all():
        return None, "clip starts out of order"
    if not np.isfinite(table.feats).all():
        return None, "NaN or Inf features"
    return table, ""


def _assemble(
    table: ClipTable, rows: np.ndarray, owners: np.ndarray, ticks: np.ndarray, n_segments: int
) -> SegmentFeatures:
    """Segment means of raw clip features, L2-normalised (the request's clips only)."""
    clip_feats = table.feats[rows]
    return SegmentFeatures(
        segments=pool_segments(clip_feats, owners, n_segments),
        clips=l2_normalise(clip_feats).astype(np.float32),
        clip_starts_s=ticks.astype(np.float64) / TICKS_PER_S,
        clip_owner=owners,
    )


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
