"""``auto``'s precision on the CPU: the fastest candidate the self-check vouches for.

On first use per weights file, feature layer and CPU (``cpu_id``), every
precision this CPU can run (fp32; bf16 where native; int8 through OpenVINO
where installed) forwards the same clips of the user's own video. Each
candidate's first clip warms it up (oneDNN and OpenVINO set up their kernels
on the first call), untimed; the others are timed by the wall clock of this
process, the candidates taking turns so that a passing load hits all alike. bf16 and int8 are then
graded against fp32's features of the same clips (``compare``: cosine >=
0.99 on every clip, same top-3 neighbours), and the fastest candidate that
passes is used (fp32 always passes). One verdict file keeps every
candidate's speed and grade; later runs read it and probe nothing.

Building the int8 model (``phdcli.features.int8``) is a separate one-time
cost, paid inside the first probe: it is calibrated on other clips of the
same video than those graded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from phdcli import NOTICE, paths
from phdcli.errors import PhdError
from phdcli.fsutil import atomic_write_text
from phdcli.fsutil.cachefile import RefusedEntry, discard, read_entry_text

if TYPE_CHECKING:
    from phdcli.features.device import Runtime

log = logging.getLogger("phd")

# Clips of the user's video the candidates are timed and graded on: one warm-up,
# then seven, timed (``measure``).
CHECK_CLIPS = 8
MIN_COSINE = 0.99
# Ranking agreement: each check clip's TOP_K nearest other clips (centred
# cosine, as the ranking model compares segments with history GIFs). A clip
# whose k-th and (k+1)-th neighbours are closer than TIE in fp32 has no
# top-k to keep (a static shot, a repeated scene): it is not graded, so
# that a verdict, which is cached, never hangs on a coin flip.
TOP_K = 3
TIE = 0.01
_FORMAT = 1

Forward = Callable[[np.ndarray], np.ndarray]  # preprocessed float32 clips -> (N, D) features


class Engine(Protocol):
    """A network built outside torch (the int8 one): clips -> features."""

    def forward(self, x: np.ndarray) -> np.ndarray: ...


class Candidates(Protocol):
    """What the probe runs (``precision.NetworkCandidates``; tests give fakes)."""

    def clips(self, count: int) -> np.ndarray:
        """``count`` preprocessed clips spread over the user's video."""
        ...

    def torch_forward(self, precision: str) -> Forward:
        """The torch network in fp32 or bf16."""
        ...

    def int8(self, calibration: np.ndarray | None) -> tuple[Engine, str] | None:
        """The int8 network and the sha256 of its weights: the cached one
        (``calibration`` None; None if there is none), or one built now."""
        ...


@dataclass(frozen=True)
class Trial:
    """One candidate on the check clips, graded against fp32 (fp32: 1.0, 0/0)."""

    clips_per_s: float
    min_cosine: float
    topk_agree: int  # graded clips whose top-k neighbours are the same as in fp32
    topk_graded: int  # clips with a clear fp32 top-k (no near-tie at the k-th)

    @property
    def ok(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.topk_agree == self.topk_graded

    def grade(self) -> str:
        return (f"min cosine {self.min_cosine:.4f}, same top-{TOP_K} for "
                f"{self.topk_agree}/{self.topk_graded}")


@dataclass(frozen=True)
class Verdict:
    """The probe's result for one weights file, layer and CPU."""

    trials: dict[str, Trial]
    clips: int
    video: str
    cpu: str
    checked_at: float
    int8_model: str = ""  # sha256 of the int8 weights judged ("": int8 not probed)
    probe_s: float = 0.0  # what the probe cost, the int8 build apart
    build_s: float = 0.0  # the int8 model's build, when this probe paid it

    def covers(self, candidates: Sequence[str]) -> bool:
        return all(name in self.trials for name in candidates)

    def choice(self, candidates: Sequence[str]) -> str:
        """The fastest of ``candidates`` that passed (fp32 always does)."""
        passed = [n for n in candidates if n == "fp32" or self.trials[n].ok]
        return max(passed, key=lambda n: self.trials[n].clips_per_s)

    def explain(self, choice: str, candidates: Sequence[str]) -> str:
        """``6.1x fp32, self-check min cosine 0.9996; bf16 2.8x``: why ``choice``."""
        base = self.trials["fp32"].clips_per_s
        chosen = self.trials[choice]
        head = ("fastest checked" if choice == "fp32" else
                f"{chosen.clips_per_s / base:.1f}x fp32, self-check min cosine "
                f"{chosen.min_cosine:.4f}")
        others = []
        for name in candidates:
            if name in (choice, "fp32"):
                continue
            trial = self.trials[name]
            said = f"{name} {trial.clips_per_s / base:.1f}x"
            others.append(said if trial.ok else
                          f"{said} refused by the self-check ({trial.grade()})")
        return "; ".join([head, *([", ".join(others)] if others else [])])


def verdict_file(weights_sha256: str, layer: str, cpu: str) -> Path:
    """Beside the converted weights (and the int8 model it judged)."""
    name = f"{weights_sha256}.precision-{layer}.{cpu}.json"
    return paths.weights_cache_dir() / "converted" / name


def read_verdict(path: Path) -> Verdict | None:
    """The cached verdict; None if there is none. A damaged one is said, removed,
    and None (the probe runs again)."""
    if not os.path.lexists(path):
        return None
    try:
        return _parse(json.loads(read_entry_text(path)))
    except RefusedEntry as exc:
        why = str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"
    log.warning("warning: the cached precision probe is damaged (%s): probing again", why)
    discard(path)
    return None


def _parse(doc: dict) -> Verdict:
    """A Verdict from its JSON, every field checked: ValueError/KeyError/TypeError if not."""
    if doc["format"] != _FORMAT:
        raise ValueError(f"format {doc['format']!r}")
    trials = {}
    for name, t in doc["trials"].items():
        if name not in ("fp32", "bf16", "int8"):
            raise ValueError(f"unknown precision {name!r}")
        rate, cos = float(t["clips_per_s"]), float(t["min_cosine"])
        agree, graded = t["topk_agree"], t["topk_graded"]
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(cos)
                and type(agree) is int and type(graded) is int and 0 <= agree <= graded):
            raise ValueError(f"{name}: impossible values")
        trials[name] = Trial(rate, cos, agree, graded)
    if "fp32" not in trials:
        raise ValueError("no fp32 trial")
    fields = {k: doc[k] for k in ("clips", "video", "cpu", "checked_at", "int8_model",
                                  "probe_s", "build_s")}
    verdict = Verdict(trials=trials, **fields)
    if not (type(verdict.clips) is int and isinstance(verdict.video, str)
            and isinstance(verdict.int8_model, str) and isinstance(verdict.cpu, str)):
        raise TypeError("fields of the wrong type")
    return verdict


