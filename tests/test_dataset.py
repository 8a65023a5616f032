"""phdcli.training: labels and spans, the store, then a whole build -> train -> model file run.

The end-to-end test uses generated videos served over loopback HTTP (real
yt-dlp, generic extractor) and RANDOM C3D weights (tests/c3d_files.py): it
proves the plumbing (downloads and retries, the store, resume, failures,
file formats), not that the features or the model mean anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dataset_media import ANNOTATIONS, VideoServer, three_videos
from runphd import run_cli

from phdcli.errors import UsageError, WeightsError
from phdcli.features.spec import FeatureSpec
from phdcli.ranking.model import check_compatible, load_model, save_model
from phdcli.training.annotations import Gif, User, UserVideo, load_annotations
from phdcli.training.dataset import BuildConfig, build_dataset, load_dataset
from phdcli.training.download import (
    ARCHIVE,
    PermanentDownloadError,
    archived_ids,
    fetch_with_retries,
    find_video,
)
from phdcli.training.jobs import plan_jobs
from phdcli.training.labels import (
    AMBIGUOUS,
    NEGATIVE,
    POSITIVE,
    history_spans,
    history_videos,
    merge_spans,
    segment_labels,
)
from phdcli.training.store import FeatureStore, Shard, StoreKey, safe_name
from phdcli.training.train import evaluate_dataset, train_content

# One clip per segment: C3D costs ~1 s a clip on a 2-core CPU.
SPEC = FeatureSpec(clips_per_segment=1)


# -- pure parts -------------------------------------------------------------------
def test_merge_spans_unions_overlaps_and_touching() -> None:
    spans = np.array([[5.0, 7.0], [0.0, 2.0], [1.0, 3.0], [3.0, 4.0], [9.0, 9.0]])
    assert merge_spans(spans).tolist() == [[0.0, 4.0], [5.0, 7.0]]
    assert merge_spans(np.zeros((0, 2))).shape == (0, 2)


def test_segment_labels_rule() -> None:
    bounds = np.array([[0, 5], [5, 10], [10, 15], [15, 30], [30, 35], [35, 40]], dtype=float)
    gifs = np.array([
        [5.5, 9.0],    # 70% of [5, 10]: positive
        [14.0, 17.0],  # 1/5 of [10, 15], 2/15 of [15, 30] and 1/3 of the GIF in each...
        [20.0, 23.0],  # ... but all of this GIF lies in [15, 30]: positive
        [34.0, 36.0],  # half of it in [30, 35], half in [35, 40]: both ambiguous
    ])
    labels = segment_labels(bounds, gifs)
    assert labels.tolist() == [NEGATIVE, POSITIVE, AMBIGUOUS, POSITIVE, AMBIGUOUS, AMBIGUOUS]
    assert segment_labels(bounds, np.zeros((0, 2))).tolist() == [NEGATIVE] * 6


def test_history_spans_clip_to_the_file_and_drop_gifs_past_its_end() -> None:
    video = UserVideo("v", 60.0, [Gif(2.0, 3.0), Gif(4.0, 2.0), Gif(9.0, 5.0), Gif(30.0, 3.0)])
    assert history_spans(video, duration_s=10.0).tolist() == [[2.0, 6.0], [9.0, 10.0]]


def test_history_is_every_video_unless_capped() -> None:
    history = [UserVideo(f"v{i}", 10.0, [Gif(0, 1)]) for i in range(25)]
    user = User("u", UserVideo("last", 10.0), history)
    assert [v.youtube_id for v in history_videos(user)] == [f"v{i}" for i in range(25)]
    assert [v.youtube_id for v in history_videos(user, 20)] == [f"v{i}" for i in range(20)]
    # The cap decides which videos a build fetches at all.
    assert [j.youtube_id for j in plan_jobs([user], 2)] == ["last", "v0", "v1"]
    assert len(plan_jobs([user])) == 26


def test_plan_asks_each_video_once_for_every_user_who_needs_it(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(ANNOTATIONS)
    jobs = {j.youtube_id: j for j in plan_jobs(load_annotations(tmp_path / "a.csv"))}
    assert list(jobs) == ["vidA", "vidB", "gone2", "vidC", "gone1"]
    assert jobs["vidA"].segments and not jobs["vidC"].segments
    # vidA: history of users 103 and 104; vidC: user 101's two overlapping GIFs are one span.
    assert jobs["vidA"].spans(15.0).tolist() == [[1.0, 3.0], [6.0, 8.0]]
    assert jobs["vidC"].spans(10.0).tolist() == [[0.0, 2.0], [2.0, 6.0]]
    assert jobs["vidC"].spans(5.0).tolist() == [[0.0, 2.0], [2.0, 5.0]]  # clipped to the file


def test_file_names(tmp_path: Path) -> None:
    assert safe_name("13000") == "13000"
    odd = safe_name("a/../b c")
    assert "/" not in odd and odd != safe_name("a/../b_c")
    (tmp_path / "abc.mp4.part").write_bytes(b"x")
    assert find_video(tmp_path, "abc") is None
    (tmp_path / "abc.webm").write_bytes(b"x")
    assert find_video(tmp_path, "abc") == tmp_path / "abc.webm"
    (tmp_path / ARCHIVE).write_text("youtube abc\ngeneric def\n\n")
    assert archived_ids(tmp_path / ARCHIVE) == {"abc", "def"}


# -- the store --------------------------------------------------------------------
def _shard(youtube_id: str = "vid", dim: int = 8, seed: int = 0) -> Shard:
    rng = np.random.default_rng(seed)
    shard = Shard(youtube_id, 15.0, info={"clips": 5})
    for kind, n in (("fixed", 3), ("shots", 2), ("spans", 1)):
        shard.rows[kind] = rng.standard_normal((n, dim)).astype(np.float16)
        shard.bounds[kind] = np.arange(2 * n, dtype=float).reshape(n, 2)
    return shard


def test_shards_round_trip_and_damaged_ones_are_never_read_as_done(tmp_path: Path) -> None:
    key = StoreKey(SPEC, "ab" * 32)
    store = FeatureStore(tmp_path, key).open()
    path = store.write(_shard())
    back = store.read("vid")
    assert back is not None and back.has_segments() and back.duration_s == 15.0
    assert np.array_equal(back.rows["fixed"], _shard().rows["fixed"])
    assert back.rows["fixed"].dtype == np.float16
    header = store.header("vid")
    assert header is not None and header.segments and header.spans == {(0.0, 1.0)}
    good = path.read_bytes()

    path.write_bytes(good[:-100])  # half-written (a copy cut short, not our rename)
    assert store.header("vid") is None and store.read("vid") is None
    assert not path.exists() and list(path.parent.glob("vid.safetensors.bad-*"))
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF  # same size, one byte wrong: only the sha256 can tell
    path.write_bytes(bytes(flipped))
    assert store.header("vid") is not None and store.read("vid") is None

    # Another spec or other weights: another folder; a shard copied across is not trusted.
    other = FeatureStore(tmp_path, StoreKey(SPEC, "cd" * 32)).open()
    assert other.dir != store.dir
    other.shard_path("vid").parent.mkdir(parents=True, exist_ok=True)
    other.shard_path("vid").write_bytes(good)
    assert other.header("vid") is None and other.read("vid") is None


def test_failures_are_recorded_with_their_reason_and_cleared_by_success(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, StoreKey(SPEC, "ab" * 32)).open()
    store.record_failure("vid", "fetch", "HTTP Error 404:\n Not Found", 3)
    store.record_failure("vid", "fetch", "HTTP Error 404: Not Found", 2)
    record = store.failure("vid")
    assert record is not None and record["attempts"] == 5
    assert record["reason"] == "HTTP Error 404: Not Found" and record["stage"] == "fetch"
    store.write(_shard())
    assert store.failure("vid") is None


def test_archived_but_deleted_video_is_not_fetched_again(tmp_path: Path) -> None:
    (tmp_path / ARCHIVE).write_text("generic vidB\n")
    with pytest.raises(PermanentDownloadError, match="deleted since"):
        fetch_with_retries("vidB", tmp_path, "http://127.0.0.1:9/{id}.mp4", backoff_s=0)
    with pytest.raises(PermanentDownloadError, match="not a YouTube video id"):
        fetch_with_retries("../x", tmp_path, "http://127.0.0.1:9/{id}.mp4", backoff_s=0)


# -- end to end -------------------------------------------------------------------
@pytest.fixture
def video_server(tmp_path: Path) -> Iterator[VideoServer]:
    srv = VideoServer(three_videos(tmp_path / "src"))
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def c3d_weights(mmaction2_weights: Path) -> Path:
    """The session's RANDOM mmaction2-format weights (written once for all tests)."""
    return mmaction2_weights


