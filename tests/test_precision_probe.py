"""``auto``'s precision probe: the fastest candidate that passes the self-check, cached.

The candidates here are fakes, no network: each precision's features are
fp32's (a fixed projection of the clips) with its own error, and each forward
advances a fake clock by its own seconds per clip, so what the probe times is
known. The real probe (OpenVINO int8, torch fp32) runs in tests/test_int8.py
(heavy).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from phdcli.features import device as device_mod
from phdcli.features import precision_probe as probe
from phdcli.features.device import Runtime, cpu_id, resolve_runtime
from phdcli.features.precision import PrecisionChoice
from tests.conftest import LogLines

SHA, LAYER = "d" * 64, "fc6"
ALL = ("fp32", "bf16", "int8")
AUTO = Runtime("cpu", "bf16", "CPU has AVX512-BF16", candidates=ALL)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeCandidates:
    """``seconds_per_clip`` per precision; ``broken``: precisions whose features are
    another clip's (a precision that breaks the features)."""

    def __init__(self, clock: FakeClock, seconds_per_clip: dict[str, float],
                 broken: tuple[str, ...] = (), int8_model: str = "int8-a",
                 int8_cached: bool = False) -> None:
        self.clock, self.seconds, self.broken = clock, seconds_per_clip, broken
        self.int8_model, self.int8_cached = int8_model, int8_cached
        self.calls: Counter[str] = Counter()
        self.calibration: np.ndarray | None = None
        self.forwarded: list[np.ndarray] = []
        self.projection = np.random.default_rng(1).standard_normal((32, 24))

    def clips(self, count: int) -> np.ndarray:
        self.calls[f"clips {count}"] += 1
        return np.random.default_rng(2).standard_normal((count, 32))

    def _forward(self, precision: str) -> Callable[[np.ndarray], np.ndarray]:
        def forward(x: np.ndarray) -> np.ndarray:
            self.calls[f"forward {precision}"] += len(x)
            self.forwarded.extend(x)
            self.clock.now += self.seconds[precision] * len(x)
            feats = np.maximum(x @ self.projection, 0.0)
            if precision in self.broken:
                feats = np.maximum(-x @ self.projection, 0.0)
            return feats

        return forward

    def torch_forward(self, precision: str) -> Callable[[np.ndarray], np.ndarray]:
        return self._forward(precision)

    def int8(self, calibration: np.ndarray | None) -> tuple[probe.Engine, str] | None:
        if calibration is None:
            self.calls["int8 lookup"] += 1
            if not self.int8_cached:
                return None
        else:
            self.calls["int8 build"] += 1
            self.calibration, self.int8_cached = calibration, True
        return SimpleNamespace(forward=self._forward("int8")), self.int8_model


def settle(source: FakeCandidates, runtime: Runtime = AUTO) -> tuple[object, Runtime]:
    return probe.settle(runtime, "talk.mp4", SHA, LAYER, source, 8, clock=source.clock)


def verdict_path() -> Path:
    return probe.verdict_file(SHA, LAYER, cpu_id())


@pytest.mark.parametrize(("seconds", "chosen", "line"), [
    ({"fp32": 1.0, "bf16": 0.4, "int8": 0.15}, "int8",
     "precision int8 (6.7x fp32, self-check min cosine 1.0000; bf16 2.5x; probed on talk.mp4)"),
    ({"fp32": 1.0, "bf16": 0.25, "int8": 0.5}, "bf16",
     "precision bf16 (4.0x fp32, self-check min cosine 1.0000; int8 2.0x; probed on talk.mp4)"),
    ({"fp32": 1.0, "bf16": 2.0, "int8": 1.25}, "fp32",
     "precision fp32 (fastest checked; bf16 0.5x, int8 0.8x; probed on talk.mp4)"),
])
def test_auto_takes_the_fastest_precision_the_probe_timed(
    phd_home: Path, seconds: dict[str, float], chosen: str, line: str,
) -> None:
    source = FakeCandidates(FakeClock(), seconds)
    engine, final = settle(source)
    assert final.precision == chosen and not final.needs_probe
    assert final.describe() == f"device cpu, {line}"
    assert (engine is not None) == (chosen == "int8")
    # Every candidate ran the same 8 check clips; int8 was built on 8 others, once.
    assert source.calls == {"clips 16": 1, "int8 lookup": 1, "int8 build": 1,
                            "forward fp32": 8, "forward bf16": 8, "forward int8": 8}
    assert source.calibration is not None and len(source.calibration) == 8
    graded = {row.tobytes() for row in source.forwarded}
    assert len(graded) == 8 and not graded & {row.tobytes() for row in source.calibration}
    doc = json.loads(verdict_path().read_text())
    assert {n: round(t["clips_per_s"], 3) for n, t in doc["trials"].items()} == {
        n: round(7 / (7 * s), 3) for n, s in seconds.items()}  # the warm-up clip is untimed
    assert doc["video"] == "talk.mp4" and doc["int8_model"] == "int8-a"


