"""The one place that chooses the compute device and precision, and says why.

``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit device that
does not exist is an error, never a silent fallback (rembg's users were
bitten by that). On MPS, C3D's operations are tried on a tiny tensor first:
one that this PyTorch lacks there sends the run to the CPU, and the reason is
said with the device.

bf16 is only a candidate where the hardware does it natively: on a CPU
without native bf16 (AMX-BF16 / AVX512-BF16) PyTorch emulates it and C3D
runs hundreds of times slower than fp32. On the CPU, ``auto`` names the
candidates (fp32; bf16 where native; int8 through OpenVINO where installed)
and the precision probe (``phdcli.features.precision_probe``) picks the fastest one
that passes the self-check on the user's own video.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phdcli.errors import DeviceError, UsageError

PRECISIONS = ("bf16", "fp32", "int8")

# /proc/cpuinfo flag -> how we name it to the user. "bf16" is the arm64
# (ARMv8.6 BF16) feature in the "Features" line.
_BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "ARM BF16"}

_PROBE_NOTE = "; the fastest of"  # how an unsettled runtime's reason names its candidates
_DEVICE_RE = re.compile(r"cuda(?::(\d+))?|mps")
_DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

# What C3D needs from MPS, per PyTorch's release notes (nothing here has an
# Apple GPU to check it on): Conv3d since 2.2 (pytorch#114183, macOS 13.2+);
# max_pool3d only since 2.9 (pytorch#156467; 2.9 needs macOS 14+); conv3d
# under bf16 autocast fixed in 2.9 (pytorch#160423). The probe below decides;
# this only names the version to upgrade to.
MPS_C3D_MIN_TORCH = (2, 9)


@dataclass(frozen=True)
class Runtime:
    """Where and how the network runs: ``device`` "cpu", "cuda:N" or "mps",
    ``precision`` "bf16", "fp32" or "int8", ``reason`` one human phrase.

    ``candidates``: the precisions ``auto`` may use on this CPU, not settled
    yet: the precision probe (``phdcli.features.precision_probe``) picks one of them;
    until then ``precision`` is what runs without a probe (no video to
    probe on). Empty: ``precision`` is settled.
    """

    device: str
    precision: str
    reason: str
    candidates: tuple[str, ...] = ()

    @property
    def needs_probe(self) -> bool:
        return bool(self.candidates)

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    def describe(self) -> str:
        precision = "auto" if self.needs_probe else self.precision  # not settled yet
        return f"device {self.device}, precision {precision} ({self.reason})"

    def unprobed(self, why: str) -> Runtime:
        """The precision that runs when the probe cannot (no video), saying ``why``."""
        base = self.reason.split(_PROBE_NOTE)[0]
        return replace(self, candidates=(), reason=f"{base}; {why}")

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
    flags = _cpu_flags(cpuinfo)
    for flag, label in _BF16_CPU_FLAGS.items():
        if flag in flags:
            return label
    return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, as a benchmark row names it (``AMD EPYC``...)."""
    import platform

    for key, value in _cpuinfo(cpuinfo):
        if key in ("model name", "cpu model"):
            return value
    return platform.processor() or platform.machine()


# The vector features that decide C3D's speed per precision, as benchmarks name them.
_SPEED_CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI",
                    "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16",
                    "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The features that matter for C3D's precisions that this CPU has, in a
    fixed order (``["AVX2", "AVX-512", "AMX-BF16"]``); empty where unknown."""
    flags = _cpu_flags(cpuinfo)
    return [label for flag, label in _SPEED_CPU_FLAGS.items() if flag in flags]


def _cpu_flags(cpuinfo: Path) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where unknown."""
    return {flag for key, value in _cpuinfo(cpuinfo) if key in ("flags", "features")
            for flag in value.split()}


