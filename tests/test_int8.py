"""int8 C3D (OpenVINO + NNCF) and the precision probe's self-check on the user's own video.

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

from phdcli.features import int8, precision_probe
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


def _verdict(weights: Path) -> precision_probe.Trial | None:
    """The cached probe's int8 trial."""
    path = precision_probe.verdict_file(sha256_file(weights), SPEC.layer, cpu_id())
    verdict = precision_probe.read_verdict(path)
    return verdict.trials.get("int8") if verdict is not None else None


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
    """On a CPU without native bf16 (``plain_cpu``): fp32 and int8 are the candidates;
    int8 (OpenVINO) is faster than torch fp32 on any x86 CPU measured (README)."""
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
    assert len(said) == 2, err  # the first run says what it does first, then what it chose
    assert said[0] == "phd: choosing C3D's precision (once): building int8, timing fp32, int8"
    assert said[1].startswith("phd: device cpu, precision int8 (")
    assert "x fp32, self-check min cosine 0.99" in said[1]
    assert said[1].endswith(f"; probed on {video.path.name})")
    verdict = _verdict(mmaction2_weights)
    assert verdict is not None and verdict.ok
    assert verdict.min_cosine >= precision_probe.MIN_COSINE
    assert verdict.topk_agree == verdict.topk_graded >= precision_probe.CHECK_CLIPS // 2
    xml, bin_, manifest = int8.model_files(sha256_file(mmaction2_weights), SPEC.layer)
    assert xml.is_file() and bin_.is_file()
    assert json.loads(manifest.read_text())["sha256"]["bin"] == sha256_file(bin_)

    # Another process: the model and the verdict come from the cache.
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("int8 model built or checked again")

    monkeypatch.setattr(int8, "build", refuse)
    monkeypatch.setattr(precision_probe, "measure", refuse)
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
    assert cosines.min() >= precision_probe.MIN_COSINE
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
    assert " refused by the self-check (min cosine " in ext.runtime.reason
    verdict = _verdict(outlier_weights)
    assert verdict is not None and not verdict.ok
    assert (verdict.min_cosine < precision_probe.MIN_COSINE
            or verdict.topk_agree < verdict.topk_graded)
    said = [r.getMessage() for r in phd_log.records if "precision" in r.getMessage()
            and not r.getMessage().startswith("precision probe on")]  # the info line
    assert said == ["choosing C3D's precision (once): building int8, timing fp32, int8",
                    ext.runtime.describe()]
    assert not _table_int8_flags(ext, video).any()  # every clip went through fp32
    assert np.isfinite(feats.segments).all()

    # The refusal is cached: no new check; --precision int8 still forces it.
    monkeypatch.setattr(precision_probe, "measure", lambda *a, **k: pytest.fail("checked again"))
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
    cos, agree, graded = precision_probe.compare(ref, ref)
    assert cos == pytest.approx(1.0) and agree == graded and graded >= 6
    noisy = ref + 0.001 * rng.standard_normal(ref.shape)
    cos, agree, graded2 = precision_probe.compare(ref, noisy)
    assert cos > 0.999 and agree == graded2 == graded
    swapped = ref.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two clips exchanged: their neighbours move
    cos, agree, graded3 = precision_probe.compare(ref, swapped)
    assert cos < 0.99 and agree < graded3
    same = np.ones((8, 64))  # no ranking at all (a static shot): nothing graded
    assert precision_probe.compare(same, same)[2] == 0


@pytest.mark.heavy
@pytest.mark.parametrize("pool5", ["both", "right"])
def test_the_openvino_graph_computes_what_the_torch_network_does(
    pool5: str, video: VideoInfo,
) -> None:
    """int8.graph builds C3D op by op (no tracing): in fp32 it must be the torch network."""
    import openvino as ov

    from phdcli.features.c3d import C3D
    from phdcli.features.weights import INPUT_SPECS, LoadedC3D

    net = C3D(pool5_padding=pool5)
    net.load_state_dict(random_c3d_state(0))
    loaded = LoadedC3D(net.eval(), INPUT_SPECS["mmaction2"], "0" * 64)
    x = int8.user_clips(video, SPEC, 2, loaded.input_spec)
    for layer in ("pool5", "fc7"):
        with torch.inference_mode():
            ref = net(torch.from_numpy(x), layer=layer).numpy()
        compiled = ov.Core().compile_model(int8.graph(loaded, layer), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled(x)[0]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), (pool5, layer)
