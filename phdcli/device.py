"""The one place that chooses the compute device and precision, and says why.

``auto`` picks CUDA when there is one; an explicit device that does not exist
is an error, never a silent fallback (rembg's users were bitten by that).
bf16 is used where the hardware does it natively: on a CPU without native
bf16 (AMX-BF16 / AVX512-BF16) PyTorch emulates it and C3D runs hundreds of
times slower than fp32. There ``auto`` proposes int8 (``phdcli.int8``), which
only becomes the precision once the self-check on the user's own video has
passed for these weights on this CPU; until then, and when it fails, fp32.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phdcli.errors import DeviceError, UsageError

PRECISIONS = ("bf16", "fp32", "int8")

# /proc/cpuinfo flag -> how we name it to the user. "bf16" is the arm64
# (ARMv8.6 BF16) feature in the "Features" line.
_BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "ARM BF16"}


@dataclass(frozen=True)
class Runtime:
    """Where and how the network runs: ``device`` "cpu" or "cuda:N",
    ``precision`` "bf16", "fp32" or "int8", ``reason`` one human phrase.

    ``needs_self_check``: int8 proposed by ``auto``, not yet confirmed by the
    self-check (``phdcli.int8.prepare`` settles it, to int8 or fp32).
    """

    device: str
    precision: str
    reason: str
    needs_self_check: bool = False

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    def describe(self) -> str:
        return f"device {self.device}, precision {self.precision} ({self.reason})"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for bf16, nothing for fp32 (parameters stay fp32)."""
        if self.precision == "bf16":
            import torch

            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def cpu_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The name of the CPU's native bf16 feature, or None (also when unknown).

    Reads /proc/cpuinfo (Linux); elsewhere we cannot tell cheaply and answer
    None, which only means ``auto`` stays on fp32.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    for flag, label in _BF16_CPU_FLAGS.items():
        if flag in flags:
            return label
    return None


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """A short stable name for this CPU model and its vector features.

    The int8 self-check's verdict is kept per weights file and per CPU: the
    same int8 model may round differently where other instructions run it
    (VNNI, AVX-512, AMX). Read without torch.
    """
    import hashlib
    import platform

    model, flags = "", set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(f for f in value.split()
                         if f.startswith(("avx", "amx", "fma", "sse4", "asimd", "sve", "i8mm")))
    ident = f"{platform.machine()}|{model or platform.processor()}|{' '.join(sorted(flags))}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _resolve_device(device: str) -> tuple[str, str]:
    """(device, why) for a --device value; why is "" unless auto chose the CPU."""
    import torch

    spec = device.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda:0", ""
        return "cpu", "no CUDA device found"
    if spec == "cpu":
        return "cpu", ""
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise DeviceError(
            f"device {device!r} requested but CUDA is not available "
            f"(torch {torch.__version__}, {build}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {device!r} requested but only {count} CUDA device(s) exist")
    return f"cuda:{index}", ""


def check_spec(device: str, precision: str = "auto") -> None:
    """Refuse a malformed --device / --precision at once, without importing torch.

    Whether the device exists is only known once torch looks
    (``resolve_runtime``); a warm run that never loads C3D never asks.
    """
    spec = device.strip().lower()
    if spec not in ("auto", "cpu") and re.fullmatch(r"cuda(?::(\d+))?", spec) is None:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if precision.strip().lower() not in ("auto", *PRECISIONS):
        raise UsageError(f"unknown precision {precision!r}: use auto, bf16, fp32 or int8")


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Turn --device / --precision into a Runtime; raise rather than guess."""
    import torch

    chosen, device_why = _resolve_device(device)
    prec = precision.strip().lower()
    if prec not in ("auto", *PRECISIONS):
        raise UsageError(f"unknown precision {precision!r}: use auto, bf16, fp32 or int8")
    if prec == "int8" and chosen != "cpu":
        raise UsageError(f"--precision int8 runs on the CPU only (device {chosen}): "
                         "use --device cpu, or bf16/fp32 on the GPU")
    if prec == "int8" and not int8_available():
        raise DeviceError("--precision int8 needs OpenVINO and NNCF "
                          "(pip install openvino nncf); use --precision fp32")

    if chosen == "cpu":
        native = cpu_native_bf16()
        has_bf16 = native is not None
        hw = f"CPU has {native}" if native else "CPU lacks native bf16"
    else:
        index = int(chosen.split(":")[1])
        has_bf16 = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(index)
        hw = f"{name} supports bf16" if has_bf16 else f"{name} lacks bf16"

    needs_check = False
    if prec == "auto":
        prec = "bf16" if has_bf16 else "fp32"
        reason = hw
        if chosen == "cpu" and not has_bf16 and int8_available():
            prec, needs_check = "int8", True
            reason = f"{hw}; int8 if the self-check passes"
    elif prec == "bf16" and not has_bf16:
        reason = f"bf16 forced; {hw}: emulated, expect it to be much slower"
    else:
        reason = f"{prec} requested; {hw}"
    if device_why:
        reason = f"{device_why}; {reason}"
    return Runtime(device=chosen, precision=prec, reason=reason, needs_self_check=needs_check)


def int8_available() -> bool:
    """True when the int8 runtime (OpenVINO, with NNCF to build the model) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))