def test_a_faster_precision_that_fails_the_self_check_is_never_chosen(phd_home: Path) -> None:
    source = FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.5, "int8": 0.1},
                            broken=("int8",))
    engine, final = settle(source)
    assert engine is None and final.precision == "bf16"
    assert final.reason.startswith("2.0x fp32, self-check min cosine 1.0000; int8 10.0x "
                                   "refused by the self-check (min cosine ")
    # The refusal is cached: the next run does not take int8 either, and probes nothing.
    again = FakeCandidates(FakeClock(), {})
    assert settle(again)[1].precision == "bf16" and again.calls == {}
    # Nothing passes but fp32: fp32, however slow.
    verdict_path().unlink()
    slow = FakeCandidates(FakeClock(), {"fp32": 9.0, "bf16": 0.5, "int8": 0.1},
                          broken=("bf16", "int8"))
    assert settle(slow)[1].precision == "fp32"


def test_the_cached_verdict_is_used_without_probing_while_it_still_applies(
    phd_home: Path,
) -> None:
    settle(FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.2}))
    # Another run: the int8 network comes from the cache, nothing is decoded or timed.
    again = FakeCandidates(FakeClock(), {}, int8_cached=True)
    engine, final = settle(again)
    assert final.precision == "int8" and engine is not None
    assert final.reason.endswith("probed on talk.mp4, cached")
    assert again.calls == {"int8 lookup": 1}
    # PHD_INT8=0 now (int8 no longer a candidate): the fastest of the rest, still cached.
    floats = FakeCandidates(FakeClock(), {})
    assert settle(floats, Runtime("cpu", "bf16", "", ("fp32", "bf16")))[1].precision == "bf16"
    assert floats.calls == {}
    # The int8 model was rebuilt (not the one judged): probed again, not trusted.
    rebuilt = FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.2},
                             int8_model="int8-b", int8_cached=True)
    assert settle(rebuilt)[1].precision == "int8"
    assert rebuilt.calls["forward int8"] == 8 and rebuilt.calls["int8 build"] == 0
    assert json.loads(verdict_path().read_text())["int8_model"] == "int8-b"
    # A candidate the verdict lacks (OpenVINO installed since): probed again.
    settle(FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4}),
           Runtime("cpu", "bf16", "", ("fp32", "bf16")))
    late = FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.2})
    assert settle(late)[1].precision == "int8" and late.calls["int8 build"] == 1


