"""A user's history: the GIFs they made before, one folder per profile.

A managed profile folder holds the GIFs (or short clips) plus ``history.json``
(name, content hash, frames, duration, when added). ``--history DIR`` reads
any folder of GIFs instead, without a manifest and without changing it.

Every change is validate-first, write-after: a file that cannot be probed
or whose features cannot be computed leaves the folder byte-identical.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import paths
from phdcli.errors import HistoryError, InputError
from phdcli.fsutil import atomic_path, atomic_write_text, cached_sha256

if TYPE_CHECKING:
    from phdcli.features import FeatureExtractor

MANIFEST = "history.json"
HISTORY_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".mkv", ".webp")
# A history item is a GIF-sized moment; longer files are almost surely a
# whole video added by mistake.
MAX_ITEM_S = 60.0


@dataclass(frozen=True)
class HistoryItem:
    name: str
    sha256: str
    frames: int
    duration_s: float
    added: str  # ISO 8601, UTC

    def path_in(self, folder: Path) -> Path:
        return folder / self.name


class History:
    """The GIFs one profile made; ``items`` are oldest first."""

    def __init__(self, folder: Path, managed: bool = True) -> None:
        self.folder = Path(folder)
        self.managed = managed

    @classmethod
    def for_user(cls, user: str = "default") -> History:
        if not user or "/" in user or user.startswith("."):
            raise HistoryError(f"invalid profile name {user!r}")
        return cls(paths.profile_dir(user), managed=True)

    @classmethod
    def from_folder(cls, folder: Path) -> History:
        folder = Path(folder)
        if not folder.is_dir():
            raise HistoryError(f"history folder not found: {folder}")
        return cls(folder, managed=False)

    # -- reading ----------------------------------------------------------
    def items(self) -> list[HistoryItem]:
        if not self.managed:
            return [_describe(p) for p in self._unmanaged_files()]
        manifest = self.folder / MANIFEST
        if not manifest.exists():
            return []
        try:
            rows = json.loads(manifest.read_text())["items"]
            return [HistoryItem(**row) for row in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HistoryError(f"history manifest {manifest} is unreadable ({exc})") from None

    def _unmanaged_files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.iterdir()
            if p.is_file() and p.suffix.lower() in HISTORY_SUFFIXES and not p.name.startswith(".")
        )

    def features(self, extractor: FeatureExtractor) -> np.ndarray:
        """(m, D) features of every item (cached by content; C3D runs once per GIF)."""
        from phdcli.video import probe

        rows = [extractor.file_feature(probe(it.path_in(self.folder))) for it in self.items()]
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    # -- changing ---------------------------------------------------------
    def add(self, files: Sequence[Path], extractor: FeatureExtractor) -> list[HistoryItem]:
        """Add GIFs or short clips; returns the items actually added.

        All files are probed and their features computed before anything is
        copied, so one bad file leaves the history exactly as it was. A file
        whose content is already in the history is skipped.
        """
        from phdcli.video import probe

        self._require_managed("add to")
        existing = self.items()
        known = {it.sha256 for it in existing}
        taken = {it.name for it in existing}
        planned: list[tuple[Path, HistoryItem]] = []
        for file in files:
            file = Path(file)
            info = probe(file)
            if info.duration_s > MAX_ITEM_S:
                raise InputError(
                    f"{file.name}: {info.duration_s:.0f} s is too long for a history GIF "
                    f"(at most {MAX_ITEM_S:.0f} s)"
                )
            # The memoised hash: the feature cache's key below reuses it.
            digest = cached_sha256(file)
            if digest in known:
                continue
            extractor.file_feature(info)  # computed once, kept in the feature cache
            name = _free_name(file.name, taken)
            taken.add(name)
            known.add(digest)
            frames = info.n_frames or round(info.duration_s * info.fps)
            item = HistoryItem(name, digest, frames, round(info.duration_s, 3), _now())
            planned.append((file, item))
        if not planned:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        copied: list[Path] = []
        try:
            for src, item in planned:
                dest = item.path_in(self.folder)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
                copied.append(dest)
            self._write_manifest(existing + [item for _, item in planned])
        except OSError as exc:
            for dest in copied:
                dest.unlink(missing_ok=True)
            raise HistoryError(f"could not write to the history at {self.folder} ({exc})") from None
        return [item for _, item in planned]

    def remove(self, name: str) -> HistoryItem:
        self._require_managed("remove from")
        items = self.items()
        match = [it for it in items if it.name == name]
        if not match:
            raise HistoryError(f"no GIF named {name!r} in the history (see `phd history list`)")
        self._write_manifest([it for it in items if it.name != name])
        match[0].path_in(self.folder).unlink(missing_ok=True)
        return match[0]

    def _write_manifest(self, items: list[HistoryItem]) -> None:
        doc = {"version": 1, "items": [asdict(it) for it in items]}
        atomic_write_text(self.folder / MANIFEST, json.dumps(doc, indent=1) + "\n")

    def _require_managed(self, verb: str) -> None:
        if not self.managed:
            raise HistoryError(f"cannot {verb} --history {self.folder}: it is read-only for phd")


def _describe(path: Path) -> HistoryItem:
    from phdcli.video import probe

    info = probe(path)
    added = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
    frames = info.n_frames or round(info.duration_s * info.fps)
    return HistoryItem(path.name, "", frames, round(info.duration_s, 3), added)


def _free_name(name: str, taken: set[str]) -> str:
    """The file's own name, made safe and unique within the history."""
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._") or "gif"
    candidate, n = f"{safe}{suffix}", 2
    while candidate in taken or candidate == MANIFEST:
        candidate, n = f"{safe}-{n}{suffix}", n + 1
    return candidate


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def add_to_history(
    files: Sequence[Path],
    user: str = "default",
    device: str = "auto",
    c3d_weights: Path | None = None,
    model: Path | None = None,
) -> list[HistoryItem]:
    """``phd history add``: the features follow the ranking model's spec."""
    from phdcli.features import FeatureExtractor
    from phdcli.model import default_model_path, load_model

    history = History.for_user(user)
    spec = load_model(model or default_model_path()).spec
    extractor = FeatureExtractor(spec, c3d_weights, device)
    return history.add(files, extractor)
