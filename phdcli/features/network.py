"""C3D for one run: loaded when a clip first needs it, run in the settled precision.

Decoding runs in a thread ahead of the network (``Prefetch``, bounded), so
that loading C3D (and converting its weights on first use) and every forward
pass overlap decoding, and memory stays flat whatever the video's length.
With an int8 network whose model and verdict are cached, the fp32 weights
are never loaded: the input convention comes from the converted file's
header. NaN or Inf features are an error: never cached, never scored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli.errors import PhdError, WeightsError

if TYPE_CHECKING:
    from phdcli.features.c3d_spec import C3DInput
    from phdcli.features.clips import ClipProgress
    from phdcli.features.precision import PrecisionChoice
    from phdcli.features.precision_probe import Engine
    from phdcli.features.registry import Backbone
    from phdcli.features.spec import FeatureSpec
    from phdcli.features.weights import LoadedC3D
    from phdcli.media.probe import VideoInfo


@dataclass
class ExtractorStats:
    """Counters for tests and benchmarks (what ran, not how long it took).

    ``c3d_loads``: fp32/bf16 networks loaded; ``clips_used``: clips the
    requests were built from (cached or computed); a coarse-to-fine ranking
    compares it with what the full spec needs.
    """

    c3d_loads: int = 0
    clips_forwarded: int = 0
    clips_used: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


class C3DNetwork:
    """The network of one extractor: the torch C3D, or the int8 one once settled."""

    def __init__(self, spec: FeatureSpec, backbone: Backbone, precision: PrecisionChoice,
                 batch_clips: int, stats: ExtractorStats) -> None:
        self.spec, self.backbone, self.precision = spec, backbone, precision
        self.batch_clips = batch_clips
        self.stats = stats
        self._net: LoadedC3D | None = None
        self._int8: Engine | None = None
        self._input_spec: C3DInput | None = None
        # The video the precision probe uses (set by ``phd suggest`` to the
        # video at hand, so that a short history GIF computed first is not it).
        self.check_video: VideoInfo | None = None
        # Told the name of a slow step as it starts ("loading C3D"): a CLI spinner.
        self.on_stage: Callable[[str], None] | None = None

    def _stage(self, stage: str) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)

    @property
    def computes_int8(self) -> bool:
        """True once the int8 network runs (rows it makes are marked in the cache)."""
        return self._int8 is not None

    def load(self) -> LoadedC3D:
        """The torch network (fp32 parameters; bf16 through autocast), loaded once."""
        if self._net is None:
            from phdcli.features.weights import load_c3d

            self._net = load_c3d(self.backbone.path, self.precision.runtime)
            if self._net.family != self.spec.family:
                raise WeightsError(
                    f"the C3D weights are a {self._net.family} model, but the ranking model "
                    f"expects {self.spec.family} features"
                )
            self.stats.c3d_loads += 1
        return self._net

    def _input_convention(self) -> C3DInput:
        if self._input_spec is None:
            from phdcli.features.weights import converted_input_spec

            self._input_spec = (self._net.input_spec if self._net is not None else
                                converted_input_spec(self.backbone.sha256)
                                or self.load().input_spec)
        return self._input_spec

    def settle(self, video: VideoInfo | None) -> None:
        """auto's candidates probed (or the forced int8 network set up), once per run."""
        if self.precision.needs_settling:
            self._int8 = self.precision.settle(
                self.check_video or video, self.spec, self.backbone.sha256,
                self._input_convention, self.load, self.batch_clips)
            if self._int8 is not None and self._net is not None:
                # The probe loaded the torch network; int8 won: let it go.
                self._input_convention()
                self._net = None

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (B, 16, 128, 171, 3) -> float32 (B, D) raw features."""
        import torch

        from phdcli.features.c3d import preprocess

        runtime = self.precision.runtime
        with torch.inference_mode(), runtime.autocast():
            if self._int8 is not None:
                x = preprocess(torch.from_numpy(clips), self._input_convention())
                out = torch.from_numpy(self._int8.forward(x.numpy()))
            else:
                net = self.load()
                x = preprocess(torch.from_numpy(clips).to(runtime.device, non_blocking=True),
                               net.input_spec)
                out = net.model(x, layer=self.spec.layer)
        self.stats.clips_forwarded += len(clips)
        return out.float().cpu().numpy()

    def clip_features(
        self, path: Path, starts_s: Sequence[float], progress: ClipProgress | None = None,
        video: VideoInfo | None = None,
    ) -> np.ndarray:
        """(c, D) float32 raw features of the clips starting at ``starts_s`` (ascending)."""
        from phdcli.media.decode import decode_clips
        from phdcli.media.probe import probe

        clips = decode_clips(path, starts_s, self.spec.clip_fps, self.spec.clip_frames)
        rows: list[np.ndarray] = []
        # The decode thread starts first, so that settling the precision and
        # loading C3D overlap decoding.
        with Prefetch(clips, depth=2 * self.batch_clips) as decoded:
            if self.precision.needs_settling:
                self._stage("choosing the precision" if self.precision.runtime.needs_probe
                            else "preparing int8 C3D")
                self.settle(self.check_video or video or probe(path))
            if self._int8 is None and self._net is None:
                self._stage("loading C3D")
                self.load()
            if progress is not None:  # the bar shows from the first clip on
                progress(0, len(starts_s))
            else:
                self._stage("running C3D")
            for batch in batched(iter(decoded), self.batch_clips):
                rows.append(self.forward(np.stack(batch)))
                if progress is not None:
                    progress(sum(len(r) for r in rows), len(starts_s))
        feats = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
        if len(feats) != len(starts_s):
            raise PhdError(f"{Path(path).name}: decoded {len(feats)} of {len(starts_s)} clips")
        self.check_finite(feats, Path(path).name)
        return feats

    def forward_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (B, 16, 128, 171, 3) decoded elsewhere -> float32 (B, D) raw features."""
        if not clips.flags.writeable:  # e.g. zero-copy from Ray's object store
            clips = clips.copy()
        self.settle(None)
        feats = self.forward(clips)
        self.check_finite(feats, "decoded clips")
        return feats

    def check_finite(self, feats: np.ndarray, what: str) -> None:
        if not np.isfinite(feats).all():
            # Never cached, never scored: NaN would reach the JSON as "NaN".
            raise WeightsError(
                f"C3D gave NaN/Inf features on {what} (precision "
                f"{self.precision.runtime.precision}): the weights {self.backbone.path} hold "
                "non-finite values or are damaged; nothing was cached"
            )


def batched(items: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_DONE = object()


class Prefetch:
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

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
