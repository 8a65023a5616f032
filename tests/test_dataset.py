"""phdcli.training.dataset: labels and spans, then a whole build -> train -> model file run.

The end-to-end test uses generated videos served over loopback HTTP (real
yt-dlp, generic extractor) and RANDOM C3D weights (tests/c3d_files.py): it
proves the plumbing (download archive, resume, missing videos, file
formats), not that the features or the model mean anything.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from media import run_ffmpeg

from phdcli.errors import UsageError, WeightsError
from phdcli.features import FeatureSpec
from phdcli.model import check_compatible, load_model
from phdcli.training.annotations import Gif, User, UserVideo
from phdcli.training.dataset import (
    AMBIGUOUS,
    ARCHIVE,
    NEGATIVE,
    POSITIVE,
    archived_ids,
    build_dataset,
    find_video,
    history_spans,
    load_dataset,
    merge_spans,
    recent_history,
    segment_labels,
    user_file_name,
)
from phdcli.training.train import train_content

# One clip per segment: C3D costs ~2.5 s a clip on a 2-core CPU.
SPEC = FeatureSpec(clips_per_segment=1)


# -- pure parts -------------------------------------------------------------------
def test_merge_spans_unions_overlaps_and_touching() -> None:
    spans = np.array([[5.0, 7.0], [0.0, 2.0], [1.0, 3.0], [3.0, 4.0], [9.0, 9.0]])
    assert merge_spans(spans).tolist() == [[0.0, 4.0], [5.0, 7.0]]
    assert merge_spans(np.zeros((0, 2))).shape == (0, 2)


def test_segment_labels_rule() -> None:
    bounds = np.array([[0, 5], [5, 10], [10, 15], [15, 30], [30, 35], [35, 40]], dtype=float)
    gifs = np.array([
        [5.5, 9.0],    # 70% of [5, 10]: positive
        [14.0, 17.0],  # 1/5 of [10, 15], 2/15 of [15, 30] and 1/3 of the GIF in each...
        [20.0, 23.0],  # ... but all of this GIF lies in [15, 30]: positive
        [34.0, 36.0],  # half of it in [30, 35], half in [35, 40]: both ambiguous
    ])
    labels = segment_labels(bounds, gifs)
    assert labels.tolist() == [NEGATIVE, POSITIVE, AMBIGUOUS, POSITIVE, AMBIGUOUS, AMBIGUOUS]
    assert segment_labels(bounds, np.zeros((0, 2))).tolist() == [NEGATIVE] * 6


def test_history_spans_clip_to_the_file_and_drop_gifs_past_its_end() -> None:
    video = UserVideo("v", 60.0, [Gif(2.0, 3.0), Gif(4.0, 2.0), Gif(9.0, 5.0), Gif(30.0, 3.0)])
    assert history_spans(video, duration_s=10.0).tolist() == [[2.0, 6.0], [9.0, 10.0]]


def test_recent_history_is_the_first_videos_in_file_order() -> None:
    history = [UserVideo(f"v{i}", 10.0, [Gif(0, 1)]) for i in range(25)]
    user = User("u", UserVideo("last", 10.0), history)
    assert [v.youtube_id for v in recent_history(user)] == [f"v{i}" for i in range(20)]


def test_file_names(tmp_path: Path) -> None:
    assert user_file_name("13000") == "13000.npz"
    odd = user_file_name("a/../b c")
    assert "/" not in odd and odd.endswith(".npz") and odd != user_file_name("a/../b_c")
    (tmp_path / "abc.mp4.part").write_bytes(b"x")
    assert find_video(tmp_path, "abc") is None
    (tmp_path / "abc.webm").write_bytes(b"x")
    assert find_video(tmp_path, "abc") == tmp_path / "abc.webm"
    (tmp_path / ARCHIVE).write_text("youtube abc\ngeneric def\n\n")
    assert archived_ids(tmp_path / ARCHIVE) == {"abc", "def"}


# -- end to end -------------------------------------------------------------------
def cut_video(out: Path, sources: list[str], shot_s: float = 5.0) -> Path:
    """Shots of ``shot_s`` from different lavfi sources, hard cuts between them (160x120)."""
    args: list[str] = []
    for source in sources:
        args += ["-t", str(shot_s), "-f", "lavfi", "-i", f"{source}=size=160x120:rate=25"]
    joined = "".join(f"[{i}:v]" for i in range(len(sources)))
    graph = f"{joined}concat=n={len(sources)}:v=1:a=0,format=yuv420p[out]"
    run_ffmpeg(*args, "-filter_complex", graph, "-map", "[out]",
               "-c:v", "libx264", "-preset", "ultrafast", str(out))
    return out


class _VideoServer:
    """Serves ``/<id>.mp4`` for the given files, 404 otherwise; counts requests per path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                server.requests[path] += 1
                body = files.get(path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.template = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{id}}.mp4"


@pytest.fixture
def video_server(tmp_path: Path) -> Iterator[_VideoServer]:
    src = tmp_path / "src"
    src.mkdir()
    files = {
        "/vidA.mp4": cut_video(src / "a.mp4", ["testsrc2", "smptebars", "rgbtestsrc"]),
        "/vidB.mp4": cut_video(src / "b.mp4", ["testsrc", "smptehdbars", "testsrc2"]),
        "/vidC.mp4": cut_video(src / "c.mp4", ["rgbtestsrc", "testsrc"]),
    }
    srv = _VideoServer({k: v.read_bytes() for k, v in files.items()})
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