def build_config(tmp_path: Path, weights: Path, template: str, **kw: object) -> BuildConfig:
    annotations = tmp_path / "phd2.csv"
    annotations.write_text(ANNOTATIONS)
    base = {"annotations": annotations, "videos_dir": tmp_path / "videos",
            "out": tmp_path / "dataset", "c3d_weights": weights, "device": "cpu", "spec": SPEC,
            "download": True, "url_template": template, "download_attempts": 2,
            "backoff_s": 0.0}
    return BuildConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_build_resume_train_end_to_end(
    tmp_path: Path, c3d_home: Path, video_server: VideoServer, c3d_weights: Path
) -> None:
    cfg = build_config(tmp_path, c3d_weights, video_server.template)
    videos, out = cfg.videos_dir, cfg.out
    first = build_dataset(cfg)

    assert (first.n_users, first.n_users_built, first.n_users_skipped) == (4, 3, 1)
    assert (first.videos_total, first.videos_done, first.videos_skipped) == (5, 3, 0)
    assert first.videos_failed == 2 and first.n_downloaded == 3
    assert [(f["youtube_id"], f["stage"]) for f in first.failures] == [("gone1", "fetch"),
                                                                      ("gone2", "fetch")]
    assert all("HTTP Error 404" in f["reason"] for f in first.failures)
    assert video_server.requests["/gone1.mp4"] == 2  # retried once, then recorded
    assert first.history_spans_missing == 1  # user 102's GIF on gone1
    # vidA: 3 fixed segments = its 3 shots (clips shared) + 2 history spans; vidB: 3 + 1;
    # vidC: 2 spans (user 101's overlapping GIFs are one).
    assert first.clips_forwarded == 11
    assert first.hours_done == pytest.approx(40.0 / 3600, abs=1e-3)
    assert sorted(p.name for p in videos.iterdir()) == [ARCHIVE, "vidA.mp4", "vidB.mp4",
                                                         "vidC.mp4"]
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["status"] == "complete" and manifest["features"] == SPEC.to_dict()
    assert manifest["backbone"].startswith("c3d-sports1m@")
    assert manifest["counts"]["n_users_built"] == 3 and len(manifest["failures"]) == 2
    store_manifest = json.loads((first.store / "manifest.json").read_text())
    assert store_manifest["summary"]["failures"] == first.failures

    data = load_dataset(out)
    by_id = {s.user_id: s for s in data.samples}
    assert sorted(by_id) == ["101", "102", "103"]
    u101 = by_id["101"]
    assert u101.bounds_s.tolist() == [[0, 5], [5, 10], [10, 15]]
    assert u101.labels.tolist() == [NEGATIVE, POSITIVE, NEGATIVE]
    assert u101.test_bounds_s is not None and u101.test_bounds_s.tolist() == [[0, 5], [5, 10],
                                                                              [10, 15]]
    # vidB's GIF and the union of the two overlapping GIFs on vidC.
    assert u101.history.shape == (2, 4096) and u101.segments.shape == (3, 4096)
    assert np.allclose(np.linalg.norm(u101.history, axis=1), 1.0, atol=2e-3)  # fp16 rows
    assert by_id["102"].history.shape == (1, 4096)  # gone1 is missing

    # A re-run computes nothing and fetches no video again; failed videos are retried.
    requests_before = dict(video_server.requests)
    again = build_dataset(cfg)
    assert (again.videos_done, again.videos_skipped, again.clips_forwarded) == (0, 3, 0)
    assert again.videos_failed == 2 and again.n_downloaded == 0
    for name in ("/vidA.mp4", "/vidB.mp4", "/vidC.mp4"):
        assert video_server.requests[name] == requests_before[name]
    assert video_server.requests["/gone1.mp4"] == 4
    skip = build_dataset(build_config(tmp_path, c3d_weights, video_server.template,
                                      retry_failed=False))
    assert skip.videos_failed == 2 and video_server.requests["/gone1.mp4"] == 4

    # A damaged shard is not done: only that video is computed again.
    store = FeatureStore(out / "store", StoreKey(SPEC, data.backbone_sha256))
    shard = store.shard_path("vidC")
    shard.write_bytes(shard.read_bytes()[:-10])
    redo = build_dataset(cfg)
    assert (redo.videos_done, redo.videos_skipped, redo.clips_forwarded) == (1, 2, 2)

    # Another dataset over the same store: nothing to compute, even with vidB deleted.
    (videos / "vidB.mp4").unlink()
    other = build_dataset(build_config(tmp_path, c3d_weights, video_server.template,
                                       out=tmp_path / "dataset2", store=out / "store"))
    assert (other.videos_done, other.clips_forwarded, other.n_users_built) == (0, 0, 3)
    with pytest.raises(UsageError, match="another feature spec"):
        build_dataset(build_config(tmp_path, c3d_weights, video_server.template,
                                   spec=FeatureSpec(clips_per_segment=2)))

    model_path = tmp_path / "model.safetensors"
    summary = train_content(out, model_path, seed=0, epochs=2)
    assert (summary.n_train, summary.n_val) == (2, 1)
    model = load_model(model_path)
    prov = model.provenance
    assert model.backbone_sha256 == data.backbone_sha256 == manifest["backbone_sha256"]
    assert prov["backbone"] == manifest["backbone"] and prov["layer"] == "fc6"
    assert prov["k"] == 20 and prov["seed"] == 0 and prov["epochs"] == 2
    assert prov["training_data"]["annotations"] == "phd2.csv"
    assert set(prov["validation"]["fused"]) >= {"map", "nmsd", "recall5"}
    assert model.spec == SPEC and model.fnn is not None
    assert model.prior is not None  # fitted on the training users' annotations
    check_compatible(model, SPEC, backbone_sha256=data.backbone_sha256)
    with pytest.raises(WeightsError, match="fc6"):
        check_compatible(model, FeatureSpec(clips_per_segment=1, layer="pool5"))
    with pytest.raises(WeightsError, match="sampled"):
        check_compatible(model, FeatureSpec(clips_per_segment=2))
    assert np.isfinite(evaluate_dataset(out, model_path)["map"])
    # The backbone check: a model trained on other weights' features is refused.
    model.backbone_sha256 = "f" * 64
    save_model(model, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="trained on features of C3D weights ffffffffffff"):
        evaluate_dataset(out, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="C3D weights"):
        train_content(out, tmp_path / "x.safetensors", epochs=1,
                      base_model=tmp_path / "other.safetensors")
    scores = model.score(u101.test_segments, u101.history, u101.test_bounds_s[:, 0],
                         u101.test_bounds_s[:, 1], u101.duration_s)
    assert np.isfinite(scores.total).all()


