from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phdcli.errors import DeviceError, UsageError
from phdcli.features import device as device_mod
from phdcli.features.device import Runtime, cpu_native_bf16, resolve_runtime


@pytest.fixture(autouse=True)
def no_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bf16/MPS logic below as on a machine without OpenVINO (int8: its own tests)."""
    monkeypatch.setenv("PHD_INT8", "0")


def test_auto_leaves_the_cpu_precision_to_the_probe_among_what_it_can_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PHD_INT8")
    monkeypatch.setattr(device_mod, "int8_available", lambda: True)
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    rt = resolve_runtime("cpu")
    # fp32 until the probe settles it (what runs with no video to probe on).
    assert (rt.precision, rt.candidates) == ("fp32", ("fp32", "int8"))
    assert rt.unprobed("no video") == Runtime("cpu", "fp32", "CPU lacks native bf16; no video")
    assert resolve_runtime("cpu", "fp32") == Runtime("cpu", "fp32",
                                                     "fp32 requested; CPU lacks native bf16")
    forced = resolve_runtime("cpu", "int8")
    assert (forced.precision, forced.needs_probe) == ("int8", False)
    # Training features stay float: auto never proposes int8 for them.
    assert resolve_runtime("cpu", auto_int8=False).precision == "fp32"
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: "AMX-BF16")
    rt = resolve_runtime("cpu")
    assert (rt.precision, rt.candidates) == ("bf16", ("fp32", "bf16", "int8"))
    assert not resolve_runtime("cpu", auto_int8=False).needs_probe


def test_int8_is_cpu_only_and_needs_its_runtime(monkeypatch: pytest.MonkeyPatch,
                                                two_gpus: None) -> None:
    with pytest.raises(UsageError, match="CPU only"):
        resolve_runtime("cuda", "int8")
    monkeypatch.setattr(device_mod, "int8_installed", lambda: False)
    with pytest.raises(DeviceError, match="OpenVINO"):
        resolve_runtime("cpu", "int8")


def test_phd_int8_0_keeps_auto_off_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "int8_installed", lambda: True)
    assert not device_mod.int8_available()  # PHD_INT8=0 from conftest
    for off in ("off", "No", " false ", "0"):
        monkeypatch.setenv("PHD_INT8", off)
        assert not device_mod.int8_available(), off
    monkeypatch.delenv("PHD_INT8")
    assert device_mod.int8_available()
    monkeypatch.setattr(device_mod, "int8_installed", lambda: False)
    assert not device_mod.int8_available()  # nothing to run it with
    # The opt-out is for auto only: an explicit --precision int8 still runs.
    monkeypatch.setenv("PHD_INT8", "0")
    monkeypatch.setattr(device_mod, "int8_installed", lambda: True)
    assert resolve_runtime("cpu", "int8").precision == "int8"


def test_int8_installed_means_openvino_and_nncf_import() -> None:
    def imports(name: str) -> bool:
        try:
            __import__(name)
        except ImportError:
            return False
        return True

    assert device_mod.int8_installed() == (imports("openvino") and imports("nncf"))


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


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
    assert rt.reason.startswith("no CUDA or MPS device found; ")


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


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "mps:0", "metal", ""])
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


# --- Apple's MPS (availability monkeypatched: no Apple GPU here) -----------------

LACKS_POOL = ("MPS lacks aten::max_pool3d_with_indices in torch 2.7.1, "
              "C3D on MPS needs torch 2.9+")


@pytest.fixture
def mps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A Mac: no CUDA, MPS present, and every C3D operation runs there.

    Returns the list of precisions the MPS probe was asked about."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    asked: list[str] = []

    def probe(precision: str) -> tuple[str | None, list[str]]:
        asked.append(precision)
        return None, []

    monkeypatch.setattr(device_mod, "_mps_probe", probe)
    return asked


def test_auto_picks_mps_without_cuda_in_fp32(mps: list[str]) -> None:
    rt = resolve_runtime("auto")
    assert rt == Runtime("mps", "fp32", "Apple GPU; fp32 (bf16 is not measured on MPS)")
    assert rt.describe().startswith("device mps, precision fp32 (Apple GPU")
    assert mps == ["fp32"]  # C3D's operations were tried before MPS was trusted
    assert resolve_runtime("mps") == rt
    assert resolve_runtime("MPS", "fp32").reason == "fp32 requested; Apple GPU"


def test_auto_prefers_cuda_over_mps(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_runtime("auto").device == "cuda:0"


def test_mps_bf16_only_when_asked_and_it_runs(mps: list[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_runtime("mps", "bf16") == Runtime("mps", "bf16", "bf16 requested; Apple GPU")
    monkeypatch.setattr(device_mod, "_mps_probe", lambda p: (
        ("MPS failed: conv3d bias dtype mismatch", []) if p == "bf16" else (None, [])))
    rt = resolve_runtime("mps", "bf16")
    assert (rt.device, rt.precision) == ("mps", "fp32")
    assert rt.reason == "bf16 requested, but MPS failed: conv3d bias dtype mismatch: fp32 instead"


@pytest.mark.parametrize("spec", ["auto", "mps"])
def test_op_mps_lacks_sends_c3d_to_the_cpu_and_says_so(
    mps: list[str], monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.setattr(device_mod, "_mps_probe", lambda p: (LACKS_POOL, []))
    monkeypatch.setattr(device_mod, "cpu_native_bf16", lambda: None)
    rt = resolve_runtime(spec)
    assert (rt.device, rt.precision) == ("cpu", "fp32")
    assert rt.reason == f"{LACKS_POOL}: running on the CPU; CPU lacks native bf16"


def test_ops_torch_runs_on_the_cpu_are_named(mps: list[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_mod, "_mps_probe",
                        lambda p: (None, ["aten::max_pool3d_with_indices"]))
    rt = resolve_runtime("auto")
    assert rt.device == "mps"
    assert rt.reason.endswith("; aten::max_pool3d_with_indices run on the CPU "
                              "(PYTORCH_ENABLE_MPS_FALLBACK), slower")


def test_explicit_mps_without_mps_is_an_error(no_cuda: None,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    with pytest.raises(DeviceError, match="MPS is not available .*a build without MPS"):
        resolve_runtime("mps")
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    with pytest.raises(DeviceError, match="no MPS device: Apple Silicon and macOS 14"):
        resolve_runtime("mps")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_probe_runs_every_c3d_operation(precision: str) -> None:
    """The probe itself is real PyTorch: on the CPU every operation runs."""
    assert device_mod.probe_c3d_ops("cpu", precision) == (None, [])


MPS_MISSING = ("The operator 'aten::max_pool3d_with_indices' is not currently implemented for "
               "the MPS device. If you want this op to be considered for addition please comment "
               "on https://github.com/pytorch/pytorch/issues/141287 ...")
MPS_FALLBACK = ("The operator 'aten::max_pool3d_with_indices' is not currently supported on the "
                "MPS backend and will fall back to run on the CPU. This may have performance "
                "implications.")


def test_probe_names_the_operation_mps_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch's own words when MPS lacks an operation, raised where C3D would meet it."""
    def missing(*args: object, **kwargs: object) -> None:
        raise NotImplementedError(MPS_MISSING)

    monkeypatch.setattr(torch.nn.functional, "max_pool3d", missing)
    monkeypatch.setattr(torch, "__version__", "2.7.1")
    assert device_mod.probe_c3d_ops("cpu", "fp32") == (LACKS_POOL, [])
    monkeypatch.setattr(torch, "__version__", "2.9.0")
    problem, _ = device_mod.probe_c3d_ops("cpu", "fp32")
    assert problem == "MPS lacks aten::max_pool3d_with_indices in torch 2.9.0"


def test_probe_names_operations_torch_moved_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.nn.functional.max_pool3d

    def falls_back(*args: object, **kwargs: object) -> torch.Tensor:
        import warnings

        warnings.warn(MPS_FALLBACK, UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool3d", falls_back)
    assert device_mod.probe_c3d_ops("cpu", "fp32") == (None, ["aten::max_pool3d_with_indices"])


def test_probe_notices_autocast_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older torch warns and runs fp32 when MPS autocast lacks the dtype: not bf16."""
    real = torch.nn.functional.conv3d

    def warns(*args: object, **kwargs: object) -> torch.Tensor:
        import warnings

        warnings.warn("In MPS autocast, but the target dtype is not supported. Disabling "
                      "autocast.", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv3d", warns)
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert device_mod.probe_c3d_ops("cpu", "bf16") == (
        "MPS autocast lacks bf16 in torch 2.5.1", [])