def write_verdict(path: Path, verdict: Verdict) -> None:
    try:
        atomic_write_text(path, json.dumps({"format": _FORMAT, **asdict(verdict)}))
    except OSError as exc:  # a read-only cache: the probe runs again next time
        log.warning("warning: could not cache the precision probe's verdict (%s)", exc)


# ---------------------------------------------------------------- the self-check


def compare(ref: np.ndarray, low: np.ndarray, k: int = TOP_K) -> tuple[float, int, int]:
    """(min cosine of matching rows, rows whose top-k neighbours agree, rows graded).

    Neighbours are ranked by cosine after centring on the clips' mean (what
    the ranking model does with a video's segments and the history): row i's
    k most similar other rows must be the same set in ``low`` as in ``ref``.
    Rows without a clear top-k in ``ref`` (a gap under TIE after the k-th)
    are not graded. A non-finite row counts as cosine -1.
    """
    def unit(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    cosines = np.nan_to_num((unit(ref) * unit(low)).sum(axis=1), nan=-1.0)
    k = max(1, min(k, len(ref) - 2))

    def similarities(a: np.ndarray) -> np.ndarray:
        c = unit(a - a.mean(axis=0))
        sims = np.nan_to_num(c @ c.T, nan=-1.0)
        np.fill_diagonal(sims, -np.inf)
        return sims

    ref_sims, low_sims = similarities(ref), similarities(low)
    agree = graded = 0
    for r, q in zip(ref_sims, low_sims, strict=True):
        order = np.argsort(-r, kind="stable")
        if r[order[k - 1]] - r[order[k]] < TIE:
            continue
        graded += 1
        agree += set(order[:k].tolist()) == set(np.argsort(-q, kind="stable")[:k].tolist())
    return float(cosines.min()), agree, graded


def measure(forwards: dict[str, Forward], clips: np.ndarray, batch_clips: int,
            clock: Callable[[], float] = time.perf_counter,
            ) -> dict[str, tuple[float, np.ndarray]]:
    """Each candidate's clips/s and features on the same ``clips``.

    The first clip warms each candidate up, untimed (its features count). The
    others go in two halves, candidates taking turns, in reverse order in the
    second half: a load that comes and goes on a shared machine falls on all
    of them alike, at no extra forward.
    """
    names = list(forwards)
    rows = {name: [forwards[name](clips[:1])] for name in names}
    spent = dict.fromkeys(names, 0.0)
    middle = 1 + (len(clips) - 1) // 2
    for turn, part in enumerate((clips[1:middle], clips[middle:])):
        for name in names if turn == 0 else names[::-1]:
            start = clock()
            for i in range(0, len(part), batch_clips):
                rows[name].append(forwards[name](part[i:i + batch_clips]))
            spent[name] += clock() - start
    return {name: ((len(clips) - 1) / max(spent[name], 1e-9), np.concatenate(rows[name]))
            for name in names}


def judge(measured: dict[str, tuple[float, np.ndarray]]) -> dict[str, Trial]:
    """Every candidate graded against fp32's features of the same clips."""
    ref = measured["fp32"][1]
    trials = {}
    for name, (rate, feats) in measured.items():
        grade = (1.0, 0, 0) if name == "fp32" else compare(ref, feats)
        trials[name] = Trial(rate, *grade)
    return trials


# ---------------------------------------------------------------- the probe


def settle(runtime: Runtime, video_name: str, weights_sha256: str, layer: str,
           source: Candidates, batch_clips: int,
           clock: Callable[[], float] = time.perf_counter) -> tuple[Engine | None, Runtime]:
    """The precision ``auto`` uses among ``runtime.candidates``: from the cached
    verdict, or probed now. Returns the int8 network when int8 won, and the
    settled runtime (its reason is the line said on stderr)."""
    from phdcli.features.device import cpu_id

    names, cpu = list(runtime.candidates), cpu_id()
    path = verdict_file(weights_sha256, layer, cpu)
    verdict = read_verdict(path)
    if verdict is not None and verdict.covers(names):
        choice = verdict.choice(names)
        how = f"probed on {verdict.video}, cached"
        if choice != "int8":
            return None, _settled(runtime, verdict, choice, how)
        found, failed = _int8(source, None)
        if found is not None and found[1] == verdict.int8_model:
            return found[0], _settled(runtime, verdict, choice, how)
        if failed:  # int8 cannot run here now: the verdict still ranks the others
            names.remove("int8")
            return None, _settled(runtime, verdict, verdict.choice(names), how, failed, names)
        log.info("the int8 model the probe judged is gone: probing again")
    else:
        found, failed = _int8(source, None) if "int8" in names else (None, "")
    return _probe(runtime, names, video_name, path, cpu, source, batch_clips, clock,
                  found, failed)


def _int8(source: Candidates, calibration: np.ndarray | None,
          ) -> tuple[tuple[Engine, str] | None, str]:
    """``source.int8``, or (None, why) when OpenVINO/NNCF fail: said once, and the
    probe goes on without int8."""
    try:
        return source.int8(calibration), ""
    except PhdError:
        raise
    except Exception as exc:  # an OpenVINO/NNCF install that does not work
        log.warning("warning: int8 C3D failed (%s: %s): probing without it",
                    type(exc).__name__, " ".join(str(exc).split())[:200])
        return None, f"int8 failed ({type(exc).__name__})"


def _probe(runtime: Runtime, names: list[str], video_name: str, path: Path, cpu: str,
           source: Candidates, batch_clips: int, clock: Callable[[], float],
           found_int8: tuple[Engine, str] | None, failed: str,
           ) -> tuple[Engine | None, Runtime]:
    from phdcli.features.int8 import CALIBRATION_CLIPS

    started = time.perf_counter()
    build = "int8" in names and found_int8 is None and not failed
    # Calibration and check clips interleaved over the video: never graded on
    # the clips int8 was fit on.
    clips = source.clips(CHECK_CLIPS + (CALIBRATION_CLIPS if build else 0))
    calibrating = np.zeros(len(clips), dtype=bool)
    if build:
        calibrating[np.linspace(0, len(clips) - 1, CALIBRATION_CLIPS).round().astype(int)] = True
    check = clips[~calibrating]
    # Tens of seconds on a first run (README, "The precision probe"): said
    # before it starts, so that the run is not silent meanwhile.
    log.log(NOTICE, "choosing C3D's precision (once): %s%s", "building int8, timing "
            if build else "timing ", ", ".join(names))
    build_s = 0.0
    if build:
        t0 = time.perf_counter()
        found_int8, failed = _int8(source, clips[calibrating])
        build_s = time.perf_counter() - t0
    if found_int8 is None:
        names = [n for n in names if n != "int8"]
    forwards = {n: source.torch_forward(n) for n in names if n != "int8"}
    if found_int8 is not None:
        forwards["int8"] = found_int8[0].forward
    trials = judge(measure(forwards, check, batch_clips, clock))
    verdict = Verdict(trials, len(check), video_name, cpu, time.time(),
                      found_int8[1] if found_int8 is not None else "",
                      round(time.perf_counter() - started - build_s, 2), round(build_s, 2))
    write_verdict(path, verdict)
    log.info("precision probe on %s: %s (%.1f s; int8 build %.1f s)", video_name,
             ", ".join(f"{n} {t.clips_per_s:.2f} clips/s" for n, t in trials.items()),
             verdict.probe_s, build_s)
    choice = verdict.choice(names)
    final = _settled(runtime, verdict, choice, f"probed on {video_name}", failed, names)
    return (found_int8[0] if choice == "int8" and found_int8 is not None else None), final


def _settled(runtime: Runtime, verdict: Verdict, choice: str, how: str, failed: str = "",
             names: Sequence[str] | None = None) -> Runtime:
    from phdcli.features.device import Runtime

    why = verdict.explain(choice, runtime.candidates if names is None else names)
    parts = [why, *([failed] if failed else []), how]
    return Runtime(runtime.device, choice, "; ".join(parts))

