"""What an install of phd weighs on disk, and what it is made of (README, Installing).

    /path/to/venv/bin/python scripts/install_sizes.py

Run with the Python of the environment to measure. Each installed file is
counted once, as it lies on disk (``st_blocks``, as ``du`` counts it, with
the ``.pyc`` files Python wrote), in one of these groups: torch and what
only it needs; the CUDA libraries (``nvidia-*``, ``triton``, ``cuda-*``);
openvino and nncf and what only they need; the rest (phd's other
dependencies, pip itself). Standard library only.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: metadata.Distribution) -> set[str]:
    """The installed distributions ``dist`` requires, extras left out."""
    found = set()
    for req in dist.requires or ():
        if "extra ==" in req.replace('"', "").replace("'", ""):
            continue
        match = _NAME.match(req)
        if match:
            found.add(canonical(match.group()))
    return found


def closure(roots: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [r for r in roots if r in graph]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(r for r in graph[name] if r in graph)
    return seen


def files(dist: metadata.Distribution) -> set[Path]:
    """The files of ``dist`` on disk, with the bytecode Python wrote for its modules."""
    found = set()
    for entry in dist.files or ():
        path = Path(str(dist.locate_file(entry)))
        if not path.is_file():
            continue
        found.add(path)
        cache = path.parent / "__pycache__"
        if path.suffix == ".py" and cache.is_dir():
            found.update(cache.glob(f"{path.stem}.*.pyc"))
    return found


def disk_bytes(paths: set[Path]) -> int:
    return sum(p.stat().st_blocks * 512 for p in paths)


def main() -> None:
    dists = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    graph = {name: requirements(d) for name, d in dists.items()}
    cuda = {n for n in dists if n.startswith(("nvidia-", "triton", "cuda-"))}
    top = graph.get("phdcli", set(dists))
    others = top - {"torch", "openvino", "nncf"}
    shared = closure(others, graph)
    groups = {
        "CUDA libraries (nvidia-*, triton, cuda-*)": cuda,
        "torch (and what only it needs)": closure({"torch"}, graph) - shared - cuda,
        "openvino, nncf (and what only they need)":
            closure({"openvino", "nncf"}, graph) - shared - closure({"torch"}, graph),
    }
    groups["the rest"] = set(dists) - set().union(*groups.values())
    counted: set[Path] = set()  # a file two distributions list counts once
    print(f"{sys.prefix} (Python {sys.version.split()[0]})")
    for label, names in groups.items():
        paths = set().union(*(files(dists[n]) for n in names)) - counted
        counted |= paths
        print(f"{disk_bytes(paths) / 1e9:6.2f} GB  {label}: {len(names)} packages")
    print(f"{disk_bytes(counted) / 1e9:6.2f} GB  in all ({len(dists)} packages)")


if __name__ == "__main__":
    main()