ANNOTATIONS = """youtubeId,start,duration,user_id,video_duration,is_last
vidA,5.5,3.5,101,15.0,True
vidB,1.0,2.0,101,15.0,False
vidC,2.0,2.0,101,10.0,False
vidC,3.0,3.0,101,10.0,False
vidA,11.0,3.0,102,15.0,True
vidC,0.0,2.0,102,10.0,False
gone1,1.0,1.0,102,20.0,False
vidB,0.5,3.5,103,15.0,True
vidA,6.0,2.0,103,15.0,False
gone2,3.0,3.0,104,-1,True
vidA,1.0,2.0,104,15.0,False
"""


@pytest.fixture(scope="session")
def c3d_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c3d_files = pytest.importorskip("c3d_files")
    return c3d_files.write_mmaction2_pth(tmp_path_factory.mktemp("c3d") / "c3d.pth")


def test_build_resume_train_end_to_end(
    tmp_path: Path, phd_home: Path, video_server: _VideoServer, c3d_weights: Path
) -> None:
    annotations = tmp_path / "phd2.csv"
    annotations.write_text(ANNOTATIONS)
    videos, out = tmp_path / "videos", tmp_path / "dataset"
    first = build_dataset(annotations, videos, out, runtime_device="cpu", c3d_weights=c3d_weights,
                          download=True, spec=SPEC, url_template=video_server.template)

    assert (first.n_users, first.n_built, first.n_already_done, first.n_skipped) == (4, 3, 0, 1)
    assert first.missing_videos == ["gone1", "gone2"]
    assert (first.n_downloaded, first.n_download_failed) == (3, 2)
    assert first.n_history_spans_missing == 1  # user 102's GIF on gone1
    # vidA's shots are its fixed 5 s segments, so the test features come from the cache:
    # 3 + 3 clips for the last videos, 4 history spans (user 104 was skipped).
    assert first.clips_forwarded == 10
    assert sorted(p.name for p in videos.iterdir()) == [ARCHIVE, "vidA.mp4", "vidB.mp4",
                                                         "vidC.mp4"]
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["status"] == "complete" and manifest["features"] == SPEC.to_dict()
    assert manifest["backbone"].startswith("c3d-sports1m@")
    assert manifest["counts"]["user_files"] == 3

    data = load_dataset(out)
    by_id = {s.user_id: s for s in data.samples}
    assert sorted(by_id) == ["101", "102", "103"]
    u101 = by_id["101"]
    assert u101.bounds_s.tolist() == [[0, 5], [5, 10], [10, 15]]
    assert u101.labels.tolist() == [NEGATIVE, POSITIVE, NEGATIVE]
    assert u101.test_bounds_s is not None and u101.test_bounds_s.tolist() == [[0, 5], [5, 10],
                                                                              [10, 15]]
    # vidB's GIF and the union of the two overlapping GIFs on vidC.
    assert u101.history.shape == (2, 4096) and u101.segments.shape == (3, 4096)
    assert np.allclose(np.linalg.norm(u101.history, axis=1), 1.0, atol=1e-5)
    assert by_id["102"].history.shape == (1, 4096)  # gone1 is missing

    # A re-run does nothing: every user is done, no video is requested again.
    files = sorted((out / "users").iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    requests_before = dict(video_server.requests)
    again = build_dataset(annotations, videos, out, runtime_device="cpu", c3d_weights=c3d_weights,
                          download=True, spec=SPEC, url_template=video_server.template)
    assert (again.n_built, again.n_already_done, again.clips_forwarded) == (0, 3, 0)
    assert again.n_downloaded == 0
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    for name in ("/vidA.mp4", "/vidB.mp4", "/vidC.mp4"):
        assert video_server.requests[name] == requests_before[name]

    # The archive stops a second download even of a video deleted since; a new dataset
    # over the same videos then misses it, and takes every feature from the cache.
    (videos / "vidB.mp4").unlink()
    other = build_dataset(annotations, videos, tmp_path / "dataset2", runtime_device="cpu",
                          c3d_weights=c3d_weights, download=True, spec=SPEC,
                          url_template=video_server.template)
    assert video_server.requests["/vidB.mp4"] == requests_before["/vidB.mp4"]
    assert find_video(videos, "vidB") is None and "vidB" in archived_ids(videos / ARCHIVE)
    assert (other.n_built, other.n_skipped, other.n_downloaded) == (2, 2, 0)
    assert "vidB" in other.missing_videos and other.clips_forwarded == 0
    with pytest.raises(UsageError, match="another feature spec"):
        build_dataset(annotations, videos, out, runtime_device="cpu", c3d_weights=c3d_weights,
                      spec=FeatureSpec(clips_per_segment=2))

    model_path = tmp_path / "model.safetensors"
    summary = train_content(out, model_path, seed=0, epochs=2)
    assert (summary.n_train, summary.n_val) == (2, 1)
    model = load_model(model_path)
    prov = model.provenance
    assert prov["backbone"] == manifest["backbone"] and prov["layer"] == "fc6"
    assert prov["k"] == 20 and prov["seed"] == 0 and prov["epochs"] == 2
    assert prov["training_data"]["annotations"] == "phd2.csv"
    assert set(prov["validation"]["fused"]) >= {"map", "nmsd", "recall5"}
    assert model.spec == SPEC and model.fnn is not None
    assert model.prior is not None  # fitted on the training users' annotations
    check_compatible(model, SPEC)
    with pytest.raises(WeightsError, match="fc6"):
        check_compatible(model, FeatureSpec(clips_per_segment=1, layer="pool5"))
    with pytest.raises(WeightsError, match="sampled"):
        check_compatible(model, FeatureSpec(clips_per_segment=2))
    scores = model.score(u101.test_segments, u101.history, u101.test_bounds_s[:, 0],
                         u101.test_bounds_s[:, 1], u101.duration_s)
    assert np.isfinite(scores.total).all()
