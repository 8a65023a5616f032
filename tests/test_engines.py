"""The local and Ray engines: the same store from the same videos, and the faults Ray survives.

Ray runs on a local cluster the tests start themselves (``ray.init(num_cpus=2)``),
never an outside one. Videos are generated, served over loopback to real
yt-dlp, and C3D has RANDOM weights (tests/c3d_files.py): these tests prove
the engines' plumbing, not what the features mean.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dataset_media import ENGINE_ANNOTATIONS, VideoServer, three_videos
from runphd import descendants, killing_the_first

from phdcli.features.spec import FeatureSpec
from phdcli.training.dataset import BuildConfig, DatasetSummary, build_dataset
from phdcli.training.engines.local import LocalEngine
from phdcli.training.store import FeatureStore, StoreKey
from tests.conftest import ConvertedWeights

ray = pytest.importorskip("ray")

SPEC = FeatureSpec(clips_per_segment=1)
# vidA: 3 shots = its 3 fixed segments (3 clips) + user 202's GIF (1); vidC: 2 + 1; vidB: 3 + 1.
ANNOTATIONS = ENGINE_ANNOTATIONS
IDS = ["vidA", "vidC", "vidB"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path,
          converted_weights: ConvertedWeights) -> Iterator[dict[str, object]]:
    """Videos downloaded once by a local build (the reference store), and a Ray cluster.

    PHD_HOME is set before the cluster starts, so Ray's workers keep their
    caches (converted weights) under tmp too.
    """
    root = tmp_path_factory.mktemp("engines")
    # The weights come converted (not the subject here); features are computed afresh.
    converted_weights.seed(root / "phd-home", mmaction2_weights)
    server = VideoServer(three_videos(root / "src"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHD_HOME", str(root / "phd-home"))
        (root / "phd2.csv").write_text(ANNOTATIONS)
        cfg = BuildConfig(annotations=root / "phd2.csv", videos_dir=root / "videos",
                          out=root / "local", c3d_weights=mmaction2_weights, device="cpu",
                          spec=SPEC, download=True, url_template=server.template)
        local = build_dataset(cfg, engine=LocalEngine())
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PHD_HOME": str(root / "phd-home")}})
        try:
            yield {"root": root, "cfg": cfg, "local": local, "weights": mmaction2_weights}
        finally:
            ray.shutdown()
            server.close()


def _store(summary: DatasetSummary, weights_sha: str) -> FeatureStore:
    return FeatureStore(summary.store.parent, StoreKey(SPEC, weights_sha))


def assert_same_stores(a: FeatureStore, b: FeatureStore, ids: list[str]) -> float:
    """Same segments and spans in both, features within fp16 noise; returns the max |diff|."""
    worst = 0.0
    for youtube_id in ids:
        sa, sb = a.read(youtube_id), b.read(youtube_id)
        assert sa is not None and sb is not None, youtube_id
        assert sorted(sa.rows) == sorted(sb.rows)
        for kind in sa.rows:
            assert np.array_equal(sa.bounds[kind], sb.bounds[kind])
            diff = np.abs(sa.rows[kind].astype(np.float32) - sb.rows[kind].astype(np.float32))
            worst = max(worst, float(diff.max()))
    assert worst <= 1e-3
    return worst


def _ray_config(world: dict[str, object], out: str) -> BuildConfig:
    cfg = world["cfg"]
    assert isinstance(cfg, BuildConfig)
    return BuildConfig(**{**cfg.__dict__, "out": Path(str(world["root"])) / out,
                          "download": False, "engine": "ray"})


# Heavy (about 16 s, most of it a local Ray cluster starting): the default suite
# keeps Ray's fast failure tests (tests/test_robust_ray.py) under the 4-minute budget.
@pytest.mark.heavy
def test_local_and_ray_engines_build_the_same_store(world: dict[str, object]) -> None:
    local = world["local"]
    assert isinstance(local, DatasetSummary)
    assert (local.videos_done, local.videos_failed, local.clips_forwarded) == (3, 0, 11)
    on_ray = build_dataset(_ray_config(world, "ray"))
    assert on_ray.engine == "ray"
    assert (on_ray.videos_done, on_ray.videos_failed, on_ray.clips_forwarded) == (3, 0, 11)
    assert (on_ray.n_users_built, on_ray.n_users_skipped) == (3, 0)
    from phdcli.fsutil import sha256_file

    sha = sha256_file(Path(str(world["weights"])))
    worst = assert_same_stores(_store(local, sha), _store(on_ray, sha), IDS)
    print(f"max |local - ray| over all features: {worst:.2e}")


@pytest.mark.heavy
def test_ray_build_survives_a_killed_worker(world: dict[str, object]) -> None:
    """The feature worker is SIGKILLed while it forwards a chunk: Ray restarts it, the call
    is retried, and every video ends in the store once, the same as the local build."""
    with killing_the_first("ray::FeatureWorker.forward") as killed:
        summary = build_dataset(_ray_config(world, "ray-killed"))
    assert killed, "no worker was caught mid-forward"
    assert (summary.videos_done, summary.videos_failed, summary.failures) == (3, 0, [])
    shards = sorted(p.name for p in summary.store.glob("shards/*/*"))
    assert shards == sorted(f"{i}.safetensors" for i in IDS)  # once each, no temp left
    from phdcli.fsutil import sha256_file

    sha = sha256_file(Path(str(world["weights"])))
    local = world["local"]
    assert isinstance(local, DatasetSummary)
    assert_same_stores(_store(local, sha), _store(summary, sha), IDS)


DRIVER = """
import json, sys
from pathlib import Path
from phdcli.features.spec import FeatureSpec
from phdcli.training.dataset import BuildConfig, build_dataset
from phdcli.training.engines.ray import RayEngine
cfg = BuildConfig(annotations=Path(sys.argv[1]), videos_dir=Path(sys.argv[2]),
                  out=Path(sys.argv[3]), c3d_weights=Path(sys.argv[4]), device="cpu",
                  spec=FeatureSpec(clips_per_segment=1))
