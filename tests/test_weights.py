from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from phdcli import fsutil, paths
from phdcli.errors import DownloadError, UsageError, WeightsError
from phdcli.features import registry
from phdcli.features.c3d import C3D_PARAM_SHAPES
from phdcli.features.device import Runtime
from phdcli.features.registry import (
    DEFAULT_WEIGHTS,
    REGISTRY,
    WeightsSource,
    fetch,
    resolve_weights_path,
)
from phdcli.features.weights import INPUT_SPECS, backbone_id, load_c3d, load_c3d_state
from phdcli.fsutil import sha256_file
from tests.c3d_files import random_c3d_state, write_mmaction2_pth

# ------------------------------------------------------------ weight files


@pytest.fixture(scope="module")
def files(mmaction2_weights: Path, davidea_weights: Path) -> dict[str, Path]:
    """Full-size RANDOM weights (~312 MB each, seed 0), the session's files: these
    tests only read them (one checks that the source is never touched)."""
    return {"mmaction2": mmaction2_weights, "davidea": davidea_weights}


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry entries here point at the tests' own servers (conftest's guard
    would send them to runphd.NO_MIRROR)."""
    monkeypatch.delenv("PHD_MODEL_MIRROR", raising=False)


def _converted(sha256: str) -> Path:
    return paths.weights_cache_dir() / "converted" / f"{sha256}.safetensors"


def test_registry_entries() -> None:
    assert DEFAULT_WEIGHTS in REGISTRY
    mm = REGISTRY["c3d-sports1m-mmaction2"]
    assert mm.sha256 is not None and mm.sha256.startswith("dcc47ddc")
    assert mm.filename.endswith("-dcc47ddc.pth") and mm.url.endswith(mm.filename)
    assert REGISTRY["c3d-sports1m-davidea"].sha256 is None


def test_both_formats_give_identical_canonical_tensors(
        phd_home: Path, files: dict[str, Path]) -> None:
    mm_state, mm_spec = load_c3d_state(files["mmaction2"])
    dv_state, dv_spec = load_c3d_state(files["davidea"])
    expected = random_c3d_state(seed=0)
    assert list(mm_state) == list(dv_state) == list(C3D_PARAM_SHAPES)  # fc8 dropped
    for name, tensor in expected.items():
        assert torch.equal(mm_state[name], tensor), name
        assert torch.equal(dv_state[name], tensor), name
        assert mm_state[name].dtype == torch.float32
    assert mm_spec == INPUT_SPECS["mmaction2"]
    assert (mm_spec.channel_order, mm_spec.mean) == ("RGB", (104.0, 117.0, 128.0))
    assert (dv_spec.channel_order, dv_spec.mean) == ("BGR", (90.25, 97.66, 101.41))


def test_converts_once_and_never_touches_the_source(
        phd_home: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    source = files["davidea"]
    sha_before, mtime_before = sha256_file(source), source.stat().st_mtime_ns
    first, spec = load_c3d_state(source)
    converted = _converted(sha_before)
    assert converted.is_file()
    converted_mtime = converted.stat().st_mtime_ns

    # Second load: no torch.load of the source and no re-hash of it.
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("source file read again")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(fsutil, "sha256_file", refuse)  # the hash index answers
    second, spec2 = load_c3d_state(source)
    assert spec2 == spec
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert converted.stat().st_mtime_ns == converted_mtime
    assert source.stat().st_mtime_ns == mtime_before
    monkeypatch.undo()
    assert sha256_file(source) == sha_before


def test_converted_file_carries_input_spec(phd_home: Path, files: dict[str, Path]) -> None:
    from safetensors import safe_open

    load_c3d_state(files["davidea"])
    with safe_open(str(_converted(sha256_file(files["davidea"]))), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["channel_order"] == "BGR"
    assert json.loads(meta["mean"]) == [90.25, 97.66, 101.41]
    assert meta["pool5_padding"] == "both" and meta["source_format"] == "davidea"


def test_format_argument(phd_home: Path, files: dict[str, Path]) -> None:
    with pytest.raises(WeightsError, match="mmaction2 file, not davidea"):
        load_c3d_state(files["mmaction2"], format="davidea")
    with pytest.raises(UsageError):
        load_c3d_state(files["mmaction2"], format="caffe")


def test_wrong_shape_is_refused_naming_the_key(phd_home: Path, tmp_path: Path) -> None:
    bad = write_mmaction2_pth(tmp_path / "bad.pth", bad_shape=True)
    with pytest.raises(WeightsError) as err:
        load_c3d_state(bad)
    message = str(err.value)
    assert "'conv3b.conv.weight'" in message
    assert "(256, 128, 3, 3, 3)" in message and "(256, 256, 3, 3, 3)" in message
    assert "\n" not in message
    assert not (paths.weights_cache_dir() / "converted").exists() or not any(
        (paths.weights_cache_dir() / "converted").iterdir())


def test_not_a_torch_file(phd_home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "weights.pth"
    junk.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_c3d_state(junk)


def test_truncated_file(phd_home: Path, files: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    with open(files["mmaction2"], "rb") as fh:
        cut.write_bytes(fh.read(5 << 20))
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_c3d_state(cut)


class _RunsCode:
    """A pickle that would create a file if it were unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_never_run(phd_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1a.conv.weight": _RunsCode(marker)}, evil)
    with pytest.raises(WeightsError):
        load_c3d_state(evil)
    assert not marker.exists()


def test_unknown_and_missing_keys(phd_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"layer1.weight": torch.zeros(2)}, other)
    with pytest.raises(WeightsError, match="not C3D weights"):
        load_c3d_state(other)

    extra = tmp_path / "extra.pth"
    torch.save({"conv1a.conv.weight": torch.zeros(64, 3, 3, 3, 3),
                "conv9.conv.weight": torch.zeros(1)}, extra)
    with pytest.raises(WeightsError, match="unexpected key 'conv9.conv.weight'"):
        load_c3d_state(extra)

    partial = tmp_path / "partial.pth"
    torch.save({"conv1a.conv.weight": torch.zeros(64, 3, 3, 3, 3)}, partial)
    with pytest.raises(WeightsError, match="missing 19 C3D tensor"):
        load_c3d_state(partial)