def _cpuinfo(cpuinfo: Path) -> list[tuple[str, str]]:
    """(lower-case key, value) per line of /proc/cpuinfo; none where it cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    return [(key.strip().lower(), value.strip())
            for key, _, value in (line.partition(":") for line in text.splitlines())]


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """A short stable name for this CPU model and its vector features.

    The int8 self-check's verdict is kept per weights file and per CPU: the
    same int8 model may round differently where other instructions run it
    (VNNI, AVX-512, AMX). Read without torch.
    """
    import hashlib
    import platform

    flags = {f for f in _cpu_flags(cpuinfo)
             if f.startswith(("avx", "amx", "fma", "sse4", "asimd", "sve", "i8mm"))}
    ident = f"{platform.machine()}|{cpu_model(cpuinfo)}|{' '.join(sorted(flags))}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _resolve_device(device: str) -> tuple[str, str]:
    """(device, why) for a --device value; why is "" unless auto chose the CPU."""
    import torch

    spec = device.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda:0", ""
        if torch.backends.mps.is_available():
            return "mps", ""
        return "cpu", "no CUDA or MPS device found"
    if spec == "cpu":
        return "cpu", ""
    match = _DEVICE_RE.fullmatch(spec)
    if match is None:
        raise UsageError(f"unknown device {device!r}: use {_DEVICE_CHOICES}")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            build = "a build without MPS"
            if torch.backends.mps.is_built():
                build = "this machine offers no MPS device: Apple Silicon and macOS 14+ needed"
            raise DeviceError(f"device 'mps' requested but MPS is not available "
                              f"(torch {torch.__version__}, {build}); use --device cpu")
        return "mps", ""
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
    if spec not in ("auto", "cpu") and _DEVICE_RE.fullmatch(spec) is None:
        raise UsageError(f"unknown device {device!r}: use {_DEVICE_CHOICES}")
    if precision.strip().lower() not in ("auto", *PRECISIONS):
        raise UsageError(f"unknown precision {precision!r}: use auto, bf16, fp32 or int8")


def resolve_runtime(device: str = "auto", precision: str = "auto",
                    auto_int8: bool = True) -> Runtime:
    """Turn --device / --precision into a Runtime; raise rather than guess.

    ``auto`` on the CPU with more than one candidate leaves the choice to the
    precision probe (``Runtime.candidates``). ``auto_int8=False`` keeps
    ``auto`` on a float precision, without a probe: training features
    (``phd dataset build``) are never int8, whatever the CPU.
    """
    import torch

    chosen, device_why = _resolve_device(device)
    prec = precision.strip().lower()
    if prec not in ("auto", *PRECISIONS):
        raise UsageError(f"unknown precision {precision!r}: use auto, bf16, fp32 or int8")
    if prec == "int8" and chosen != "cpu":
        raise UsageError(f"--precision int8 runs on the CPU only (device {chosen}): "
                         "use --device cpu, or bf16/fp32 on the GPU")
    if prec == "int8" and not int8_installed():
        raise DeviceError("--precision int8 needs OpenVINO and NNCF "
                          "(pip install openvino nncf); use --precision fp32")

    if chosen == "mps":
        mps = _mps_runtime(prec)
        if isinstance(mps, Runtime):
            return mps
        chosen, device_why = "cpu", mps  # MPS lacks what C3D needs: the CPU, said so

    if chosen == "cpu":
        native = cpu_native_bf16()
        has_bf16 = native is not None
        hw = f"CPU has {native}" if native else "CPU lacks native bf16"
    else:
        index = int(chosen.split(":")[1])
        has_bf16 = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(index)
        hw = f"{name} supports bf16" if has_bf16 else f"{name} lacks bf16"

    candidates: tuple[str, ...] = ()
    if prec == "auto":
        prec = "bf16" if has_bf16 else "fp32"
        reason = hw
        if chosen == "cpu" and auto_int8 and int8_available():
            candidates = ("fp32", "bf16", "int8") if has_bf16 else ("fp32", "int8")
            reason = (f"{hw}{_PROBE_NOTE} {', '.join(candidates)} that passes the "
                      "self-check, probed once per weights file")
    elif prec == "bf16" and not has_bf16:
        reason = f"bf16 forced; {hw}: emulated, expect it to be much slower"
    else:
        reason = f"{prec} requested; {hw}"
    if device_why:
        reason = f"{device_why}; {reason}"
    return Runtime(device=chosen, precision=prec, reason=reason, candidates=candidates)


def int8_available() -> bool:
    """True when ``auto`` may propose int8: its runtime is installed and
    ``PHD_INT8=0`` does not keep ``auto`` away from it (``--precision int8``
    needs only the runtime)."""
    import os

    if os.environ.get("PHD_INT8", "").strip().lower() in ("0", "off", "no", "false"):
        return False
    return int8_installed()


def int8_installed() -> bool:
    """True when the int8 runtime (OpenVINO, with NNCF to build the model) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _mps_runtime(precision: str) -> Runtime | str:
    """The MPS runtime, or why C3D cannot run on MPS here (the caller then uses the CPU).

    fp32 unless bf16 is asked for: bf16 is emulated on M1/M2 GPUs and phd
    has not been measured on any Apple GPU, so ``auto`` does not bet on it.
    """
    note = ""  # precision is auto, bf16 or fp32: resolve_runtime keeps int8 on the CPU
    if precision == "bf16":
        problem, on_cpu = _mps_probe("bf16")
        if problem is None:
            return Runtime("mps", "bf16", _noting_cpu_ops("bf16 requested; Apple GPU", on_cpu))
        note = f"bf16 requested, but {problem}: fp32 instead"
    problem, on_cpu = _mps_probe("fp32")
    if problem is not None:
        return f"{problem}: running on the CPU"
    if not note:
        note = ("fp32 requested; Apple GPU" if precision == "fp32"
                else "Apple GPU; fp32 (bf16 is not measured on MPS)")
    return Runtime("mps", "fp32", _noting_cpu_ops(note, on_cpu))


