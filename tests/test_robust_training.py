"""Hostile training inputs (issue 18): the training commands' outputs, seeds, annotation
rows, damaged stores and datasets, and two builds on one folder.

Everything here is small: CSVs of a few rows, synthetic datasets (tests/test_train.py),
builds whose videos are all missing (tests/test_dataset.py's ``cheap_build_args``), so
no C3D runs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runphd import run_cli
from test_dataset import SPEC, _shard, cheap_build_args
from test_evaluate import HEADER, PHD2, ROWS
from test_train import synthetic_users, write_dataset

from phdcli import fsutil
from phdcli.errors import InputError, UsageError
from phdcli.features.spec import FeatureSpec
from phdcli.training.annotations import load_annotations
from phdcli.training.dataset import DATASET_FORMAT
from phdcli.training.store import FeatureStore, Shard, StoreKey
from tests.conftest import LogLines


def _csv(folder: Path, text: str, name: str = "a.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _no_temps(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if fsutil.is_temp(p.name)]


# -- row 1: outputs -----------------------------------------------------------------
def test_train_prior_and_eval_never_replace_a_file_without_force_nor_their_input(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _csv(tmp_path, HEADER + ROWS)
    prior, scores = tmp_path / "prior.json", tmp_path / "scores.csv"
    for target in (prior, scores):
        target.write_text("mine")
    for args, target, flag in ((["train", "prior", str(csv), "-o", str(prior)], prior, "--out"),
                               (["eval", str(csv), "--scores-out", str(scores)], scores,
                                "--scores-out")):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and f"phd: error: {flag} {target} already exists: use --force" in err
        assert target.read_text() == "mine"
        code, _, err = run_cli([*args, "--force"], capsys)
        assert code == 0 and target.read_text() != "mine", err
    # The command's own input: never, not even with --force, not even through a link.
    link = tmp_path / "link.csv"
    link.symlink_to(csv)
    for args in (["train", "prior", str(csv), "-o", str(link), "--force"],
                 ["eval", str(csv), "--scores-out", str(csv), "--force"],
                 ["eval", str(csv), "--model", str(prior), "--scores-out", str(prior),
                  "--force"]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "is this command's input" in err, err
    assert csv.read_text() == HEADER + ROWS
    assert _no_temps(tmp_path)
    code, _, err = run_cli(["eval", str(csv), "--dataset", str(tmp_path), "--model", str(prior),
                            "--scores-out", str(scores)], capsys)
    assert code == 2 and "--scores-out is not written with --dataset" in err  # not ignored


def test_train_content_refuses_its_out_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from phdcli.training import train

    dataset = write_dataset(tmp_path / "ds", synthetic_users(6, seed=1))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(train, "fit_fused", no_training)
    folder, mine = tmp_path / "models", tmp_path / "m.safetensors"
    folder.mkdir()
    mine.write_bytes(b"mine")
    for out, words, force in ((folder, "is a folder", True),
                              (dataset, "is this command's input", True),
                              (dataset / "dataset.json", "is this command's input", True),
                              (mine, "already exists: use --force", False)):
        code, _, err = run_cli(["train", "content", str(dataset), "-o", str(out),
                                *(["--force"] if force else [])], capsys)
        assert code == 2 and f"phd: error: --out {out} " in err and words in err, err
        assert err.count("\n") == 1 and ".phd" not in err  # one line, no temp name
    assert mine.read_bytes() == b"mine"


def test_dataset_build_never_writes_into_a_file_an_input_or_a_foreign_folder_without_force(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cheap_build_args(tmp_path)  # every video is missing: exit 1, no C3D
    annotations = tmp_path / "phd2.csv"
    before = annotations.read_bytes()
    code, _, err = run_cli([*args, "-o", str(annotations), "--force"], capsys)
    assert code == 2 and "is this command's input" in err
    code, _, err = run_cli([*args, "-o", str(tmp_path / "weights.pth"), "--force"], capsys)
    assert code == 2 and "is this command's input" in err
    assert annotations.read_bytes() == before
    foreign = tmp_path / "mine"
    (foreign / "samples").mkdir(parents=True)
    (foreign / "samples" / "notes.txt").write_text("mine")
    code, _, err = run_cli([*args, "-o", str(foreign)], capsys)
    assert code == 2 and "not a phd dataset" in err and "--force" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["samples"]
    code, _, _ = run_cli([*args, "-o", str(foreign), "--force"], capsys)
    assert code == 1 and (foreign / "dataset.json").is_file()  # built there, as asked
    # A phd dataset folder is resumed without --force; other annotations need it.
    code, _, _ = run_cli(args, capsys)
    assert code == 1
    annotations.write_text(before.decode() + "vidA,1.0,1.0,105,15.0,True\n")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "another annotation file" in err and "--force" in err
    code, _, _ = run_cli([*args, "--force"], capsys)
    assert code == 1 and (tmp_path / "ds" / "annotations.csv").read_bytes() == (
        annotations.read_bytes())


# -- row 11: seeds --------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seeds_out_of_range_are_a_usage_error_naming_seed_and_the_range(
    seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = write_dataset(tmp_path / "ds", synthetic_users(6, seed=1))
    csv = _csv(tmp_path, HEADER + ROWS)
    for args in (["train", "content", str(dataset), "-o", str(tmp_path / "m.safetensors")],
                 ["train", "prior", str(csv), "-o", str(tmp_path / "p.json")],
                 ["eval", str(csv)]):
        code, _, err = run_cli([*args, "--seed", seed], capsys)
        assert code == 2 and "phd: error: --seed must be from 0 to 2**63-1" in err, err
    code, _, err = run_cli(["eval", str(csv), "--seed", str(2**63 - 5)], capsys)
    assert code == 2 and "its last seed" in err  # 10 seeds from there pass the bound


# -- rows 14 and 15: annotation rows ------------------------------------------------------
@pytest.mark.parametrize("youtube_id", ["../elsewhere/secret", "/etc/passwd", ".hidden",
                                        "a b", "x\\y", "a/b"])
def test_annotation_ids_must_be_plain_names(tmp_path: Path, youtube_id: str) -> None:
    csv = _csv(tmp_path, HEADER + f'"{youtube_id}",1,2,u1,60,True\n')
    with pytest.raises(InputError, match=r"a.csv: line 2: column youtubeId: .* not a plain name"):
        load_annotations(csv)


def test_dataset_build_never_reads_a_video_outside_videos(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cheap_build_args(tmp_path)
    secret = tmp_path / "elsewhere" / "secret.mp4"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    _csv(tmp_path, HEADER + "../elsewhere/secret,1,2,u1,60,True\n", "phd2.csv")
    (tmp_path / "videos").mkdir()
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "column youtubeId: '../elsewhere/secret' is not a plain name" in err
    assert not (tmp_path / "ds").exists()  # refused before anything was made


@pytest.mark.parametrize(("row", "column"), [
    ("v1,1,inf,u1,60,True", "column duration"),
    ("v1,1,1e308,u1,60,True", "column duration"),
    ("v1,inf,4,u1,60,True", "column start"),
    ("v1,nan,4,u1,60,True", "column start"),
    ("v1,-1,4,u1,60,True", "column start"),
    ("v1,1,4,u1,inf,True", "column video_duration"),
    ("v1,1,4,u1,1e308,True", "column video_duration"),
    ("v1,70,4,u1,60,True", "columns start, duration"),  # starts after the video's end
    ("v1,58,9,u1,60,True", "columns start, duration"),  # ends 7 s past it
])
def test_annotation_times_must_be_finite_and_in_range(tmp_path: Path, row: str,
                                                      column: str) -> None:
    csv = _csv(tmp_path, HEADER + ROWS + row + "\n")  # the bad row is line 8
    with pytest.raises(InputError, match=rf"a\.csv: line 8: {column}: "):
        load_annotations(csv)


def test_eval_and_train_prior_refuse_infinite_times_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inf = _csv(tmp_path, HEADER + "v1,1,inf,u1,60,True\n")
    huge = _csv(tmp_path, HEADER + "v1,1,4,u1,1e308,True\n", "huge.csv")
    at_inf = _csv(tmp_path, HEADER + "v1,inf,4,u1,60,True\n", "at-inf.csv")
    for args in (["eval", str(inf)], ["train", "prior", str(huge), "-o", str(tmp_path / "p")],
                 ["eval", str(at_inf)]):
        code, out, err = run_cli(args, capsys)
        assert code == 1 and out == "" and err.startswith("phd: error: ") and err.count("\n") == 1


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: not part of the first column's name."""
    csv = tmp_path / "excel.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROWS).encode())
    assert [u.user_id for u in load_annotations(csv)] == ["u1", "u2", "u3"]


