"""int8 C3D (OpenVINO + NNCF) and its self-check on the user's own video.

Real quantization and real forward passes on real footage. The weights are
RANDOM (He-initialised, the tests say so), and for the refusal a copy
crafted to quantize badly: conv1a gets one output channel 1000x larger than
the rest, which conv2a barely reads (its weights on that channel / 1000).
fp32 features hardly change, but one scale for all of conv2a's input
channels (per-tensor activations) leaves the other 63 channels almost no
levels in int8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from phdcli.features import int8
from phdcli.features.clips import plan_clips
from phdcli.features.device import cpu_id
from phdcli.features.extractor import FeatureExtractor
from phdcli.features.spec import FeatureSpec
from phdcli.fsutil import sha256_file
from phdcli.media.probe import VideoInfo, probe
from phdcli.media.segments import Segment, fixed_segments
from tests import media
from tests.c3d_files import random_c3d_state
from tests.conftest import ConvertedWeights, LogLines

pytest.importorskip("openvino")
pytest.importorskip("nncf")

SPEC = FeatureSpec()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> VideoInfo:
    root = tmp_path_factory.mktemp("int8")
    return probe(media.concat_real_footage(root / "real.mp4", ["bikes.mp4", "bigbuckbunny.mp4"]))


@pytest.fixture(scope="module")
def outlier_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = random_c3d_state(seed=0)
    state["conv1a.weight"][0] *= 1000.0
    state["conv1a.bias"][0] = 1000.0
    state["conv2a.weight"][:, 0] /= 1000.0
    flat = {(f"{k.rsplit('.', 1)[0]}.conv.{k.rsplit('.', 1)[1]}" if k.startswith("conv") else k): v
            for k, v in state.items()}
    path = tmp_path_factory.mktemp("outlier") / "outlier.pth"
    torch.save(flat, path)
    return path


def _verdict(weights: Path) -> int8.Verdict | None:
    return int8.read_verdict(int8.verdict_file(sha256_file(weights), SPEC.layer, cpu_id()))


def _table_int8_flags(ext: FeatureExtractor, video: VideoInfo,
                      segments: list[Segment] | None = None) -> np.ndarray:
    """The cached clips' int8 flags (only those ``segments`` read, when given)."""
    table = ext.cache.load(ext.cache_key(video.path))
    assert table is not None
    if segments is None:
        return table.int8
    return table.int8[table.rows(plan_clips(ext.spec, video.duration_s, segments)[1], True)]