def test_wrapped_mmaction2_checkpoint(phd_home: Path, files: dict[str, Path],
                                      tmp_path: Path) -> None:
    flat = torch.load(files["mmaction2"], weights_only=True)
    wrapped = {"meta": {"epoch": 45},
               "state_dict": {**{f"backbone.{k}": v for k, v in flat.items()},
                              "cls_head.fc_cls.weight": torch.zeros(101, 4096)}}
    path = tmp_path / "recognizer.pth"
    torch.save(wrapped, path)
    state, spec = load_c3d_state(path)
    assert spec == INPUT_SPECS["mmaction2"]
    assert torch.equal(state["conv3b.weight"], flat["conv3b.conv.weight"])


def test_load_c3d(c3d_home: Path, files: dict[str, Path]) -> None:
    from phdcli.features.c3d import C3D

    loaded = load_c3d(files["mmaction2"], Runtime("cpu", "fp32", "test"))
    sha = sha256_file(files["mmaction2"])
    assert loaded.weights_sha256 == sha
    assert backbone_id(loaded) == f"c3d-sports1m@{sha[:12]}"
    assert loaded.family == "c3d-sports1m"
    assert loaded.input_spec == INPUT_SPECS["mmaction2"]
    model = loaded.model
    assert not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
               for p in model.parameters())
    # The channels_last_3d model computes what a plain one does.
    plain = C3D().eval()  # built the plain way, random init and all
    plain.load_state_dict(random_c3d_state(seed=0))
    x = torch.randn(1, 3, 16, 112, 112) * 50
    with torch.inference_mode():
        got, want = model(x, "pool5"), plain(x, "pool5")
    # Another conv algorithm sums in another order: equal up to float error.
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())


