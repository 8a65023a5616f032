"""phd as a citizen of the shell: URLs, batches, stdin, JSON, config layering.

Random C3D weights throughout (the tests say so); a loopback HTTP server
stands in for the web, and yt-dlp's generic extractor downloads from it.
Homes share the session's cache (converted weights, features) unless a test
counts C3D loads or downloads; real processes run where the test is about
the process (stdin, a terminal, stdout as a pipe), the rest run in-process
with ``capfd``, which still sees what any child writes to the file descriptors.
"""

from __future__ import annotations

import http.server
import json
import os
import pty
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runphd import home_with_cache, run_cli

from phdcli.media.probe import probe
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import suggest_batch
from tests import media

SUGGESTION_KEYS = {"rank", "start", "end", "segment", "score", "path", "size_bytes"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    a = media.lavfi_video(root / "alpha.mp4", duration_s=11.0, size="160x120", source="testsrc2")
    # 6 s: two segments, so two GIFs, and fewer clips for the batch test's fresh cache.
    b = media.lavfi_video(root / "beta.mp4", duration_s=6.0, size="160x120", source="testsrc")
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    return {"a": a, "b": b, "broken": broken, "root": root}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(videos: dict[str, Path]) -> Iterator[str]:
    handler = lambda *a, **kw: _Handler(*a, directory=str(videos["root"]), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def phd(*args: str, home: Path, weights: Path, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # PHD_INT8=0: a fresh home would build and check int8 C3D first (tests/test_int8.py).
    full_env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(home), "PHD_C3D_WEIGHTS": str(weights),
                "PHD_INT8": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "phdcli", *args], input=stdin,
                          capture_output=True, text=True, env=full_env, timeout=600)


@pytest.fixture
def shared_home(tmp_path: Path, shared_cache: Path, mmaction2_weights: Path,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home on the session's shared cache, with the weights in the environment."""
    home = home_with_cache(tmp_path, shared_cache)
    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    return home


def test_a_url_is_downloaded_once_and_jsonl_lists_its_gifs(
    server: str, videos: dict[str, Path], tmp_path: Path, shared_cache: Path,
    mmaction2_weights: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its own downloads folder, so that the requests it causes are counted here.
    home = home_with_cache(tmp_path, shared_cache, private=("downloads",))
    out = tmp_path / "out"
    url = f"{server}/alpha.mp4"
    before = len([p for p in _Handler.requests if p.endswith("alpha.mp4")])
    first = phd("suggest", url, "-k", "2", "--min-gap", "0", "--out", str(out), "--jsonl",
                "--device", "cpu", home=home,
                weights=mmaction2_weights)  # a real process: stdout is a pipe
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [doc["rank"] for doc in lines] == [1, 2]
    for doc in lines:
        assert set(doc) == SUGGESTION_KEYS | {"input", "type"} and doc["input"] == url
        assert doc["type"] == "pick"
        assert Path(doc["path"]).parent == out and probe(Path(doc["path"])).duration_s > 4
    fetched = [p for p in _Handler.requests if p.endswith("alpha.mp4")]
    assert len(fetched) > before  # this run downloaded it

    monkeypatch.setenv("PHD_HOME", str(home))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    code, stdout, err = run_cli(["suggest", url, "-k", "2", "--min-gap", "0", "--out", str(out),
                                 "--jsonl", "--force", "--device", "cpu"], capfd)
    assert code == 0, err
    assert [json.loads(line)["path"] for line in stdout.splitlines()] == [
        doc["path"] for doc in lines]
    assert [p for p in _Handler.requests if p.endswith("alpha.mp4")] == fetched  # no download

    for bad in (f"{server}/missing.mp4", "http://127.0.0.1:9/v.mp4"):
        code, stdout, err = run_cli(["suggest", bad, "--out", str(out), "--device", "cpu"],
                                    capfd)
        assert code == 1 and stdout == ""
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and bad in errors[0] and "Traceback" not in err


def test_hostile_title_cannot_leave_out(
    server: str, videos: dict[str, Path], tmp_path: Path, shared_home: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (videos["root"] / "..%2F..%2Fescape.mp4").write_bytes(videos["a"].read_bytes())
    out = tmp_path / "deep" / "out"
    code, stdout, err = run_cli(["suggest", f"{server}/..%252F..%252Fescape.mp4", "-k", "1",
                                 "--out", str(out), "--json", "--device", "cpu"], capfd)
    assert code == 0, err
    path = Path(json.loads(stdout)["results"][0]["suggestions"][0]["path"])
    assert path.parent == out and path.exists()
    assert sorted(p.name for p in tmp_path.rglob("*.gif")) == [path.name]


def test_three_inputs_on_stdin_one_corrupt(
    videos: dict[str, Path], tmp_path: Path, c3d_home: Path, mmaction2_weights: Path,
    one_gif_history: Path,
) -> None:
    # In-process, to read the batch's load counters (not timings). A cache of its
    # own (converted weights only): C3D must load here (a history to compare
    # with), and only once for two videos.
    config = SuggestConfig(k=2, out_dir=tmp_path / "out", c3d_weights=mmaction2_weights,
                           device="cpu", history_dir=one_gif_history, min_gap_s=0)
    inputs = [str(videos["a"]), str(videos["broken"]), str(videos["b"])]
    batch = suggest_batch(inputs, config)
    assert [r.input for r in batch.results] == [inputs[0], inputs[2]]
    assert [f.input for f in batch.failures] == [inputs[1]]
    assert batch.stats.model_loads == 1 and batch.stats.c3d_loads == 1
    assert batch.stats.clips_forwarded > 0
    assert len(list((tmp_path / "out").glob("*.gif"))) == 4

    # The same through the CLI, inputs on stdin: exit 1, one error line.
    result = phd("suggest", "-", "-k", "2", "--min-gap", "0", "--out", str(tmp_path / "cli"),
                 "--json", "--device", "cpu", home=c3d_home, weights=mmaction2_weights,
                 stdin="\n".join(inputs) + "\n")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert [r["input"] for r in doc["results"]] == [inputs[0], inputs[2]]
    assert [e["input"] for e in doc["errors"]] == [inputs[1]]
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1


def test_json_schema_and_clean_stdout_on_a_terminal(
    videos: dict[str, Path], tmp_path: Path, shared_home: Path, mmaction2_weights: Path
) -> None:
    """With a pty as stdout and stderr, stdout still holds only the JSON."""
    args = [sys.executable, "-m", "phdcli", "suggest", str(videos["a"]), "-k", "2", "--json",
            "--explain", "--out", str(tmp_path / "o"), "--device", "cpu"]
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(shared_home), "PHD_INT8": "0",
           "PHD_C3D_WEIGHTS": str(mmaction2_weights), "TERM": "xterm", "COLUMNS": "120"}
    out_master, out_slave = pty.openpty()
    err_master, err_slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=out_slave, stderr=err_slave, env=env)
    os.close(out_slave)
    os.close(err_slave)
    chunks: dict[int, bytes] = {out_master: b"", err_master: b""}
    open_fds = [out_master, err_master]
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [], 600)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                chunks[fd] += data
            else:
                open_fds.remove(fd)
    assert proc.wait(timeout=60) == 0, chunks[err_master].decode()
    doc = json.loads(chunks[out_master].decode())  # nothing else on stdout
    assert set(doc) == {"version", "results", "errors"} and doc["version"] == 1
    result = doc["results"][0]
    assert set(result) == {"input", "video", "duration", "segments", "ranked_by",
                           "suggestions"}
    for s in result["suggestions"]:
        assert set(s) == SUGGESTION_KEYS | {"explain"}
        assert set(s["explain"]) == {"content_fnn", "svm_d", "temporal_prior",
                                     "nearest_history_gif", "similarity"}
        assert s["start"] < s["end"] and isinstance(s["score"], float)


def test_config_precedence_flag_env_file_default(
    videos: dict[str, Path], shared_home: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def count(*extra: str, env: dict[str, str] | None = None) -> int:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            code, stdout, err = run_cli(["suggest", str(videos["a"]), "--dry-run", "--json",
                                         "--device", "cpu", "--min-gap", "0", *extra], capfd)
        assert code == 0, err
        return len(json.loads(stdout)["results"][0]["suggestions"])

    config = shared_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    assert count() == 3  # default k=5, but the 11 s video has only 3 segments
    config.write_text("[suggest]\nk = 1\n")
    assert count() == 1  # file over default
    assert count(env={"PHD_K": "2"}) == 2  # env over file
    config.write_text("[suggest]\nk = 2\n")
    assert count("-k", "1", env={"PHD_K": "3"}) == 1  # flag over env
    monkeypatch.setenv("PHD_K", "2")
    code, stdout, _ = run_cli(["config", "--json"], capfd)
    assert code == 0
    rows = {row["setting"]: row for row in json.loads(stdout)["settings"]}
    assert rows["k"]["from"] == "env PHD_K" and rows["fps"]["from"] == "default"
    monkeypatch.delenv("PHD_K")
    config.write_text("[suggest]\nnot_a_setting = 1\n")
    code, _, err = run_cli(["config"], capfd)
    assert code == 2 and "not_a_setting" in err


def test_name_templates_render_and_cannot_escape(
    videos: dict[str, Path], tmp_path: Path, shared_home: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "named"
    code, stdout, err = run_cli(["suggest", str(videos["a"]), "-k", "1", "--out", str(out),
                                 "--device", "cpu", "--name",
                                 "{stem}-best-{rank:02d}-{start:.0f}s", "--format", "webp",
                                 "--json"], capfd)
    assert code == 0, err
    path = Path(json.loads(stdout)["results"][0]["suggestions"][0]["path"])
    assert path.parent == out and path.name.startswith("alpha-best-01-") and path.suffix == ".webp"
    for template in ("../{stem}", "/tmp/{stem}", "{stem}/x", "{nope}", "same-for-all"):
        code, _, err = run_cli(["suggest", str(videos["a"]), "--out", str(out), "--name",
                                template], capfd)
        assert code == 2, (template, err)
        assert "Traceback" not in err
    # Nothing escaped, nothing added but the record of what phd wrote there.
    assert sorted(p.name for p in out.iterdir()) == [".phd", path.name]
