"""A user's history: the GIFs they made before, one folder per profile.

A managed profile folder holds the GIFs (or short clips) plus ``history.json``
(name, content hash, frames, duration, when added). ``--history DIR`` reads
any folder of GIFs instead, without a manifest and without changing it.

A GIF that ``phd suggest`` wrote is *kept* rather than merely added
(``phdcli.history.adding``): its manifest row also holds its provenance
(source video, start, end) and points to its feature as computed from the
original video, stored beside the GIFs in ``.features/<sha256>.npy`` with
its checksum, backbone and spec (``phdcli.history.vectors``); that feature
is used instead of decoding the GIF while the weights and spec match.

Every change is validate-first, write-after: a file that cannot be probed,
does not decode cleanly or whose features cannot be computed leaves the
folder byte-identical. Changes are serialised by a lock file in the folder
(``.history.lock``, an OS lock via filelock): the manifest is re-read,
changed and written back while holding it, so concurrent ``phd history add``
runs never lose each other's GIFs. The rows an add is about to claim are
recorded before the first file lands (``phdcli.history.pending``), so a
killed add leaves nothing that the next change cannot settle. Names read
from the manifest must be plain file names inside the folder; nothing
outside it is ever written or deleted. The manifest and stored features are
read through the cache opener (``phdcli.fsutil.cachefile``): a FIFO or a
link to a device there is an unreadable manifest, never a hang.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phdcli import NOTICE, fsutil, paths
from phdcli.errors import HistoryError, InputError, PhdError
from phdcli.fsutil import atomic_write_bytes, atomic_write_text
from phdcli.fsutil.cachefile import MIB, read_entry, read_entry_text
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.history import pending, vectors
from phdcli.history.items import (
    FEATURES_DIR,
    LOCK,
    MANIFEST,
    PENDING,
    HistoryItem,
    Precomputed,
    PreparedFile,
    StoredFeature,
    check_item_name,
)
from phdcli.history.kept import kept_spans

if TYPE_CHECKING:
    from phdcli.features.extractor import FeatureExtractor

log = logging.getLogger("phd")

HISTORY_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".mkv", ".webp")
# A history item is a GIF-sized moment; longer files are almost surely a
# whole video added by mistake.
MAX_ITEM_S = 60.0
MANIFEST_MAX = pending.PENDING_MAX  # about 100 000 rows
FEATURE_MAX = 16 * MIB  # one stored vector (16 KiB for C3D fc6)


class History:
    """The GIFs one profile made; ``items`` are oldest first."""

    def __init__(self, folder: Path, managed: bool = True) -> None:
        self.folder = Path(folder)
        self.managed = managed

    @classmethod
    def for_user(cls, user: str = "default") -> History:
        if not user or any(c in user for c in "/\\\0") or user.startswith("."):
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
            return [it for it in map(_describe, self._unmanaged_files()) if it is not None]
        manifest = self.folder / MANIFEST
        if not manifest.exists():
            return []
        try:
            rows = json.loads(read_entry_text(manifest, MANIFEST_MAX))["items"]
            items = [HistoryItem.from_row(row) for row in rows]
            for it in items:
                check_item_name(it.name)
            return items
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HistoryError(f"history manifest {manifest} is unreadable ({exc})") from None

    def missing(self, items: Sequence[HistoryItem] | None = None) -> list[HistoryItem]:
        """Items whose file is gone from the folder (deleted behind phd's back)."""
        items = self.items() if items is None else items
        return [it for it in items if not it.path_in(self.folder).is_file()]

    def _unmanaged_files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.iterdir()
            if p.is_file() and p.suffix.lower() in HISTORY_SUFFIXES and not p.name.startswith(".")
        )

    def features(self, extractor: FeatureExtractor) -> np.ndarray:
        """(m, D) features of every usable item (cached by content; C3D runs once per GIF)."""
        return self.named_features(extractor)[1]

    def named_features(self, extractor: FeatureExtractor) -> tuple[list[str], np.ndarray]:
        """(names, (m, D) features) of the items that can be used.

        An item whose file was deleted or damaged behind phd's back is
        skipped with a warning: one bad GIF must not stop every suggestion.
        """
        from phdcli.media.probe import probe

        names, rows = [], []
        for it in self.items():
            path = it.path_in(self.folder)
            if not path.is_file():
                log.warning("warning: history GIF %s is missing from %s; skipped "
                            "(`phd history remove %s` drops it)", it.name, self.folder, it.name)
                continue
            stored = self._stored_feature(it, extractor)
            try:
                rows.append(stored if stored is not None
                            else extractor.file_feature(probe(path)))
            except InputError as exc:
                log.warning("warning: history GIF skipped: %s", exc)
                continue
            names.append(it.name)
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return names, np.stack(rows)

    def _stored_feature(self, item: HistoryItem, extractor: FeatureExtractor) -> np.ndarray | None:
        """A kept item's feature from its original video, if it is intact and still fits."""
        meta = item.feature
        if meta is None:
            return None
        if not vectors.made_by(extractor, meta.backbone, meta.spec):
            log.info("%s: kept with other C3D weights or sampling; using the GIF itself",
                     item.name)
            return None
        try:
            return vectors.decode(read_entry(self.folder / meta.file, FEATURE_MAX), meta.sha256)
        except (OSError, ValueError) as exc:
            log.log(NOTICE, "%s: its stored feature is unusable (%s); using the GIF itself",
                    item.name, exc)
            return None

    def kept_spans(self, video_sha256: str, video: str) -> tuple[tuple[float, float], ...]:
        """The spans of this video that the profile already kept (a managed history only)."""
        if not self.managed:
            return ()  # a plain --history folder has no provenance
        return tuple(kept_spans((it.source for it in self.items()), video_sha256, video))

    # -- changing ---------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the history's lock: every change re-reads :meth:`items` inside it."""
        self._require_managed("change")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with fsutil.locked(self.folder / LOCK, f"the history at {self.folder}"):
                self._settle_pending()
                yield
        except PhdError:
            raise
        except OSError as exc:
            raise HistoryError(f"cannot change the history at {self.folder} "
                               f"({exc.strerror or exc})") from None

    def add(
        self, files: Sequence[Path], extractor: FeatureExtractor,
        precomputed: Mapping[Path, Precomputed] | None = None,
    ) -> list[HistoryItem]:
        """Add GIFs or short clips; returns the items actually added.

        All files are probed, decoded and featurised before anything is
        copied, so one bad file leaves the history exactly as it was. A file
        whose content is already in the history is skipped. A file in
        ``precomputed`` (keyed by the path as given) is *kept*: it gets its
        provenance, and its feature when there is one (no C3D for it).
        """
        return self.commit(self.prepare(files, extractor, precomputed))

    def prepare(
        self, files: Sequence[Path], extractor: FeatureExtractor,
        precomputed: Mapping[Path, Precomputed] | None = None,
    ) -> list[PreparedFile]:
        """Check every file and compute its features; writes nothing to the history."""
        from phdcli.media.probe import check_decodes, probe

        self._require_managed("add to")
        prepared: list[PreparedFile] = []
        seen = {it.sha256 for it in self.items()}  # a hint only: commit checks again
        for file in files:
            file = Path(file)
            info = probe(file)
            if info.duration_s > MAX_ITEM_S:
                raise InputError(
                    f"{file.name}: {info.duration_s:.0f} s is too long for a history GIF "
                    f"(at most {MAX_ITEM_S:.0f} s)"
                )
            check_decodes(file)  # a GIF with damaged frames would teach the model noise
            # The memoised hash: the feature cache's key below reuses it.
            digest = cached_sha256(file)
            if digest in seen:
                continue
            seen.add(digest)
            pre = (precomputed or {}).get(file)
            stored, blob = None, b""
            if pre is not None and pre.feature is not None:
                stored, blob = self._feature_blob(digest, pre.feature, extractor)
            else:
                extractor.file_feature(info)  # computed once, kept in the feature cache
            frames = info.n_frames or round(info.duration_s * info.fps)
            prepared.append(PreparedFile(file, digest, frames, round(info.duration_s, 3),
                                         None if pre is None else pre.provenance, stored, blob))
        return prepared

    @staticmethod
    def _feature_blob(digest: str, vector: np.ndarray, extractor: FeatureExtractor
                      ) -> tuple[StoredFeature, bytes]:
        blob, blob_sha = vectors.encode(vector)
        meta = StoredFeature(f"{FEATURES_DIR}/{digest}.npy", extractor.backbone_id,
                             extractor.spec.to_dict(), blob_sha)
        return meta, blob

    def commit(self, prepared: Sequence[PreparedFile]) -> list[HistoryItem]:
        """Copy prepared files in and record them, under the lock; returns what was added.

        Copies go to a private temp folder first (outside the lock); under
        the lock the manifest is re-read, each file takes a free name without
        replacing anything, and the manifest is written back. Any failure
        leaves the folder as it was.
        """
        if not prepared:
            return []
        self._require_managed("add to")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with fsutil.temp_dir(self.folder, "add") as staging:
                staged = []
                for n, prep in enumerate(prepared):
                    copy = staging / f"{n}{Path(prep.source.name).suffix.lower()}"
                    shutil.copyfile(prep.source, copy)
                    staged.append(copy)
                with self.locked():
                    fsutil.clean_stale_temps(self.folder)
                    return self._commit_locked(prepared, staged)
        except PhdError:
            raise
        except OSError as exc:
            raise HistoryError(f"could not write to the history at {self.folder} "
                               f"({exc.strerror or exc})") from None

    def _commit_locked(self, prepared: Sequence[PreparedFile], staged: list[Path]
                       ) -> list[HistoryItem]:
        existing = self.items()  # re-read: another phd may have added meanwhile
        known = {it.sha256 for it in existing}
        # A stray file's name is never taken (claim refuses to replace it anyway).
        taken = {it.name for it in existing} | set(os.listdir(self.folder))
        plan: list[tuple[PreparedFile, Path, HistoryItem]] = []
        for prep, copy in zip(prepared, staged, strict=True):
            if prep.sha256 in known:
                continue
            name = _free_name(prep.source.name, taken)
            taken.add(name)
            known.add(prep.sha256)
            plan.append((prep, copy, HistoryItem(name, prep.sha256, prep.frames, prep.duration_s,
                                                 _now(), source=prep.provenance,
                                                 feature=prep.feature)))
        added = [item for _, _, item in plan]
        if not added:
            return []
        claimed: list[tuple[Path, tuple[int, int]]] = []
        blobs: list[Path] = []
        try:
            # Names first, files after: from here a kill leaves only files the
            # pending record names, which the next change settles.
            pending.record(self.folder, added)
            for prep, copy, item in plan:
                if prep.feature is not None:
                    blobs.append(self.folder / prep.feature.file)
                    atomic_write_bytes(blobs[-1], prep.feature_blob)
                claimed.append((self.folder / item.name,
                                fsutil.claim(copy, self.folder / item.name)))
            self._write_manifest(existing + added)
        except BaseException:
            for dest, identity in claimed:
                fsutil.unclaim(dest, identity)
            for blob in blobs:
                blob.unlink(missing_ok=True)
            pending.clear(self.folder)
            raise
        pending.clear(self.folder)
        return added

    def _settle_pending(self) -> None:
        """Adopt what an add killed between its claims and its manifest left (under the lock)."""
        if not os.path.lexists(self.folder / PENDING):
            return
        existing = self.items()
        adopted = pending.settle(self.folder, existing)
        if adopted:
            self._write_manifest(existing + adopted)
        pending.clear(self.folder)

    def remove(self, name: str) -> HistoryItem:
        with self.locked():
            items = self.items()
            match = [it for it in items if it.name == name]
            if not match:
                raise HistoryError(
                    f"no GIF named {name!r} in the history (see `phd history list`)")
            self._write_manifest([it for it in items if it.name != name])
            match[0].path_in(self.folder).unlink(missing_ok=True)
            if match[0].feature is not None:  # a name checked by StoredFeature.from_dict
                (self.folder / match[0].feature.file).unlink(missing_ok=True)
        return match[0]

    def _write_manifest(self, items: list[HistoryItem]) -> None:
        doc = {"version": 1, "items": [asdict(it) for it in items]}
        atomic_write_text(self.folder / MANIFEST, json.dumps(doc, indent=1) + "\n")

    def _require_managed(self, verb: str) -> None:
        if not self.managed:
            raise HistoryError(f"cannot {verb} --history {self.folder}: it is read-only for phd")


def _describe(path: Path) -> HistoryItem | None:
    from phdcli.media.probe import probe

    try:
        info = probe(path)
    except InputError as exc:
        log.warning("warning: history GIF skipped: %s", exc)
        return None
    added = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
    frames = info.n_frames or round(info.duration_s * info.fps)
    return HistoryItem(path.name, "", frames, round(info.duration_s, 3), added)


def _free_name(name: str, taken: set[str]) -> str:
    """The file's own name, made safe and unique within the history."""
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._") or "gif"
    candidate, n = f"{safe}{suffix}", 2
    while candidate in taken or candidate in (MANIFEST, LOCK):
        candidate, n = f"{safe}-{n}{suffix}", n + 1
    return candidate


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