@pytest.mark.skipif(not PHD2.is_file(), reason="PHD^2 dev CSV not on this disk")
def test_the_phd2_dev_annotations_pass_the_row_checks() -> None:
    """Real data: 4 GIFs end up to 0.22 s past the whole-second video_duration."""
    assert len(load_annotations(PHD2)) == 438


# -- row 16: damaged stores and datasets ----------------------------------------------------
def _raw_shard(path: Path, header: object) -> None:
    """A shard file whose header is valid JSON of exactly the right size (no tensors)."""
    body = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(body)) + body)


def _phd_meta(path: Path) -> dict[str, object]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        return dict(json.loads((fh.metadata() or {})["phd"]))


def test_a_damaged_shard_is_not_done_and_said_once(tmp_path: Path, phd_log: LogLines) -> None:
    store = FeatureStore(tmp_path, StoreKey(SPEC, "ab" * 32)).open()
    meta = _phd_meta(store.write(_shard()))
    path = store.shard_path("vid")
    headers: list[object] = [
        [],  # valid JSON, not an object
        {"x": {"data_offsets": "zz"}},
        {"__metadata__": {"phd": "[1, 2]"}},
        {"__metadata__": {"phd": json.dumps({**meta, "duration_s": "long"})}},
        {"__metadata__": {"phd": json.dumps({**meta, "spans": [[0, "a"]]})}},
        {"__metadata__": {"phd": json.dumps({**meta, "segments": "yes", "info": []})}},
    ]
    for header in headers:
        _raw_shard(path, header)
        phd_log.clear()
        assert store.header("vid") is None, header
        assert [r.levelname for r in phd_log.records] == ["WARNING"]  # one warning, moved aside
        assert not path.exists()
        _raw_shard(path, header)
        assert store.read("vid") is None
    nan = _shard()
    nan.duration_s = float("nan")  # a whole shard, tensors and sha256 right: still not done
    store.write(nan)
    assert store.header("vid") is None and store.read("vid") is None


