"""The Ray engine when the cluster is not there, not a cluster, or goes away (issue 18, rows 18-19).

Fast checks (default suite) never start Ray: an address of the wrong form
or out of range is a usage error before any work, and an address where
nothing listens fails on a TCP connect. The slow ones (heavy) run the real
``phd`` against a local Ray (``num_cpus=2``, never an outside cluster): a
port where something listens but no GCS answers, the head killed mid-build,
a node that does not start, and signals while phd waits on Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataset_media import ENGINE_ANNOTATIONS, three_videos
from runphd import NO_MIRROR, json_doc, one_error, phd, run_cli

from phdcli import procs
from phdcli.cluster.address import HeadWatch, parse_address
from phdcli.errors import ClusterError, Interrupted, UsageError
from phdcli.training.dataset import BuildConfig
from tests.conftest import ConvertedWeights

ANNOTATIONS = ENGINE_ANNOTATIONS
IDS = ("vidA", "vidB", "vidC")


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory, mmaction2_weights: Path,
         converted_weights: ConvertedWeights) -> dict[str, Path]:
    """The annotations, an empty videos folder, a home with C3D converted: enough to reach
    the engine (the fast tests never get further)."""
    root = tmp_path_factory.mktemp("ray-faults")
    (root / "videos").mkdir()
    (root / "phd2.csv").write_text(ANNOTATIONS)
    home = converted_weights.seed(root / "home", mmaction2_weights)
    return {"root": root, "home": home, "weights": mmaction2_weights}


@pytest.fixture(scope="module")
def world(plan: dict[str, Path]) -> dict[str, Path]:
    """``plan`` with its three cut videos on disk (no download)."""
    root = plan["root"]
    for name, body in three_videos(root / "src").items():
        (root / "videos" / name.strip("/")).write_bytes(body)
    return plan


def _build_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["dataset", "build", str(world["root"] / "phd2.csv"), "--videos",
            str(world["root"] / "videos"), "-o", str(out), "--device", "cpu", "--json", *extra]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- fast: no Ray started -------------------------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:port",
                                     "127.0.0.1", "http://127.0.0.1:6379", "a b:1", ""])
def test_ray_address_of_a_wrong_form_or_port_is_refused_before_any_work(
        address: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--address"):
        BuildConfig(annotations=tmp_path / "a.csv", videos_dir=tmp_path, out=tmp_path / "o",
                    engine="ray", address=address)


def test_ray_address_out_of_range_is_one_usage_line_and_writes_nothing(
        plan: dict[str, Path], phd_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    line = one_error(run_cli(_build_args(plan, out, "--engine", "ray", "--address",
                                         "127.0.0.1:99999"), capsys), code=2)
    assert "127.0.0.1:99999" in line and "1 to 65535" in line
    assert not out.exists()


def test_ray_address_forms_it_joins() -> None:
    assert (parse_address("10.0.0.5:6379").host, parse_address("10.0.0.5:6379").port) == (
        "10.0.0.5", 6379)
    assert parse_address("[::1]:6379").endpoint == "[::1]:6379"
    assert parse_address("ray://head").port == 10001
    assert parse_address("auto").host is None


def test_ray_address_where_nothing_listens_fails_in_seconds_naming_it(
        plan: dict[str, Path], tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    result = phd(*_build_args(plan, tmp_path / "out", "--engine", "ray", "--address", address),
                 home=plan["home"], weights=plan["weights"], timeout=60)
    took_s = time.monotonic() - started
    line = one_error(result)
    assert line.startswith(f"phd: error: cannot reach the Ray cluster at {address} ")
    assert took_s < 10, took_s
    assert result.stderr.strip().splitlines() == [line]  # Ray never started: none of its lines
    summary = json_doc(result.stdout)  # --json still says what was done: nothing
    assert (summary["videos_done"], summary["videos_total"]) == (0, 3)


def test_a_head_silent_too_long_is_a_lost_cluster_naming_it() -> None:
    watch = HeadWatch(parse_address(f"127.0.0.1:{_free_port()}"), "the Ray cluster at X:1",
                      lost_after=0.0)
    watch.last_check = 0.0  # due now
    with pytest.raises(ClusterError, match=r"^lost the Ray cluster at X:1: its head has not"):
        watch.check()


def test_ray_failures_of_the_cluster_are_phd_errors_and_a_signal_stays_a_signal() -> None:
    ray = pytest.importorskip("ray")
    from phdcli.cluster.session import cluster_faults

    startup = "The current node timed out during startup. This could happen because..."
    with pytest.raises(ClusterError, match="^cannot start Ray on this machine: Exception: The"), \
            cluster_faults(ray, "cannot start Ray on this machine", startup=True):
        raise Exception(startup)  # what ray.init raises when its node does not come up
    for exc in (ray.exceptions.LocalRayletDiedError(), ConnectionError("gcs gone"),
                ray.exceptions.GetTimeoutError("slow")):
        with pytest.raises(ClusterError, match="^lost the Ray cluster at h:1: "), \
                cluster_faults(ray, "lost the Ray cluster at h:1"):
            raise exc
    with pytest.raises(KeyError), cluster_faults(ray, "lost"):  # not the cluster's
        raise KeyError("x")
    # Our handler's raise, as Ray's C++ wait hands it back:
    with pytest.raises(Interrupted), cluster_faults(ray, "lost"):
        raise SystemError("CoreWorker.wait returned a result with an exception set"
                          ) from Interrupted(15)


def test_a_library_that_turns_sigterm_into_sys_exit_still_ends_phd_as_sigterm() -> None:
    """ray.init installs ``sys.exit(15)`` for SIGTERM: under keep_handlers that reads as our
    Interrupted (the usual line, 143), and our handlers are back afterwards."""
    try:
        with procs.handle_signals():
            with pytest.raises(Interrupted) as info, procs.keep_handlers():
                signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            assert info.value.exit_code == 143
            with procs.keep_handlers():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        with procs.handle_signals():  # a fresh start: later tests may start children
            pass


# -- heavy: the real phd on a local Ray -------------------------------------------
# phd as installed, its Ray held to 2 CPUs (the CLI gives it the machine's).
PHD_ON_2_CPUS = """
import functools
import phdcli.training.engines.ray as engine
engine.RayEngine = functools.partial(engine.RayEngine, num_cpus=2)
from phdcli.cli import main
main()
"""


def _start(world: dict[str, Path], args: list[str], **env: str) -> subprocess.Popen[str]:
    full_env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(world["home"]), "OMP_NUM_THREADS": "1",
                "PHD_MODEL_MIRROR": NO_MIRROR, "PHD_C3D_WEIGHTS": str(world["weights"]),
                "PYTHONPATH": os.pathsep.join(sys.path), **env}
    return subprocess.Popen([sys.executable, "-c", PHD_ON_2_CPUS, *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a shell job


def _family(pid: int) -> dict[int, str]:
    """Descendants of ``pid`` and their command names (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError), \
                    open(f"/proc/{entry}/stat") as fh:
                parents.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as fh:
                    found[child] = fh.read().split(b"\0")[0].decode(errors="replace")
                todo.append(child)
    return found