def cheap_build_args(tmp_path: Path) -> list[str]:
    """``phd dataset build`` with no video on disk and --download off: every video fails
    before C3D (never loaded, so a placeholder weights file does), in well under a second."""
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"placeholder: never loaded, only hashed")
    annotations = tmp_path / "phd2.csv"
    annotations.write_text(ANNOTATIONS)
    return ["dataset", "build", str(annotations), "--videos", str(tmp_path / "videos"),
            "-o", str(tmp_path / "ds"), "--c3d-weights", str(weights), "--json"]


def test_dataset_build_cli_reports_failures_as_json_and_exits_1(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No video is on disk and --download is off: every video fails with its reason."""
    from phdcli.cli import main

    args = cheap_build_args(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--max-history-videos", "1"])
    assert exit_info.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    # The cap keeps each user's most recent history video: gone1 is not needed any more.
    assert doc["videos_total"] == 4 and doc["videos_failed"] == 4 and doc["videos_done"] == 0
    assert (doc["n_users_built"], doc["n_users_skipped"], doc["clips_forwarded"]) == (0, 4, 0)
    assert all("--download fetches it" in f["reason"] for f in doc["failures"])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--engine", "spark"])
    assert exit_info.value.code == 2
    assert "phd: error: --engine: expected local or ray, got 'spark'" in capsys.readouterr().err
    # Checked once, before any work: no output folder is made.
    code, _, err = run_cli([*args, "-o", str(tmp_path / "new"), "--address", "ray://x:1"], capsys)
    assert code == 2 and "phd: error: --address needs --engine ray" in err
    assert not (tmp_path / "new").exists()


def test_engines_by_name() -> None:
    from phdcli.training.engines import get_engine
    from phdcli.training.engines.local import LocalEngine

    assert isinstance(get_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        get_engine("spark")  # the user's typo is BuildConfig's to report (above)


def test_no_retry_failed_skips_what_the_store_recorded_as_failed(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vidA fails (not on disk); then a broken vidA.mp4 appears. --no-retry-failed
    reports the recorded failure without trying the video; without it, vidA is tried
    again and now fails where the file is read."""
    args = cheap_build_args(tmp_path)

    def vid_a(extra: list[str]) -> dict[str, str]:
        code, out, _ = run_cli([*args, *extra], capsys)
        assert code == 1
        return next(f for f in json.loads(out)["failures"] if f["youtube_id"] == "vidA")

    assert vid_a([])["stage"] == "fetch"
    (tmp_path / "videos" / "vidA.mp4").write_bytes(b"not a video")
    skipped = vid_a(["--no-retry-failed"])
    assert skipped["stage"] == "fetch" and "--download fetches it" in skipped["reason"]
    assert vid_a([])["stage"] == "probe"


def test_a_build_removes_the_half_written_pack_a_killed_build_left(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phdcli import fsutil

    args = cheap_build_args(tmp_path)
    out = tmp_path / "ds"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid runs no more (reused within this test: vanishingly unlikely)
    # A temp folder named as a PackWriter of that pid names it.
    mine = fsutil.make_temp_dir(out, "samples")
    fsutil.forget_temp(mine)
    left = mine.rename(out / mine.name.replace(f".phd{os.getpid()}-", f".phd{dead.pid}-"))
    (left / "segments.f16").write_bytes(b"\0" * 4096)
    for _ in range(2):  # the second build also swaps out the first one's pack
        code, _, _ = run_cli(args, capsys)
        assert code == 1  # every video failed: nothing to do with the temps
        assert sorted(p.name for p in out.iterdir()) == [".build.lock", "annotations.csv",
                                                         "dataset.json", "samples", "store"]


def test_training_features_are_never_int8(
    tmp_path: Path, c3d_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store holds float features every later model trains on: an explicit
    int8 is refused, and ``auto`` stays float even where suggest would use int8."""
    from phdcli.features import device as device_mod
    from phdcli.training.jobs import BuildContext
    from phdcli.training.store import StoreKey

    with pytest.raises(UsageError, match="int8"):
        build_config(tmp_path, c3d_weights, "http://127.0.0.1:9/{id}.mp4", precision="int8")
    monkeypatch.setattr(device_mod, "int8_available", lambda: True)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    assert "int8" in device_mod.resolve_runtime("cpu").candidates  # what suggest would try
    cfg = build_config(tmp_path, c3d_weights, "http://127.0.0.1:9/{id}.mp4")
    ctx = BuildContext(store_root=tmp_path / "store", key=StoreKey(SPEC, "0" * 64),
                       videos_dir=cfg.videos_dir, c3d_weights=c3d_weights, device="cpu")
    runtime = ctx.extractor().runtime
    assert runtime.precision == "fp32" and "int8" not in runtime.candidates
