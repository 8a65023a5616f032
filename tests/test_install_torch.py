"""scripts/install_torch.py (``make install``'s torch step): which index it gives pip,
with or without an NVIDIA GPU, and the one line it says afterwards. No network: the
"CPU index" is a loopback server, or a port where nothing listens."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
from pathlib import Path

from phdcli.doctor.torchbuild import Fixes, Gpu, TorchBuild
from scripts import install_torch
from tests.runphd import serve

SCRIPT = Path(install_torch.__file__)


class _TorchPage(http.server.BaseHTTPRequestHandler):
    """A package index that answers for torch, and remembers what was asked."""

    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _TorchPage.asked.append(self.path)
        code = 200 if self.path == "/torch/" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"<a href='torch-2.13.0+cpu-cp311-none-any.whl'>torch</a>")

    def log_message(self, *args: object) -> None:
        pass


def explain(gpu: str, index: str) -> str:
    env = {**os.environ, "PHD_NVIDIA_GPU": gpu, "PHD_TORCH_CPU_INDEX": index}
    done = subprocess.run([sys.executable, str(SCRIPT), "--explain"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1  # one line
    return done.stdout


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"  # nothing listens there now


def test_with_a_gpu_pip_gets_its_own_sources_and_no_cpu_index() -> None:
    _TorchPage.asked = []
    with serve(_TorchPage) as url:
        out = explain("1", url)
    assert out.startswith("would run: pip install torch==2.13.0  (NVIDIA GPU: PHD_NVIDIA_GPU=1;")
    assert "--extra-index-url" not in out
    assert _TorchPage.asked == []  # the CPU index is not even asked


def test_without_a_gpu_the_cpu_index_that_answers_is_added() -> None:
    _TorchPage.asked = []
    with serve(_TorchPage) as url:
        out = explain("0", url)
    assert out.startswith(f"would run: pip install torch==2.13.0 --extra-index-url {url}  "
                          "(no NVIDIA GPU: PHD_NVIDIA_GPU=0; from PyTorch's CPU index")
    assert _TorchPage.asked == ["/torch/"]


def test_without_a_gpu_an_unreachable_cpu_index_falls_back_to_pips_sources() -> None:
    index = closed_port_url()
    out = explain("0", index)
    assert out.startswith("would run: pip install torch==2.13.0  (no NVIDIA GPU")
    assert f"from pip's own sources: {index} cannot be reached (" in out


def test_an_index_without_torch_counts_as_unreachable() -> None:
    with serve(_TorchPage) as url:
        out = explain("0", url + "/elsewhere")
    assert "--extra-index-url" not in out and "cannot be reached (HTTP 404)" in out


def test_the_line_after_a_cuda_fallback_says_the_gigabytes_and_the_way_back() -> None:
    chosen = install_torch.Plan(Gpu(False, "no /proc/driver/nvidia/gpus, no nvidia-smi"), (),
                                "from pip's own sources: https://x/cpu cannot be reached (DNS)",
                                "https://x/cpu cannot be reached (DNS)")
    build = TorchBuild("2.13.0+cu130", "13.0", ("nvidia-cublas", "triton"), 3_630_000_000)
    line = install_torch.outcome(build, chosen, Fixes("TO-CPU", "TO-CUDA"))
    assert "\n" not in line
    assert line.startswith("torch 2.13.0+cu130 is the CUDA 13.0 build, and this machine has no "
                           "NVIDIA GPU (no /proc/driver/nvidia/gpus, no nvidia-smi): 3.6 GB of "
                           "CUDA libraries (2 packages")
    assert line.endswith("https://x/cpu cannot be reached (DNS); once the CPU index can be "
                         "reached: TO-CPU")


def test_the_line_after_a_cpu_install_names_the_build_and_the_index() -> None:
    chosen = install_torch.Plan(Gpu(False, "PHD_NVIDIA_GPU=0"), ("--extra-index-url", "u"),
                                "from PyTorch's CPU index u")
    line = install_torch.outcome(TorchBuild("2.13.0+cpu", None), chosen)
    assert line == ("torch 2.13.0+cpu, a CPU build (no NVIDIA GPU: PHD_NVIDIA_GPU=0), "
                    "from PyTorch's CPU index u")