def _end_all(pids: Iterator[int] | list[int]) -> None:
    """What Ray leaves when its head is killed (its agents wait 60 s): ended by the test."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _phd_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("phd:")]


def _wait_for_shard(proc: subprocess.Popen[str], out: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not list(out.glob("store/*/shards/*/*.safetensors")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no video finished"
        time.sleep(0.05)


@pytest.mark.heavy
def test_ray_head_killed_mid_build_ends_with_one_error_and_the_summary_then_resumes(
        world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(world, _build_args(world, out, "--engine", "ray"))
    _wait_for_shard(proc, out)
    time.sleep(2)  # the driver's loop collects that video (it waits on Ray 1 s at a time)
    family = _family(proc.pid)
    head = [pid for pid, cmd in family.items() if cmd.endswith(("/gcs_server", "/raylet"))]
    assert len(head) == 2, family
    _end_all(head)
    killed = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        _end_all(list(family))
    assert proc.returncode == 1, stderr
    assert time.monotonic() - killed < 45  # before Ray ends the process on its own (60 s)
    lines = _phd_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(
        "phd: error: lost the Ray instance on this machine (GCS "), stderr
    summary = json_doc(stdout)
    done = {p.stem for p in out.glob("store/*/shards/*/*.safetensors")}
    # A shard written as the head died may not have reached the driver: never counted twice.
    assert 1 <= summary["videos_done"] <= len(done) and summary["videos_failed"] == 0
    assert not list(out.glob("store/*/failed/*"))  # the lost cluster is no video's fault
    rerun = phd(*_build_args(world, out), home=world["home"], weights=world["weights"])
    assert rerun.returncode == 0, rerun.stderr
    again = json_doc(rerun.stdout)
    assert (again["videos_skipped"], again["videos_done"]) == (len(done), 3 - len(done))


@pytest.mark.heavy
def test_ray_node_that_does_not_start_is_a_phd_error(world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The raylet's registration is held past Ray's 30 s start-up wait (Ray's own test knob)."""
    proc = _start(world, _build_args(world, tmp_path / "out", "--engine", "ray"),
                  RAY_testing_asio_delay_us="NodeInfoGcsService.grpc_server.RegisterNode="
                                            "40000000:40000000")
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        _end_all(list(_family(proc.pid)))
    assert proc.returncode == 1, stderr
    assert _phd_lines(stderr) == [
        "phd: error: cannot start Ray on this machine: Exception: The current node timed out "
        "during startup. This could happen because some of the raylet failed to startup or the "
        "GCS has become overloaded."]
    assert json_doc(stdout)["videos_done"] == 0