summary = build_dataset(cfg, engine=RayEngine(num_cpus=2))
print(json.dumps(summary.to_dict()))
"""


@pytest.mark.heavy
def test_ray_driver_killed_then_rerun_forwards_only_unfinished(world: dict[str, object]
                                                                ) -> None:
    root = Path(str(world["root"]))
    cfg = world["cfg"]
    assert isinstance(cfg, BuildConfig)
    out = root / "ray-driver"
    args = [sys.executable, "-c", DRIVER, str(cfg.annotations), str(cfg.videos_dir), str(out),
            str(world["weights"])]
    env = {**os.environ, "PHD_HOME": str(root / "phd-home")}
    driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    shards = out / "store"
    deadline = time.monotonic() + 300
    while not list(shards.glob("*/shards/*/*.safetensors")) and time.monotonic() < deadline:
        assert driver.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    family = descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(3)  # Ray's own processes share the driver's fate; end any that did not
    for pid in descendants(driver.pid) | family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done_before = {p.stem for p in shards.glob("*/shards/*/*.safetensors")}
    assert done_before and done_before < set(IDS)

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600,
                           check=True)
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    local = world["local"]
    assert isinstance(local, DatasetSummary)
    from phdcli.fsutil import sha256_file

    sha = sha256_file(Path(str(world["weights"])))
    reference = _store(local, sha)
    unfinished = set(IDS) - done_before
    expected_clips = sum(reference.read(i).info["clips"] for i in unfinished)  # type: ignore
    assert summary["videos_skipped"] == len(done_before)
    assert summary["videos_done"] == len(unfinished) and summary["videos_failed"] == 0
    assert summary["clips_forwarded"] == expected_clips
    assert_same_stores(reference, FeatureStore(Path(summary["store"]).parent,
                                               StoreKey(SPEC, sha)), IDS)