def _noting_cpu_ops(reason: str, on_cpu: list[str]) -> str:
    if not on_cpu:
        return reason
    return f"{reason}; {', '.join(on_cpu)} run on the CPU (PYTORCH_ENABLE_MPS_FALLBACK), slower"


# "The operator 'aten::max_pool3d_with_indices' is not currently implemented for
# the MPS device..." (error), "...is not currently supported on the MPS backend
# and will fall back to run on the CPU..." (warning, with PYTORCH_ENABLE_MPS_FALLBACK=1).
_MPS_OP_RE = re.compile(r"operator '([\w:.]+)' is not currently (implemented|supported)")


@functools.lru_cache(maxsize=4)
def _mps_probe(precision: str) -> tuple[str | None, list[str]]:
    """:func:`probe_c3d_ops` on MPS, once per precision and process."""
    return probe_c3d_ops("mps", precision)


def probe_c3d_ops(device: str, precision: str) -> tuple[str | None, list[str]]:
    """Run each kind of operation C3D uses (Conv3d, every MaxPool3d variant, ReLU,
    Linear) on a tiny tensor on ``device`` in ``precision``.

    Returns (a one-line problem, or None; the operations PyTorch ran on the
    CPU instead, when PYTORCH_ENABLE_MPS_FALLBACK=1 lets it).
    """
    import warnings

    import torch
    from torch.nn import functional as F

    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, device=device)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.inference_mode(), Runtime(device, precision, "probe").autocast():
                clip, kernel = zeros(1, 3, 4, 8, 8), zeros(4, 3, 3, 3, 3)
                h = F.relu(F.conv3d(clip, kernel, zeros(4), padding=1))
                h = F.max_pool3d(h, kernel_size=(1, 2, 2), stride=(1, 2, 2))  # pool1
                h = F.max_pool3d(h, kernel_size=2, stride=2, padding=(0, 1, 1))  # pool5 "both"
                h = F.max_pool3d(h, kernel_size=2, stride=2, ceil_mode=True)  # pool5 "right"
                F.linear(h.flatten(1), zeros(2, h[0].numel()), zeros(2)).cpu()
        except (NotImplementedError, RuntimeError, TypeError) as exc:
            return _mps_problem(str(exc)), []
    messages = [str(w.message) for w in caught]
    if any("Disabling autocast" in m for m in messages):
        # torch < 2.6 (or macOS < 14) turns bf16 autocast off on MPS with a
        # warning and runs fp32: that is not the bf16 that was asked for.
        return f"MPS autocast lacks {precision} in torch {torch.__version__}", []
    on_cpu = [m.group(1) for text in messages if (m := _MPS_OP_RE.search(text))]
    return None, sorted(set(on_cpu))


def _mps_problem(message: str) -> str:
    """One line for an operation MPS refused, naming it and the PyTorch that has it."""
    import torch

    match = _MPS_OP_RE.search(message)
    what = match.group(1) if match else " ".join(message.split())[:160]
    line = f"MPS lacks {what} in torch {torch.__version__}" if match else f"MPS failed: {what}"
    version = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if version < MPS_C3D_MIN_TORCH:
        line += f", C3D on MPS needs torch {'.'.join(map(str, MPS_C3D_MIN_TORCH))}+"
    return line