# ------------------------------------------------------------- resolution


def test_resolve_prefers_explicit_then_env_then_cache(
        phd_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="phd model fetch"):
        resolve_weights_path()
    cached = registry.cached_path("c3d-sports1m-davidea")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights_path() == cached  # any registry entry will do
    default = registry.cached_path(DEFAULT_WEIGHTS)
    default.write_bytes(b"x")
    assert resolve_weights_path() == default  # ...but the default comes first
    from_env = tmp_path / "env.pth"
    from_env.write_bytes(b"x")
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(from_env))
    assert resolve_weights_path() == from_env
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert resolve_weights_path(explicit) == explicit
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights_path(tmp_path / "nope.pth")
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match="PHD_C3D_WEIGHTS"):
        resolve_weights_path()


# ---------------------------------------------------------------- download


@dataclass
class _Served:
    payload: bytes
    port: int = 0
    honour_range: bool = True
    cut_after: int | None = None  # send only this many bytes, then hang up
    requests: list[dict[str, str | None]] = field(default_factory=list)

    def source(self, sha256: str | None = "auto", path: str = "/w.pth") -> WeightsSource:
        digest = hashlib.sha256(self.payload).hexdigest() if sha256 == "auto" else sha256
        return WeightsSource(name="test-weights", url=f"http://127.0.0.1:{self.port}{path}",
                             filename="w.pth", format="mmaction2", sha256=digest,
                             size_bytes=len(self.payload) if digest else None)


@pytest.fixture
def server() -> Iterator[_Served]:
    served = _Served(payload=random.Random(0).randbytes(3 << 20))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            served.requests.append({"path": self.path, "range": rng})
            if self.path != "/w.pth":
                self.send_error(404)
                return
            data, start = served.payload, 0
            if rng and served.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if served.cut_after is None else body[:served.cut_after])

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = httpd.server_address[1]
    # A short poll: shutdown() waits up to one poll interval (0.5 s by default, per test).
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()


