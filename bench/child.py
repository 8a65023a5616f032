"""Run ``phd`` in this process with stage timers, then report time and peak RSS.

``python -m bench.child REPORT.json ARGS...`` is ``python -m phdcli ARGS...``
plus: wrappers (no behaviour change) that time the stages of ``phd suggest``
and, at exit, this process's own peak RSS (``ru_maxrss``; ffmpeg children
that write GIFs are not counted). The wrappers only add a clock read per call.
"""

from __future__ import annotations

import time

T_START = time.time()  # before any import: the parent adds interpreter start-up

import functools  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

_lock = threading.Lock()
TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def _add(key: str, seconds: float) -> None:
    with _lock:
        TIMES[key] += seconds
        COUNTS[key] += 1


def _timed(key: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _add(key, time.perf_counter() - t)

    return wrapper


def _timed_iter(key: str, fn: Any) -> Any:
    """Time each ``next()`` of the generator ``fn`` returns (in whichever thread)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        it = iter(fn(*args, **kwargs))
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                _add(key, time.perf_counter() - t)
                return
            _add(key, time.perf_counter() - t)
            yield item

    return wrapper


COMPUTED: list[dict[str, Any]] = []  # each decode -> C3D pass: video and clip ticks


def _recorded(fn: Any) -> Any:
    """Remember which clips each ``_compute`` call ran (the bench re-times them alone)."""

    @functools.wraps(fn)
    def wrapper(self: Any, video: Any, ticks: Any, *args: Any, **kwargs: Any) -> Any:
        entry = {"video": str(video.path), "ticks": [int(t) for t in ticks]}
        COMPUTED.append(entry)
        out = fn(self, video, ticks, *args, **kwargs)
        entry["precision"] = self.runtime.precision
        return out

    return wrapper


def instrument() -> None:
    import phdcli.features.device
    import phdcli.features.extractor
    import phdcli.features.network
    import phdcli.features.registry
    import phdcli.media.cutmemo
    import phdcli.media.decode
    import phdcli.media.probe
    import phdcli.ranking.model
    import phdcli.suggest.outputs
    import phdcli.suggest.pipeline
    import phdcli.suggest.spans

    # Modules are looked up at call time (phdcli imports lazily), so patching
    # the module attribute is enough.
    phdcli.features.device.resolve_runtime = _timed(
        "runtime", phdcli.features.device.resolve_runtime)
    # The content hash of the video (cache key) and of the weights (backbone id).
    phdcli.features.extractor.cached_sha256 = _timed(
        "hash", phdcli.features.extractor.cached_sha256)
    phdcli.features.registry.cached_sha256 = _timed("hash", phdcli.features.registry.cached_sha256)
    phdcli.media.probe.probe = _timed("probe", phdcli.media.probe.probe)
    phdcli.media.decode.decode_clips = _timed_iter("decode", phdcli.media.decode.decode_clips)
    # A video's GIFs are written side by side: their wall time, not the sum of each.
    phdcli.suggest.outputs._encode_all = _timed("gifs", phdcli.suggest.outputs._encode_all)
    # The one-shot rule around each pick: cut detection, or its memo on a rerun.
    phdcli.suggest.spans.cuts_between = _timed("cuts", phdcli.media.cutmemo.cuts_between)
    net = phdcli.features.network.C3DNetwork
    # load: resolve + hash (cached by then) + load_c3d, which converts the
    # weights to safetensors on first use. Patched here rather than
    # phdcli.features.weights.load_c3d: importing that module imports torch.
    net.load = _timed("c3d_load", net.load)
    net.settle = _timed("int8_prepare", net.settle)
    net.forward = _timed("c3d_forward", net.forward)
    fx = phdcli.features.extractor.FeatureExtractor
    fx._compute = _recorded(_timed("extract", fx._compute))
    fx.segment_features = _timed("features", fx.segment_features)
    sg = phdcli.suggest.pipeline.Suggester
    sg.__init__ = _timed("suggester_init", sg.__init__)
    sg.run = _timed("run", sg.run)
    phdcli.ranking.model.FusedModel.score = _timed("score", phdcli.ranking.model.FusedModel.score)


def main() -> None:
    report, argv = sys.argv[1], sys.argv[2:]
    t_import = time.perf_counter()
    import phdcli.cli

    imported = time.perf_counter() - t_import
    instrumented = "--help" not in argv
    t_instr = time.perf_counter()
    if instrumented:
        instrument()
    instrument_s = time.perf_counter() - t_instr
    code: object = 0
    t_main = time.perf_counter()
    try:
        phdcli.cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    main_s = time.perf_counter() - t_main
    doc = {
        "t_start": T_START,
        "t_end": time.time(),
        "exit_code": code if isinstance(code, int) else (0 if code is None else 1),
        "import_cli_s": imported,
        "main_s": main_s,
        "instrument_s": instrument_s,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "times": dict(TIMES),
        "counts": dict(COUNTS),
        "computed": COMPUTED,
    }
    with open(report, "w") as fh:
        json.dump(doc, fh)
    sys.stdout.flush()
    sys.exit(doc["exit_code"])


if __name__ == "__main__":
    main()