@pytest.mark.parametrize("damage", [
    b"{not json", b'{"format": 1}', b"",
    b'{"format": 1, "trials": {"fp32": {"clips_per_s": -1, "min_cosine": 1, "topk_agree": 0,'
    b' "topk_graded": 0}}, "clips": 8, "video": "v", "cpu": "c", "checked_at": 0,'
    b' "int8_model": "", "probe_s": 0, "build_s": 0}',
])
def test_a_damaged_verdict_is_probed_again_with_one_warning(
    phd_home: Path, phd_log: LogLines, damage: bytes,
) -> None:
    path = verdict_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damage)
    source = FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.2})
    assert settle(source)[1].precision == "int8"
    assert source.calls["forward fp32"] == 8
    warned = [r.getMessage() for r in phd_log.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "precision probe is damaged" in warned[0], warned
    assert "\n" not in warned[0]
    assert probe.read_verdict(path) is not None  # replaced by a sound one


def test_int8_that_fails_to_build_or_load_is_left_out(
    phd_home: Path, phd_log: LogLines,
) -> None:
    source = FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.1})

    def broken(calibration: np.ndarray | None) -> None:
        if calibration is not None:
            raise RuntimeError("OpenVINO\nexploded")

    source.int8 = broken  # type: ignore[method-assign,assignment]
    engine, final = settle(source)
    assert engine is None and final.precision == "bf16"
    assert "int8 failed (RuntimeError)" in final.reason
    assert [r.getMessage() for r in phd_log.records if r.levelname == "WARNING"] == [
        "warning: int8 C3D failed (RuntimeError: OpenVINO exploded): probing without it"]

    # A verdict that chose int8, and int8 now fails to load: the verdict's next best,
    # with no probe.
    verdict_path().unlink()
    settle(FakeCandidates(FakeClock(), {"fp32": 1.0, "bf16": 0.4, "int8": 0.1}))
    later = FakeCandidates(FakeClock(), {})

    def unloadable(calibration: np.ndarray | None) -> None:
        raise OSError("libopenvino.so: cannot open shared object file")

    later.int8 = unloadable  # type: ignore[method-assign,assignment]
    phd_log.clear()
    engine, final = settle(later)
    assert engine is None and final.precision == "bf16" and later.calls == {}
    assert "int8 failed (OSError)" in final.reason and final.reason.endswith(", cached")
    assert len([r for r in phd_log.records if r.levelname == "WARNING"]) == 1


def test_an_explicit_precision_or_training_features_never_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "int8_available", lambda: True)
    monkeypatch.setattr(device_mod, "int8_installed", lambda: True)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: "AVX512-BF16")
    assert resolve_runtime("cpu").candidates == ALL
    assert resolve_runtime("cpu").describe() == (
        "device cpu, precision auto (CPU has AVX512-BF16; the fastest of fp32, bf16, int8 "
        "that passes the self-check, probed once per weights file)")
    for asked in ("fp32", "bf16", "int8"):
        assert resolve_runtime("cpu", asked).candidates == ()
        assert resolve_runtime("cpu", asked).precision == asked
    assert resolve_runtime("cpu", auto_int8=False) == Runtime("cpu", "bf16",
                                                              "CPU has AVX512-BF16")
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    assert resolve_runtime("cpu").candidates == ("fp32", "int8")
    monkeypatch.setattr(device_mod, "int8_available", lambda: False)  # PHD_INT8=0
    assert resolve_runtime("cpu").candidates == ()  # fp32 alone: nothing to probe
    # --precision fp32 goes straight to the network: the probe is never asked.
    monkeypatch.setattr(probe, "settle", lambda *a, **k: pytest.fail("probed"))
    choice = PrecisionChoice("cpu", "fp32")
    assert not choice.needs_settling
    assert choice.settle(None, None, SHA, None, None, 8) is None  # type: ignore[arg-type]
    assert choice.runtime.precision == "fp32"


def test_no_video_to_probe_on_runs_the_float_precision(
    monkeypatch: pytest.MonkeyPatch, phd_log: LogLines,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "int8_available", lambda: True)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: "AVX512-BF16")
    monkeypatch.setattr(probe, "settle", lambda *a, **k: pytest.fail("probed"))
    choice = PrecisionChoice("cpu", "auto")
    choice._runtime = resolve_runtime("cpu")  # as on an AVX512-BF16 CPU with OpenVINO
    assert choice.settle(None, None, SHA, None, None, 8) is None  # type: ignore[arg-type]
    assert choice.runtime == Runtime(
        "cpu", "bf16", "CPU has AVX512-BF16; no video to probe the precision on")
    assert [r.getMessage() for r in phd_log.records] == [choice.runtime.describe()]