def _part(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def test_fetch_downloads_verifies_and_caches(phd_home: Path, server: _Served) -> None:
    seen: list[tuple[int, int | None]] = []
    path = fetch(server.source(), progress=lambda done, total: seen.append((done, total)))
    assert path == paths.weights_cache_dir() / "w.pth"
    assert path.read_bytes() == server.payload
    assert not _part(path).exists()
    assert seen[-1] == (len(server.payload), len(server.payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(server.requests) == 1

    assert fetch(server.source()) == path  # cached and verified: no request
    assert len(server.requests) == 1
    fetch(server.source(), force=True)
    assert len(server.requests) == 2


def test_fetch_by_registry_name(phd_home: Path, server: _Served,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "test-weights", server.source())
    assert fetch("test-weights").read_bytes() == server.payload
    with pytest.raises(UsageError, match="unknown weights"):
        fetch("no-such-weights")


def test_fetch_weights_by_url(phd_home: Path, server: _Served,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.source().url
    good = hashlib.sha256(server.payload).hexdigest()
    # The payload is random bytes: the format check is tests/test_autofetch.py's.
    assert registry.fetch_weights(url=url, sha256=good.upper(),
                                  check_format=False).read_bytes() == server.payload
    with pytest.raises(UsageError):
        registry.fetch_weights(url="ftp://example.org/w.pth")
    with pytest.raises(UsageError):
        registry.fetch_weights(sha256=good)
    monkeypatch.setitem(REGISTRY, DEFAULT_WEIGHTS, server.source())
    assert registry.fetch_weights(check_format=False) == registry.cached_path(DEFAULT_WEIGHTS)
    assert len(server.requests) == 1  # same file name, already cached and verified


def test_fetch_wrong_sha256_leaves_nothing(phd_home: Path, server: _Served) -> None:
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(server.source(sha256=wrong))
    actual = hashlib.sha256(server.payload).hexdigest()
    assert wrong in str(err.value) and actual in str(err.value)
    final = paths.weights_cache_dir() / "w.pth"
    assert not final.exists() and not _part(final).exists()


def test_fetch_resumes_a_partial_download(phd_home: Path, server: _Served) -> None:
    final = paths.weights_cache_dir() / "w.pth"
    final.parent.mkdir(parents=True)
    _part(final).write_bytes(server.payload[:1_000_000])
    assert fetch(server.source()).read_bytes() == server.payload
    assert server.requests == [{"path": "/w.pth", "range": "bytes=1000000-"}]


def test_fetch_restarts_when_range_is_ignored(phd_home: Path, server: _Served) -> None:
    server.honour_range = False
    final = paths.weights_cache_dir() / "w.pth"
    final.parent.mkdir(parents=True)
    _part(final).write_bytes(b"stale bytes from another file")
    assert fetch(server.source()).read_bytes() == server.payload
    assert server.requests[0]["range"] is not None


def test_interrupted_download_resumes_next_time(phd_home: Path, server: _Served) -> None:
    server.cut_after = 1_500_000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(server.source())
    final = paths.weights_cache_dir() / "w.pth"
    assert not final.exists()
    assert _part(final).stat().st_size == 1_500_000
    server.cut_after = None
    assert fetch(server.source()).read_bytes() == server.payload
    assert server.requests[-1]["range"] == "bytes=1500000-"


def test_damaged_cache_is_downloaded_again(phd_home: Path, server: _Served) -> None:
    final = paths.weights_cache_dir() / "w.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"\0" * len(server.payload))
    assert fetch(server.source()).read_bytes() == server.payload
    assert len(server.requests) == 1


def test_fetch_without_checksum(phd_home: Path, server: _Served) -> None:
    assert fetch(server.source(sha256=None)).read_bytes() == server.payload


def test_fetch_http_404(phd_home: Path, server: _Served) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.source(path="/missing.pth"))
    assert not (paths.weights_cache_dir() / "w.pth").exists()


def test_fetch_unreachable_host(phd_home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = WeightsSource("gone", f"http://127.0.0.1:{port}/w.pth", "w.pth", "mmaction2",
                           None, None)
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1"):
        fetch(source)


def test_fetch_then_load_without_rehash(phd_home: Path, files: dict[str, Path],
                                        server: _Served,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server.payload = files["mmaction2"].read_bytes()
    monkeypatch.setitem(REGISTRY, DEFAULT_WEIGHTS, server.source())
    path = fetch(DEFAULT_WEIGHTS)
    assert resolve_weights_path() == path
    # fetch hashed while streaming; loading must not hash 300 MB again.
    monkeypatch.setattr(fsutil, "sha256_file", lambda *_: pytest.fail("re-hashed"))
    state, spec = load_c3d_state(path)
    assert spec == INPUT_SPECS["mmaction2"]
    assert _converted(hashlib.sha256(server.payload).hexdigest()).is_file()
    assert os.path.getsize(path) == len(server.payload)


def test_cli_model_fetch_refuses_a_bad_checksum_and_a_file_that_is_not_weights(
    phd_home: Path, server: _Served, capsys: pytest.CaptureFixture[str]
) -> None:
    from phdcli.cli import main

    url = server.source().url
    good = hashlib.sha256(server.payload).hexdigest()

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(["model", "fetch", *args])
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    code, out, err = run("--url", url, "--sha256", "0" * 64)
    assert code == 1 and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not list(paths.weights_cache_dir().glob("w.pth*"))  # nothing half-written

    # The right bytes, but not C3D weights: refused at the format check, not kept.
    code, out, err = run("--url", url, "--sha256", good)
    assert code == 1 and "not a readable PyTorch weights file" in err, err
    assert not list(paths.weights_cache_dir().glob("w.pth*"))
