"""Install the torch build that suits this machine into the Python that runs this.

    .venv/bin/python scripts/install_torch.py [SPEC] [--replace] [--explain]

The Makefile runs it (``make install``, ``make torch``). SPEC is a pip
requirement (default ``torch==2.13.0``; the Makefile's ``TORCH``).

- No NVIDIA GPU: PyTorch's CPU index is tried (a 5 s probe) and, where it
  answers, added with ``--extra-index-url``: its ``2.13.0+cpu`` sorts above
  PyPI's ``2.13.0`` (a local version label), so pip takes the CPU build.
  Where it does not answer, pip installs from its own sources (PyPI's Linux
  wheel is the CUDA build: GBs for nothing).
- An NVIDIA GPU: pip's own sources (PyPI's Linux wheel is the CUDA build).

Afterwards one line says which build came and why. ``PHD_NVIDIA_GPU=1|0``
says whether there is a GPU instead of looking; ``PHD_TORCH_CPU_INDEX=URL``
replaces the CPU index (a mirror). ``--explain`` prints the decision, index
probe included, and installs nothing. ``--replace`` first removes the
installed torch and its CUDA libraries (a CUDA build on a machine without a
GPU, or the reverse: what ``phd doctor`` warns about).

Standard library only: it runs before phd's dependencies are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phdcli.doctor import torchbuild  # noqa: E402  (stdlib only, like this script)

DEFAULT_SPEC = "torch==2.13.0"
INDEX_ENV = "PHD_TORCH_CPU_INDEX"
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Plan:
    gpu: torchbuild.Gpu
    pip_args: tuple[str, ...]  # added to `pip install SPEC`
    why: str  # where the build comes from, in words ("from ...")
    unreachable: str = ""  # the CPU index that could not be reached, and why

    @property
    def cpu_index_used(self) -> bool:
        return "--extra-index-url" in self.pip_args


def probe(index: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``index`` serves a torch page; else why not, in a few words."""
    url = index.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read(1)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        return str(exc) or type(exc).__name__
    return None


def plan(env: dict[str, str]) -> Plan:
    """Which sources pip gets: the CPU index where there is no GPU and it answers."""
    gpu = torchbuild.find_gpu(env)
    if gpu.present:
        return Plan(gpu, (), "from pip's own sources")
    index = env.get(INDEX_ENV) or torchbuild.CPU_INDEX
    failure = probe(index)
    if failure is None:
        return Plan(gpu, ("--extra-index-url", index), f"from PyTorch's CPU index {index}")
    unreachable = f"{index} cannot be reached ({failure})"
    return Plan(gpu, (), f"from pip's own sources: {unreachable}", unreachable)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def installed() -> torchbuild.TorchBuild | None:
    """The torch now installed, asked in a fresh Python (this one may have cached none)."""
    code = ("import dataclasses, json; from phdcli.doctor.torchbuild import installed_torch; "
            "b = installed_torch(); print(json.dumps(b and dataclasses.asdict(b)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode != 0:
        return None
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found is None:
        return None
    found["cuda_libs"] = tuple(found["cuda_libs"])
    return torchbuild.TorchBuild(**found)


def outcome(build: torchbuild.TorchBuild, chosen: Plan,
            fixes: torchbuild.Fixes | None = None) -> str:
    """The one line said after installing: the build, and why it is that one."""
    got = torchbuild.verdict(build, chosen.gpu, fixes or torchbuild.fixes_for(build))
    line = f"{got.detail}, {chosen.why}"
    if got.suits:
        return line
    if build.cuda is not None and not chosen.cpu_index_used:
        return f"{line}; once the CPU index can be reached: {got.fix}"
    return f"{line}; fix: {got.fix}"


def replace(chosen: Plan) -> bool:
    """Remove torch and its CUDA libraries, so that the install picks the build anew;
    False (nothing removed) where the build suits already or pip would bring it back."""
    build = installed()
    if build is not None:
        got = torchbuild.verdict(build, chosen.gpu, torchbuild.fixes_for(build))
        if got.suits:
            print(f"{got.detail}: it stays")
            return False
        if build.cuda is not None and not chosen.cpu_index_used:
            sys.exit(f"{got.detail}; it stays: replacing it needs PyTorch's CPU index, and "
                     f"{chosen.unreachable or 'pip was not given it'}")
    names, _ = torchbuild.cuda_libs()
    pip("uninstall", "-q", "-y", "torch", *names)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help="pip requirement for torch")
    parser.add_argument("--explain", action="store_true", help="say what it would do; no install")
    parser.add_argument("--replace", action="store_true",
                        help="remove the installed torch and its CUDA libraries first")
    args = parser.parse_args(argv)
    chosen = plan(dict(os.environ))
    command = ["pip", "install", args.spec, *chosen.pip_args]
    if args.explain:
        gpu = f"{'' if chosen.gpu.present else 'no '}NVIDIA GPU: {chosen.gpu.how}"
        print(f"would run: {' '.join(command)}  ({gpu}; {chosen.why})")
        return 0
    if args.replace and not replace(chosen):
        return 0
    pip("install", "-q", args.spec, *chosen.pip_args)
    build = installed()
    if build is None:
        print(f"install_torch: {args.spec} installed, but torch does not import", file=sys.stderr)
        return 1
    print(outcome(build, chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
