from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phdcli import device as device_mod
from phdcli.device import Runtime, cpu_native_bf16, resolve_runtime
from phdcli.errors import DeviceError, UsageError


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")


def test_cpu_resolves() -> None:
    rt = resolve_runtime("cpu")
    assert rt.device == "cpu"
    assert rt.precision in ("bf16", "fp32")
    assert rt.describe().startswith(f"device cpu, precision {rt.precision} (")


def test_auto_without_cuda_is_cpu_and_says_why(no_cuda: None) -> None:
    rt = resolve_runtime("auto")
    assert rt.device == "cpu"
    assert "no CUDA" in rt.reason


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_missing_cuda_is_an_error_not_a_fallback(no_cuda: None, spec: str) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_runtime(spec)


def test_cuda_index_checked(two_gpus: None) -> None:
    assert resolve_runtime("auto") == Runtime("cuda:0", "bf16", "Fake GPU supports bf16")
    assert resolve_runtime("cuda").device == "cuda:0"
    assert resolve_runtime("cuda:1", "fp32").device == "cuda:1"
    assert resolve_runtime("cuda:1", "fp32").precision == "fp32"
    with pytest.raises(DeviceError, match="only 2"):
        resolve_runtime("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "mps", ""])
def test_bogus_device_is_usage_error(spec: str) -> None:
    with pytest.raises(UsageError):
        resolve_runtime(spec)


def test_bogus_precision_is_usage_error() -> None:
    with pytest.raises(UsageError, match="precision"):
        resolve_runtime("cpu", "fp16")


def test_cpu_precision_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: "AMX-BF16")
    rt = resolve_runtime("cpu")
    assert rt.describe() == "device cpu, precision bf16 (CPU has AMX-BF16)"
    assert resolve_runtime("cpu", "fp32").precision == "fp32"

    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    assert resolve_runtime("cpu").precision == "fp32"
    forced = resolve_runtime("cpu", "bf16")
    assert forced.precision == "bf16"
    assert "emulated" in forced.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n", "AMX-BF16"),
    ("flags\t\t: fpu avx512f avx512_bf16\n", "AVX512-BF16"),
    ("flags\t\t: fpu sse avx2 fma\n", None),
    ("Features\t: fp asimd sve bf16 i8mm\n", "ARM BF16"),
])
def test_cpu_native_bf16_reads_cpuinfo(tmp_path: Path, text: str, expected: str | None) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_native_bf16(cpuinfo) == expected


def test_cpu_native_bf16_unknown_without_cpuinfo(tmp_path: Path) -> None:
    assert cpu_native_bf16(tmp_path / "missing") is None


def test_autocast_bf16_on_cpu() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with Runtime("cpu", "bf16", "test").autocast():
        assert (a @ b).dtype == torch.bfloat16
    with Runtime("cpu", "fp32", "test").autocast():
        assert (a @ b).dtype == torch.float32