# Each builds an int8 model (NNCF) and runs fp32 references: minutes on 2 cores.
@pytest.mark.heavy
def test_self_check_accepts_random_weights_caches_the_verdict_and_fp32_wins(
    int8_home: Path, plain_cpu: None, mmaction2_weights: Path, video: VideoInfo,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    converted_weights: ConvertedWeights, one_gif_history: Path,
) -> None:
    """On a CPU without native bf16 (``plain_cpu``: on one with it, auto runs bf16)."""
    from phdcli.cli import main

    converted_weights.seed(int8_home, mmaction2_weights)  # int8 is the subject, not conversion

    # A history: C3D runs (a cold start with the bundled model needs none).
    args = ["suggest", str(video.path), "-k", "2", "--dry-run", "--json", "--device", "cpu",
            "--c3d-weights", str(mmaction2_weights), "--history", str(one_gif_history),
            "--exhaustive", "--min-gap", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert len(json.loads(out)["results"][0]["suggestions"]) == 2  # NNCF's bars kept off stdout
    said = [line for line in err.splitlines() if "precision" in line]
    assert len(said) == 1, err
    assert said[0].startswith("phd: device cpu, precision int8 (int8 self-check passed")
    assert f"on {video.path.name})" in said[0]
    verdict = _verdict(mmaction2_weights)
    assert verdict is not None and verdict.ok
    assert verdict.min_cosine >= int8.MIN_COSINE
    assert verdict.topk_agree == verdict.topk_graded >= verdict.clips // 2
    xml, bin_, manifest = int8.model_files(sha256_file(mmaction2_weights), SPEC.layer)
    assert xml.is_file() and bin_.is_file()
    assert json.loads(manifest.read_text())["sha256"]["bin"] == sha256_file(bin_)

    # Another process: the model and the verdict come from the cache.
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("int8 model built or checked again")

    monkeypatch.setattr(int8, "build", refuse)
    monkeypatch.setattr(int8, "compare", refuse)
    # Nor are the 312 MB of fp32 weights loaded: the input convention comes
    # from the converted file's header.
    monkeypatch.setattr("phdcli.features.weights.load_c3d", refuse)
    ext = FeatureExtractor(SPEC, mmaction2_weights, "cpu", "auto")
    segments = fixed_segments(video.duration_s, 2.0)  # clips not in the cache yet
    feats = ext.segment_features(video, segments)
    assert ext.runtime.precision == "int8" and "cached" in ext.runtime.reason
    assert np.isfinite(feats.segments).all() and ext.stats.clips_forwarded > 0
    assert ext.stats.c3d_loads == 0
    assert _table_int8_flags(ext, video, segments).all()
    monkeypatch.undo()
    monkeypatch.setenv("PHD_HOME", str(int8_home))

    # --precision fp32 always wins: int8 rows are not used, fp32 replaces them.
    fp32 = FeatureExtractor(SPEC, mmaction2_weights, "cpu", "fp32")
    ref = fp32.segment_features(video, segments)
    assert fp32.runtime.precision == "fp32" and fp32.stats.clips_forwarded > 0
    assert not _table_int8_flags(fp32, video, segments).any()
    cosines = (ref.segments * feats.segments).sum(axis=1)
    assert cosines.min() >= int8.MIN_COSINE
    # Through the CLI too: the first run's int8 clips are computed again in fp32.
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--precision", "fp32"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    assert "phd: device cpu, precision fp32 (fp32 requested" in err
    assert not _table_int8_flags(fp32, video).any()


@pytest.mark.heavy
def test_self_check_refuses_weights_that_quantize_badly(
    int8_home: Path, plain_cpu: None, outlier_weights: Path, video: VideoInfo,
    phd_log: LogLines, monkeypatch: pytest.MonkeyPatch,
) -> None:
    segments = fixed_segments(video.duration_s, 5.0)
    ext = FeatureExtractor(SPEC, outlier_weights, "cpu", "auto")
    feats = ext.segment_features(video, segments)
    assert ext.runtime.precision == "fp32"
    assert "int8 refused by the self-check" in ext.runtime.reason
    verdict = _verdict(outlier_weights)
    assert verdict is not None and not verdict.ok
    assert verdict.min_cosine < int8.MIN_COSINE or verdict.topk_agree < verdict.topk_graded
    said = [r.getMessage() for r in phd_log.records if "precision" in r.getMessage()]
    assert said == [ext.runtime.describe()]
    assert not _table_int8_flags(ext, video).any()  # every clip went through fp32
    assert np.isfinite(feats.segments).all()

    # The refusal is cached: no new check; --precision int8 still forces it.
    monkeypatch.setattr(int8, "compare", lambda *a, **k: pytest.fail("checked again"))
    again = FeatureExtractor(SPEC, outlier_weights, "cpu", "auto")
    again.segment_features(video, fixed_segments(video.duration_s, 3.0))
    assert again.runtime.precision == "fp32" and "cached" in again.runtime.reason
    phd_log.clear()
    forced = FeatureExtractor(SPEC, outlier_weights, "cpu", "int8")
    forced.segment_features(video, fixed_segments(video.duration_s, 4.0))
    assert forced.runtime.precision == "int8"
    assert any("forced although the self-check refused" in r.getMessage()
               for r in phd_log.records)


def test_compare_counts_cosine_and_neighbours() -> None:
    rng = np.random.default_rng(0)
    ref = np.abs(rng.standard_normal((8, 64)))
    cos, agree, graded = int8.compare(ref, ref)
    assert cos == pytest.approx(1.0) and agree == graded and graded >= 6
    noisy = ref + 0.001 * rng.standard_normal(ref.shape)
    cos, agree, graded2 = int8.compare(ref, noisy)
    assert cos > 0.999 and agree == graded2 == graded
    swapped = ref.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two clips exchanged: their neighbours move
    cos, agree, graded3 = int8.compare(ref, swapped)
    assert cos < 0.99 and agree < graded3
    same = np.ones((8, 64))  # no ranking at all (a static shot): nothing graded
    assert int8.compare(same, same)[2] == 0
