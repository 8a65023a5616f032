"""Property-based fuzzing of the inputs phd reads (Hypothesis).

The bytes of a small real MP4 and a small real GIF are mutated (cut short,
bytes flipped, garbage spliced in) and fed to ``phd suggest --json`` and
``phd history add``. Whatever the bytes: never a traceback or an "internal
error", never past the time limit, stdout is strict JSON, and a failed add
leaves the history byte-identical.

Seeds are fixed (``derandomize``) so CI sees the same cases every run. A
longer local run (README, "Failure behaviour")::

    PHD_FUZZ_EXAMPLES=500 .venv/bin/pytest -m heavy tests/test_fuzz.py

RANDOM C3D weights; the cache is the session's shared one.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runphd import home_with_cache, json_doc

from phdcli.cli import main
from phdcli.fsutil import is_temp
from tests import media

TIME_LIMIT_S = 60.0  # per case, loaded 2-core machine included
DEFAULT_EXAMPLES = 8
HEAVY_EXAMPLES = int(os.environ.get("PHD_FUZZ_EXAMPLES", "200"))


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, bytes]]:
    """1-3 edits: ("cut", at, b""), ("flip", at, xor-bytes), ("splice", at, garbage)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "splice"]))
        at = draw(st.integers(0, size - 1))
        payload = b"" if kind == "cut" else draw(st.binary(min_size=1, max_size=64))
        edits.append((kind, at, payload))
    return edits


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, at, payload in edits:
        at = min(at, max(len(out) - 1, 0))
        if kind == "cut":
            del out[at:]
        elif kind == "flip":
            for i, b in enumerate(payload):
                if at + i < len(out):
                    out[at + i] ^= b or 0xFF
        else:
            out[at:at] = payload
    return bytes(out)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz")
    video = media.lavfi_video(root / "seed.mp4", duration_s=1.5, size="64x48")
    gif = media.gif_from(video, root / "seed.gif", 0.0, 1.0, fps=10, width=48)
    return {"mp4": video.read_bytes(), "gif": gif.read_bytes()}


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path,
              mmaction2_weights: Path) -> Path:
    return home_with_cache(tmp_path_factory.mktemp("fuzz-home"), shared_cache)


class _Limit:
    """A hard stop if a case hangs in C code (dumps every thread and exits)."""

    def __enter__(self) -> float:
        faulthandler.dump_traceback_later(TIME_LIMIT_S * 3, exit=True, file=sys.__stderr__)
        self.started = time.monotonic()
        return self.started

    def __exit__(self, *exc: object) -> None:
        faulthandler.cancel_dump_traceback_later()
        assert time.monotonic() - self.started < TIME_LIMIT_S, "past the time limit"


def _phd(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with _Limit(), pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = int(info.value.code or 0)
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".history.lock"}


def check_suggest(data: bytes, where: Path, capsys: pytest.CaptureFixture[str],
                  weights: Path) -> None:
    video = where / "fuzzed.mp4"
    video.write_bytes(data)
    out = where / "out"
    code, stdout, _ = _phd(["suggest", str(video), "-k", "1", "--json", "--force", "--out",
                            str(out), "--device", "cpu", "--c3d-weights", str(weights)], capsys)
    doc = json_doc(stdout)
    if code == 0:
        for s in doc["results"][0]["suggestions"]:
            assert Path(s["path"]).stat().st_size == s["size_bytes"]
    else:
        assert [e["input"] for e in doc["errors"]] == [str(video)]
    assert not [p for p in out.rglob(".*") if is_temp(p.name)]  # no temp file left


def check_history_add(data: bytes, where: Path, capsys: pytest.CaptureFixture[str],
                      weights: Path) -> None:
    gif = where / "fuzzed.gif"
    gif.write_bytes(data)
    folder = Path(_phd(["history", "path", "--user", "fuzz"], capsys)[1].strip())
    before = _snapshot(folder)
    code, _, _ = _phd(["history", "add", str(gif), "--user", "fuzz", "--device", "cpu",
                       "--c3d-weights", str(weights)], capsys)
    after = _snapshot(folder)
    if code != 0:
        assert after == before  # a failed add changes nothing
    elif after:  # every file in the folder is listed: nothing invisible, nothing missing
        listed = {it["name"] for it in json_doc(after["history.json"].decode())["items"]}
        assert set(after) - {"history.json"} == listed


def _fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _run_fuzz(kind: str, examples: int, seeds: dict[str, bytes], fuzz_home: Path,
              tmp_path: Path, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    monkeypatch.setenv("PHD_HOME", str(fuzz_home))
    seed = seeds[kind]
    check = check_suggest if kind == "mp4" else check_history_add
    counter = iter(range(10**9))

    @_fuzz_settings(examples)
    @given(edits=mutations(len(seed)))
    def case(edits: list[tuple[str, int, bytes]]) -> None:
        where = tmp_path / f"case{next(counter)}"
        where.mkdir()
        check(mutate(seed, edits), where, capsys, weights)

    case()


@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_fuzzed_inputs_fail_cleanly(kind: str, seeds: dict[str, bytes], fuzz_home: Path,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch,
                                    mmaction2_weights: Path) -> None:
    _run_fuzz(kind, DEFAULT_EXAMPLES, seeds, fuzz_home, tmp_path, capsys, monkeypatch,
              mmaction2_weights)


@pytest.mark.heavy
@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_fuzzed_inputs_fail_cleanly_long(kind: str, seeds: dict[str, bytes], fuzz_home: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         mmaction2_weights: Path) -> None:
    _run_fuzz(kind, HEAVY_EXAMPLES, seeds, fuzz_home, tmp_path, capsys, monkeypatch,
              mmaction2_weights)


def test_mutate_applies_each_edit() -> None:
    data = bytes(range(10))
    assert mutate(data, [("cut", 4, b"")]) == bytes(range(4))
    assert mutate(data, [("flip", 0, b"\x01")])[0] == 1
    assert mutate(data, [("splice", 2, b"ab")]) == bytes([0, 1]) + b"ab" + bytes(range(2, 10))