def test_store_records_that_are_json_but_not_objects_are_not_internal_errors(
    tmp_path: Path, phd_log: LogLines
) -> None:
    key = StoreKey(SPEC, "ab" * 32)
    store = FeatureStore(tmp_path, key).open()
    (store.dir / "key.json").write_text("[1]")
    FeatureStore(tmp_path, key).open()  # the folder's name is its key: written again
    assert json.loads((store.dir / "key.json").read_text())["key"] == key.digest
    assert "key.json: damaged" in phd_log.records[-1].getMessage()
    store.failure_path("vid").parent.mkdir(parents=True)
    store.failure_path("vid").write_text('"oops"')
    assert store.failure("vid") is None
    store.record_failure("vid", "fetch", "gone", 1)
    assert (store.failure("vid") or {})["attempts"] == 1
    (store.dir / "key.json").write_text(json.dumps({"key": "0" * 64}))
    with pytest.raises(UsageError, match="another spec"):
        FeatureStore(tmp_path, key).open()


def test_a_build_over_a_damaged_store_recomputes_and_never_crashes(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cheap_build_args(tmp_path)
    weights = tmp_path / "weights.pth"
    store = FeatureStore(tmp_path / "shared", StoreKey(FeatureSpec(),
                                                       fsutil.sha256_file(weights))).open()
    _raw_shard(store.shard_path("vidA"), [])
    nan = Shard("vidB", float("nan"), dict(_shard().rows), dict(_shard().bounds))
    store.write(nan)
    store.failure_path("gone1").parent.mkdir(parents=True, exist_ok=True)
    store.failure_path("gone1").write_text("[]")
    code, out, err = run_cli([*args, "--store", str(tmp_path / "shared"), "--no-retry-failed"],
                             capsys)
    assert code == 1 and "internal error" not in err and "Traceback" not in err
    doc = json.loads(out)
    assert doc["videos_skipped"] == 0 and doc["videos_failed"] == 5  # none taken as done
    assert "damaged" in err


def _dataset_json(value: object) -> Callable[[Path], None]:
    return lambda ds: (ds / "dataset.json").write_text(json.dumps(value))


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    def damage(ds: Path) -> None:
        path = ds / "samples" / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return damage


def _index_without_labels(ds: Path) -> None:
    path = ds / "samples" / "index.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "labels"}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize(("damage", "name"), [
    (_dataset_json([]), "dataset.json"),
    (_dataset_json({"format": DATASET_FORMAT, "features": "fc6", "backbone": "b"}),
     "dataset.json"),
    (_dataset_json({"format": DATASET_FORMAT, "features": {"family": "x"}, "backbone": "b"}),
     "dataset.json"),
    (_cut("index.npz", 0.5), "samples/index.npz"),
    (_cut("index.npz", 0.0), "samples/index.npz"),
    (_index_without_labels, "samples/index.npz"),
    (lambda ds: (ds / "samples" / "pack.json").write_text("[]"), "samples/pack.json"),
], ids=["manifest-a-list", "features-a-string", "features-missing-keys", "index-cut-in-half",
        "index-empty", "index-without-labels", "pack-json-a-list"])
def test_a_damaged_dataset_is_one_line_naming_the_file_and_saying_rebuild(
    damage: Callable[[Path], None], name: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dataset = write_dataset(tmp_path / "ds", synthetic_users(6, seed=2))
    damage(dataset)
    code, _, err = run_cli(["train", "content", str(dataset), "-o",
                            str(tmp_path / "m.safetensors")], capsys)
    assert code == 1 and err.startswith(f"phd: error: {dataset / name}: ") and "rebuild" in err
    assert err.count("\n") == 1, err


# -- row 17: two builds on one folder ---------------------------------------------------------
def test_a_second_build_on_one_folder_waits_then_fails_in_one_line(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phdcli.training import folder

    monkeypatch.setattr(folder, "BUILD_LOCK_WAIT_S", 0.2)
    args = cheap_build_args(tmp_path)
    out = tmp_path / "ds"
    out.mkdir()
    with fsutil.locked(out / folder.BUILD_LOCK, "another build"):  # a build is running there
        code, _, err = run_cli(args, capsys)
    assert code == 1 and f"phd: error: --out {out} is busy" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [folder.BUILD_LOCK]  # nothing written
    code, _, _ = run_cli(args, capsys)  # once it is done, the next build runs
    assert code == 1 and (out / "dataset.json").is_file() and _no_temps(out)
