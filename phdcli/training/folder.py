"""A dataset folder (``phd dataset build -o DIR``): its names, what may be built where,
and its manifest (``dataset.json``) read back for ``train``.

- :func:`check_build_out`, before any work: ``-o`` is a folder (or will be
  one), not one of the build's inputs, and either empty, new, or a phd
  dataset; a folder holding other files is refused unless ``--force``.
- :func:`build_lock`: one build per folder at a time (an OS lock on
  ``DIR/.build.lock``, never stale); a second build waits a little, then
  fails in one line.
- :func:`start_manifest`, under the lock: a folder built from other
  annotations, features or weights (or by another phd) is refused rather
  than mixed, unless ``--force`` rebuilds it.
- :func:`read_manifest`: the manifest ``train`` trusts, checked; a damaged one
  is one line naming the file and saying to rebuild.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from phdcli import fsutil
from phdcli.errors import InputError, UsageError
from phdcli.features.spec import FeatureSpec
from phdcli.training.checks import same_file
from phdcli.training.packfiles import REBUILD

log = logging.getLogger("phd")

DATASET_FORMAT = "phd-dataset/2"
MANIFEST = "dataset.json"
ANNOTATIONS_COPY = "annotations.csv"
SAMPLES_DIR = "samples"
STORE_DIR = "store"
BUILD_LOCK = ".build.lock"
# A build can take hours: a second one on the same folder says so after a short wait
# (long enough for a re-run whose videos are all in the store to finish first).
BUILD_LOCK_WAIT_S = 10.0


def _doc(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest as a JSON object; None if absent, unreadable or not an object."""
    try:
        doc = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_dataset(doc: dict[str, Any] | None) -> bool:
    return doc is not None and str(doc.get("format", "")).startswith("phd-dataset/")


def check_build_out(out: Path, force: bool, inputs: Iterable[Path | None]) -> None:
    """Refuse, before any work, an ``-o`` the build must not write into (one UsageError line)."""
    out = Path(out)
    for source in inputs:
        if source is not None and same_file(out, source):
            raise UsageError(f"--out {out} is this command's input {source}: "
                             "write the dataset somewhere else")
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a dataset folder")
    fsutil.writable_folder(out, "--out")
    if not out.is_dir() or force or _is_dataset(_doc(out)):
        return
    try:
        names = [n for n in os.listdir(out) if n != BUILD_LOCK and not fsutil.is_temp(n)]
    except OSError as exc:
        raise UsageError(f"--out {out}: unreadable ({exc.strerror or exc})") from None
    if names:
        what = "a damaged or foreign " + MANIFEST if (out / MANIFEST).exists() else (
            f"no {MANIFEST}")
        raise UsageError(f"--out {out} holds files that are not a phd dataset ({what}): use a "
                         "new folder, or --force to build there anyway")


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the folder's build lock (creating the folder); one line if another build holds it.

    A file system without locks (some NFS mounts: ENOLCK) costs the lock, not the build.
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(fsutil.locked(Path(out) / BUILD_LOCK, f"--out {out}",
                                              BUILD_LOCK_WAIT_S))
        except OSError as exc:
            log.warning("%s: no file lock here (%s): run one build at a time on it", out,
                        exc.strerror or exc)
        yield


def start_manifest(out: Path, base: dict[str, Any], force: bool) -> None:
    """Refuse to mix features, weights or annotations in one folder (unless ``force``:
    rebuild); mark a new build as started. Call under :func:`build_lock`."""
    old = _doc(out)
    if old is not None and old.get("format") != DATASET_FORMAT and not force:
        raise UsageError(f"{out} was built by another version of phd: use a new output "
                         "folder, or --force to rebuild it")
    what = {"features": "feature spec", "backbone_sha256": "C3D backbone",
            "annotations_sha256": "annotation file"}
    for key, name in what.items():
        if old is not None and old.get(key) != base[key] and not force:
            raise UsageError(f"{out} was built with another {name} ({old.get(key)!r}): use a "
                             "new output folder, or --force to rebuild it")
    if old is None or any(old.get(k) != base[k] for k in ("format", *what)):
        fsutil.atomic_write_text(out / MANIFEST,
                                 json.dumps({**base, "status": "building"}, indent=1) + "\n")


def read_manifest(folder: Path) -> tuple[dict[str, Any], FeatureSpec]:
    """(manifest, feature spec) of a built dataset; InputError (one line, rebuild) if damaged."""
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder}: not a dataset folder (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc}): {REBUILD}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: damaged (not a JSON object): {REBUILD}")
    if doc.get("format") != DATASET_FORMAT:
        raise InputError(f"{path}: unsupported dataset format {doc.get('format')!r}: {REBUILD}")
    try:
        spec = FeatureSpec.from_dict(doc["features"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: damaged features ({type(exc).__name__}: {exc}): "
                         f"{REBUILD}") from None
    if not (math.isfinite(spec.clip_fps) and spec.clip_fps > 0 and spec.clips_per_segment >= 1
            and spec.clip_frames >= 1):
        raise InputError(f"{path}: damaged features ({spec}): {REBUILD}")
    for key, default in (("backbone", None), ("backbone_sha256", "any")):
        if not isinstance(doc.get(key, default), str):
            raise InputError(f"{path}: damaged {key} ({doc.get(key)!r}): {REBUILD}")
    return doc, spec