@contextlib.contextmanager
def not_a_gcs() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port where something accepts connections and never answers (on every address: Ray
    connects to this machine's own address for 127.0.0.1)."""
    server = socket.create_server(("0.0.0.0", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join()
        for sock in [*accepted, server]:
            sock.close()


@pytest.mark.heavy
def test_ray_address_that_is_not_a_cluster_fails_within_30_s(world: dict[str, Path],
                                                             tmp_path: Path) -> None:
    with not_a_gcs() as (port, _):
        started = time.monotonic()
        result = phd(*_build_args(world, tmp_path / "out", "--engine", "ray", "--address",
                                  f"127.0.0.1:{port}"), home=world["home"],
                     weights=world["weights"], timeout=120)
        took_s = time.monotonic() - started
    assert took_s < 30, took_s
    assert _phd_lines(result.stderr)[0].startswith(
        f"phd: error: cannot reach the Ray cluster at 127.0.0.1:{port}: ")
    assert len(_phd_lines(result.stderr)) == 1 and result.returncode == 1


@pytest.mark.heavy
def test_sigterm_while_joining_a_silent_cluster_ends_as_sigterm(world: dict[str, Path],
                                                                tmp_path: Path) -> None:
    with not_a_gcs() as (port, accepted):
        proc = _start(world, _build_args(world, tmp_path / "out", "--engine", "ray",
                                         "--address", f"127.0.0.1:{port}"))
        deadline = time.monotonic() + 60
        while len(accepted) < 2:  # phd's own check, then Ray's connect: Ray is waiting now
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert _phd_lines(stderr) == ["phd: interrupted (SIGTERM)"]


@pytest.mark.heavy
@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "phd: interrupted"),
    (signal.SIGTERM, 143, "phd: interrupted (SIGTERM)"),
])
def test_a_signal_during_a_ray_build_ends_with_the_usual_line(
        sig: signal.Signals, code: int, said: str, world: dict[str, Path],
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(world, _build_args(world, out, "--engine", "ray"))
    _wait_for_shard(proc, out)  # the driver is in its ray.wait loop
    family = _family(proc.pid)
    os.killpg(proc.pid, sig)  # the whole group, as a terminal does
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        _end_all(list(family))
    assert proc.returncode == code, stderr
    assert _phd_lines(stderr) == [said]
