"""The sample pack (phdcli.training.samples): coalesced reads, file handles, its temp folder.

Synthetic users written by the real ``PackWriter`` and read back by the real
``PackedSamples``; ``os.pread`` is only watched (counted), never replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from phdcli.training.samples import PackedSamples, PackWriter, UserSample

DIM = 128  # 256 bytes a float16 row: a 64 KiB gap is 256 rows


def _users(n: int, seed: int = 0) -> Iterator[UserSample]:
    rng = np.random.default_rng(seed)
    for u in range(n):
        n_seg, n_hist = int(rng.integers(2, 30)), int(rng.integers(0, 5))
        yield UserSample(
            history=rng.standard_normal((n_hist, DIM)).astype(np.float32),
            segments=rng.standard_normal((n_seg, DIM)).astype(np.float32),
            labels=np.zeros(n_seg, np.int8),
            bounds_s=np.stack([np.arange(n_seg) * 5.0, np.arange(n_seg) * 5.0 + 5.0], axis=1),
            duration_s=5.0 * n_seg,
            user_id=f"u{u:03d}",
        )


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    writer = PackWriter(tmp_path / "samples")
    for sample in _users(200):  # ~3,000 segment rows
        writer.add(sample)
    return writer.close()


def pack_fds(folder: Path) -> list[str]:
    """Files under ``folder`` this process holds open (Linux /proc)."""
    inside = str(folder.resolve()) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listing's own descriptor, gone already
            continue
        if target.startswith(inside):
            found.append(target)
    return found


class PreadLog:
    """(size, offset) of every os.pread while installed: the real call, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []
        real = os.pread

        def pread(fd: int, size: int, offset: int) -> bytes:
            self.calls.append((size, offset))
            return real(fd, size, offset)

        monkeypatch.setattr(os, "pread", pread)


def test_batches_read_in_runs_give_the_rows_of_one_read_each(
    pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    with PackedSamples(pack) as samples:
        sub = samples.subset(rng.permutation(len(samples))[:150])  # reordered users
        n_seg = sub.n_segments()
        users = rng.integers(0, len(sub), 64)
        users[:8] = users[0]  # repeats: one user's rows asked several times
        rows = rng.integers(0, n_seg[users])
        rows[1] = rows[0]
        # What one pread per row gives (the reads before coalescing).
        starts = sub.pack.off["n_seg"][sub.users[users]] + rows
        one_by_one = np.stack([sub.pack.rows("segments", r, r + 1)[0] for r in starts])
        means_one_by_one = np.stack([sub.pack.rows("history_mean", u, u + 1)[0]
                                     for u in sub.users[users]])
        log = PreadLog(monkeypatch)
        got = sub.segment_rows(users, rows)
        assert got.dtype == np.float32 and np.array_equal(got, one_by_one)
        n_reads = len(log.calls)
        means = sub.mean_history(users)
        assert means.dtype == np.float32 and np.array_equal(means, means_one_by_one)
        # 64 rows among ~3,000 of 256 bytes: gaps are well under 64 KiB, so one read each.
        assert n_reads == 1 and len(log.calls) == 2


def test_rows_far_apart_are_read_apart(pack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run never reads a gap over 64 KiB: memory stays bounded by the batch."""
    row = DIM * 2
    with PackedSamples(pack) as samples:
        total = int(samples.pack.off["n_seg"][-1])
        far = np.array([total - 1, 0, 300, 1, total - 1])  # 299 rows = 75 KiB between 1 and 300
        expected = np.stack([samples.pack.rows("segments", r, r + 1)[0] for r in far])
        log = PreadLog(monkeypatch)
        assert np.array_equal(samples.pack.gather("segments", far), expected)
        assert samples.pack.gather("segments", np.zeros(0, np.int64)).shape == (0, DIM)
    assert sorted(log.calls, key=lambda c: c[1]) == [(2 * row, 0), (row, 300 * row),
                                                     (row, (total - 1) * row)]


def test_the_owner_closes_the_pack_and_subsets_leave_it_open(pack: Path) -> None:
    samples = PackedSamples(pack)
    assert len(pack_fds(pack)) == 4  # the four feature files
    sub = samples.subset([3, 1])
    sub.close()  # not its to close
    assert len(pack_fds(pack)) == 4 and sub.sample(0).user_id == "u003"
    with samples:
        pass
    assert pack_fds(pack) == []
    samples.close()  # twice is fine
    with pytest.raises(ValueError, match="closed sample pack"):
        sub.sample(0)


def test_a_damaged_pack_is_refused_and_leaves_no_file_open(pack: Path) -> None:
    from phdcli.errors import InputError

    with open(pack / "history.f16", "ab") as fh:
        fh.write(b"\0" * 7)
    with pytest.raises(InputError, match="history holds"):
        PackedSamples(pack)
    assert pack_fds(pack) == []


def test_the_pack_is_written_in_an_owner_named_temp_folder(tmp_path: Path) -> None:
    """Named like every phd temp (``.NAME.phd<pid>-<host>-...``): what a killed build
    leaves, the next build's clean_stale_temps removes (tests/test_dataset.py)."""
    from phdcli import fsutil

    folder = tmp_path / "samples"
    for attempt in ("abort", "close", "replace"):
        writer = PackWriter(folder)
        assert writer.tmp.parent == tmp_path
        assert re.fullmatch(rf"\.samples\.phd{os.getpid()}-[0-9a-f]{{8}}-[a-z0-9_]{{8}}",
                            writer.tmp.name)
        assert writer.tmp in fsutil._live_temps  # removed if phd is interrupted
        for sample in _users(3, seed=2):
            writer.add(sample)
        if attempt == "abort":
            writer.abort()
        else:
            writer.close()  # "replace": an older pack is swapped out
        assert writer.tmp not in fsutil._live_temps
        assert [p.name for p in tmp_path.iterdir()] == ([] if attempt == "abort"
                                                        else ["samples"])
    with PackedSamples(folder) as back:
        assert back.user_ids() == ["u000", "u001", "u002"]
