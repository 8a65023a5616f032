from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phdcli.errors import InputError, UsageError
from phdcli.ranking.prior import TemporalPrior
from phdcli.training.annotations import Gif, load_annotations
from phdcli.training.crossval import validate_prior
from phdcli.training.evaluate import evaluate, fixed_segment_bounds, train_prior

PHD2 = Path("/work/shared/data/phd2/phd2-test-dev.csv")
needs_phd2 = pytest.mark.skipif(not PHD2.is_file(), reason="PHD^2 dev CSV not on this disk")
HEADER = "youtubeId,start,duration,user_id,video_duration,is_last\n"
ROWS = (
    "v1,10,4,u1,60,True\nv0,3,3,u1,40,False\nv0,20,2,u1,40,False\n"
    "v2,0,5,u2,23,True\nv3,1,2,u2,-1,False\nv4,1,2,u3,-1,True\n"
)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "a.csv"
    path.write_text(text)
    return path


def test_fixed_segment_bounds() -> None:
    assert fixed_segment_bounds(85.0).shape == (17, 2)
    assert fixed_segment_bounds(11.0).tolist() == [[0, 5], [5, 10], [10, 11]]
    assert fixed_segment_bounds(10.5).tolist() == [[0, 5], [5, 10.5]]  # < 1 s merged
    assert fixed_segment_bounds(3.0).tolist() == [[0, 3]]


def test_load_annotations_groups_users(tmp_path: Path) -> None:
    users = load_annotations(_csv(tmp_path, HEADER + ROWS))
    assert [u.user_id for u in users] == ["u1", "u2", "u3"]
    assert users[0].last.youtube_id == "v1" and users[0].last.gifs == [Gif(10.0, 4.0)]
    assert [g.start_s for g in users[0].history[0].gifs] == [3.0, 20.0]
    assert users[2].last.duration_s == -1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("youtubeId,start,duration\nv,1,2\n", "missing column"),
        (HEADER + "v1,abc,4,u1,60,True\n", "line 2"),
        (HEADER + "v1,1,4,u1,60,True\nv2,1,4,u2,60,maybe\n", "line 3.*is_last"),
        (HEADER + "v1,1,0,u1,60,True\n", "line 2.*duration"),
        (HEADER + "v1,1,4,u1,60,True,extra\n", "line 2"),
        (HEADER + "v1,1,4,u1,60,True\nv2,1,4,u1,60,True\n", "u1 has 2 videos"),
        (HEADER + "v1,1,4,u1,60,False\n", "u1 has 0 videos"),
        (HEADER + "v1,1,4,u1,60,True\nv1,2,4,u1,61,True\n", "line 3.*disagrees"),
    ],
)
def test_load_annotations_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_annotations(_csv(tmp_path, text))


def test_load_annotations_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_annotations(tmp_path / "nope.csv")


def test_evaluate_small_file_and_scores_out(tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    r = evaluate(_csv(tmp_path, HEADER + ROWS), "random", seed=3, n_seeds=4, scores_out=out)
    assert (r.n_videos, r.n_skipped, r.model) == (2, 1, "random")
    assert len(r.per_seed) == 4 and 0 <= r.map <= 100
    assert any("content-free" in n for n in r.notes)
    assert any("unknown duration" in n for n in r.notes)
    lines = out.read_text().splitlines()
    assert lines[0] == "user_id,segment_index,start,end,score"
    assert len(lines) == 1 + 12 + 5  # 60 s and 23 s videos
    assert lines[-1].startswith("u2,4,20.000,23.000,")
    assert json.loads(json.dumps(r.to_dict()))["n_videos"] == 2


def test_evaluate_rejects_unknown_scorer(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        evaluate(_csv(tmp_path, HEADER + ROWS), "video2gif")


@needs_phd2
def test_random_matches_paper_random_row() -> None:
    r = evaluate(PHD2, "random", seed=0, n_seeds=10)
    assert (r.n_videos, r.n_skipped) == (437, 1)
    assert abs(r.map - 12.97) <= 1.0
    assert abs(r.nmsd - 50.60) <= 1.0
    # R@5 of random scores has an exact expectation, mean(min(1, 5 / n_segments)):
    # 22.32 on this 438-user half of the test split (0.94 above the paper's 21.38,
    # which used all 850 users). Its 10-seed estimate (std ~0.35) is held to that.
    users = load_annotations(PHD2)
    n = [len(fixed_segment_bounds(u.last.duration_s)) for u in users if u.last.duration_s > 0]
    exact = 100.0 * float(np.mean(np.minimum(1.0, 5.0 / np.asarray(n))))
    assert abs(exact - 21.38) <= 1.0
    assert abs(r.recall5 - exact) <= 1.0


@pytest.mark.heavy
@needs_phd2
def test_prior_beats_random_on_held_out_users() -> None:
    """On PHD^2's dev half (438 users, 5 folds: ~8 s). Its default-suite twin,
    test_prior_beats_random_on_held_out_synthetic_users, runs the same k-fold
    validation on users made here."""
    v = validate_prior(PHD2, seed=0, n_folds=5)
    assert v["n_heldout_users"] == 438 and v["prior"]["n_videos"] == 437
    assert v["prior"]["map"] - v["random"]["map"] >= 3.0
    assert v["prior"]["recall5"] - v["random"]["recall5"] >= 3.0
    assert v["prior"]["nmsd"] < v["random"]["nmsd"]


def test_prior_beats_random_on_held_out_synthetic_users(tmp_path: Path) -> None:
    """30 users whose GIFs all lie in the first tenth of their videos: a prior fitted
    on the other folds must find that for each held-out user; random cannot."""
    rng = np.random.default_rng(0)
    rows = [HEADER.strip()]
    for user in range(30):
        for n in range(3):
            duration = float(rng.integers(40, 120))
            start = rng.uniform(0.0, 0.1 * duration)
            rows.append(f"u{user}v{n},{start:.1f},3,user{user},{duration:.0f},{n == 2}")
    v = validate_prior(_csv(tmp_path, "\n".join(rows) + "\n"), seed=0, n_folds=5)
    assert v["n_heldout_users"] == 30 and v["prior"]["n_videos"] == 30
    assert v["prior"]["map"] - v["random"]["map"] >= 3.0
    assert v["prior"]["recall5"] - v["random"]["recall5"] >= 3.0
    assert v["prior"]["nmsd"] < v["random"]["nmsd"]


def test_train_prior_writes_a_loadable_file(tmp_path: Path) -> None:
    csv = _csv(tmp_path, HEADER + ROWS)
    out = tmp_path / "prior.json"
    prior = train_prior(csv, out)
    loaded = TemporalPrior.from_dict(json.loads(out.read_text()))
    assert np.allclose(loaded.coef, prior.coef)
    r = evaluate(csv, out)  # a prior file path is accepted as scorer
    assert r.model == "prior:prior.json" and r.per_seed is None
