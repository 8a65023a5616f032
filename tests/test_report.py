"""--report in a real browser, and the yt-dlp heatmap (RANDOM C3D weights).

A loopback "site" serves the test footage with an info JSON that carries a
heatmap; a yt-dlp extractor plugin (real yt-dlp plugin loading, found on
PYTHONPATH) reads it the way yt-dlp's YouTube extractor fills ``heatmap``.
Headless Chromium (Debian's package) opens the report over file:// after
its folder has moved, and the test reads the rendered page over the
DevTools protocol.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import suggest_batch
from tests import browser, media
from tests.runphd import CHILD_ENV

REPO = Path(__file__).resolve().parent.parent

PLUGIN = '''
from yt_dlp.extractor.common import InfoExtractor


class PhdLoopbackIE(InfoExtractor):
    """phd's tests: a site on 127.0.0.1 with an info JSON beside each video."""

    IE_NAME = "phd-loopback"
    _VALID_URL = r"http://127\\.0\\.0\\.1:\\d+/watch/(?P<id>[\\w-]+)$"

    def _real_extract(self, url):
        video_id = self._match_id(url)
        base = url.rsplit("/watch/", 1)[0]
        info = self._download_json(f"{base}/{video_id}.info.json", video_id)
        return {"id": video_id, "title": info["title"], "ext": "mp4",
                "url": f"{base}/{video_id}.mp4", "heatmap": info.get("heatmap")}
'''


def heatmap_fixture(duration_s: float) -> list[dict[str, float]]:
    """20 spans like YouTube's "most replayed": one bump over 5-10 s, little elsewhere."""
    edges = np.linspace(0.0, duration_s, 21)
    spans = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        centre = (a + b) / 2
        value = 0.05 + 0.95 * float(np.exp(-(((centre - 7.5) / 1.8) ** 2)))
        spans.append({"start_time": round(float(a), 3), "end_time": round(float(b), 3),
                      "value": round(value, 4)})
    return spans


def expected_replay(spans: list[dict[str, float]], start_s: float, end_s: float) -> float:
    """The documented term's heatmap part, computed here independently of phdcli."""
    covered = 0.0
    for span in spans:
        overlap = min(end_s, span["end_time"]) - max(start_s, span["start_time"])
        covered += max(overlap, 0.0) * span["value"]
    return covered / (end_s - start_s)


@pytest.fixture(scope="module")
def site(footage_home: dict[str, Path]) -> Iterator[dict[str, object]]:
    root = footage_home["root"] / "site"
    (root / "plugins" / "yt_dlp_plugins" / "extractor").mkdir(parents=True)
    (root / "plugins" / "yt_dlp_plugins" / "extractor" / "phd_loopback.py").write_text(PLUGIN)
    www = root / "www"
    www.mkdir()
    shutil.copyfile(footage_home["video"], www / "footage.mp4")
    from phdcli.media.probe import probe

    spans = heatmap_fixture(probe(footage_home["video"]).duration_s)
    (www / "footage.info.json").write_text(json.dumps({"title": "Test footage",
                                                       "heatmap": spans}))
    handler = lambda *a, **kw: _Quiet(*a, directory=str(www), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}/watch/footage",
           "plugins": root / "plugins", "spans": spans}
    httpd.shutdown()
    httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def phd(*args: str, home: dict[str, Path], site: dict[str, object],
        user_home: Path | None = None) -> dict[str, object]:
    """``phd suggest ARGS --json --device cpu`` in a child process; with
    ``user_home``, run from that folder with ``HOME`` set to it."""
    env = {**CHILD_ENV, "PHD_HOME": str(home["home"]),
           "PHD_C3D_WEIGHTS": str(home["weights"]),
           "PYTHONPATH": os.pathsep.join([str(site["plugins"]), str(REPO)])}
    if user_home is not None:
        env["HOME"] = str(user_home)
    result = subprocess.run([sys.executable, "-m", "phdcli", "suggest", *args, "--json",
                             "--device", "cpu"], capture_output=True, text=True, env=env,
                            timeout=600, cwd=user_home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_start(doc: dict) -> dict[float, dict]:
    return {s["start"]: s for s in doc["results"][0]["suggestions"]}


# The page as the browser rendered it: every value read from the live DOM.
CHECK_JS = """(() => {
  const svg = document.querySelector('svg#timeline');
  return {
    picks: Array.from(document.querySelectorAll('img.pick'), i => ({
      src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})),
    marks: svg ? Array.from(svg.querySelectorAll('.pick-mark'), m => m.dataset.rank) : null,
    segments: svg ? svg.querySelectorAll('rect.seg').length : 0,
    heatmap: svg ? svg.querySelectorAll('.heatmap').length : 0,
    timelineWidth: svg ? svg.getBoundingClientRect().width : 0,
    nearest: Array.from(document.querySelectorAll('.nearest .history'),
                        d => getComputedStyle(d).backgroundImage),
    terms: document.querySelectorAll('svg.terms').length,
    text: document.body.innerText,
    scrollWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
  };
})()"""


def pixel_spread(png: Path) -> float:
    import av

    with av.open(str(png)) as container:
        frame = next(container.decode(video=0))
    gray = frame.to_ndarray(format="gray").astype(np.float64)
    return float(gray.std())


def user_home(root: Path, home: dict[str, Path], real_size_gifs: list[Path]) -> Path:
    """A home folder as a user has it: the C3D weights and a history of real-size
    GIFs (the fixture's, and others at 480 px) under it, so that every path the
    page shows reads ``~/...`` and none names this machine."""
    user = root / "ann"
    (user / "models").mkdir(parents=True)
    (user / "models" / "c3d.pth").symlink_to(home["weights"])
    shutil.copytree(home["history"], user / "liked")
    for gif in real_size_gifs[::2]:  # bikes and carphone, as in the footage
        shutil.copyfile(gif, user / "liked" / gif.name)
    return user


def test_report_renders_in_chromium_from_a_moved_folder(
    footage_home: dict[str, Path], site: dict[str, object], real_size_gifs: list[Path],
    tmp_path: Path,
) -> None:
    exe = browser.find_chromium()
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get; "
                    "here: apt-get install -y chromium)")
    ann = user_home(tmp_path, footage_home, real_size_gifs)
    history_bytes = sum(f.stat().st_size for f in (ann / "liked").iterdir())
    assert history_bytes > 1_000_000  # real-size GIFs: whole, they would make MBs of page
    out = ann / "gifs"
    doc = phd(str(site["url"]), "-k", "3", "--out", "gifs", "--report", "--explain",
              "--history", str(ann / "liked"), "--min-gap", "0",
              home={**footage_home, "weights": ann / "models" / "c3d.pth"},
              site=site, user_home=ann)
    result = doc["results"][0]
    assert doc["report"] == result["report"] == "gifs/index.html"
    assert result["heatmap"] == [[s["start_time"], s["end_time"], s["value"]]
                                 for s in site["spans"]]
    page = (out / "index.html").read_text()
    assert len(page.encode()) <= 200_000, len(page.encode())  # mailable beside its GIFs
    assert str(tmp_path) not in page  # the home is ~, the GIFs are linked relatively

    moved = tmp_path / "elsewhere" / "moved sheet"  # a space: the URLs must be escaped
    moved.parent.mkdir()
    shutil.move(out, moved)
    rendered = browser.render(moved / "index.html", CHECK_JS, tmp_path / "chromium", exe)
    dom = rendered.dom
    assert len(dom["picks"]) == 3
    for pick, suggestion in zip(dom["picks"], result["suggestions"], strict=True):
        assert pick["complete"] and pick["width"] > 0, pick
        assert pick["src"] == Path(suggestion["path"]).name  # relative, so the folder moves
    assert dom["marks"] == ["1", "2", "3"]  # one mark per chosen segment
    assert dom["segments"] == result["segments"] and dom["heatmap"] == 1
    assert dom["timelineWidth"] > 500
    assert dom["nearest"]
    for background in dom["nearest"]:  # a still of each nearest history GIF, not the GIF
        assert background.startswith('url("data:image/jpeg;base64,'), background[:40]
        assert len(background) * 3 / 4 <= 50_000
    assert dom["terms"] == 3
    text = dom["text"]
    assert "phd suggest" in text and "--report" in text and "--explain" in text
    assert "--history ~/liked" in text and "--c3d-weights ~/models/c3d.pth" in text
    assert "(in ~)" in text and "in ~/liked" in text
    assert ("ranked by your history's closest GIFs (SVM-D) + position in the video" in text
            and "Set by hand, not trained" in text and ".safetensors" not in text)
    assert "20 spans from the site" in text
    assert rendered.console_errors == []
    assert dom["scrollWidth"] <= dom["viewportWidth"]

    # A phone: nothing scrolls sideways at 420 px.
    narrow = browser.render(moved / "index.html", CHECK_JS, tmp_path / "chromium-420", exe,
                            width=420)
    assert narrow.dom["viewportWidth"] == 420
    assert narrow.dom["scrollWidth"] <= 420, narrow.dom["scrollWidth"]
    assert narrow.console_errors == []

    shot = tmp_path / "report.png"
    shot.write_bytes(rendered.png)
    assert pixel_spread(shot) > 20  # a blank or failed page is nearly one colour
    if os.environ.get("PHD_REPORT_SCREENSHOT"):  # `make screenshot`: the README's picture
        media.run_ffmpeg("-i", str(shot), "-vf",
                         "scale=900:-1:flags=lanczos,split[a][b];[a]palettegen=max_colors=128"
                         "[p];[b][p]paletteuse=dither=bayer:bayer_scale=3",
                         "-frames:v", "1", os.environ["PHD_REPORT_SCREENSHOT"])


def test_heatmap_weight_adds_exactly_the_documented_term(
    footage_home: dict[str, Path], site: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every segment, whole (no gap, no shot rule): each score is compared.
    common = ["-k", "4", "--dry-run", "--explain", "--history", str(footage_home["history"]),
              "--min-gap", "0", "--no-one-shot"]
    plain = phd(str(site["url"]), *common, home=footage_home, site=site)
    weight = 5.0
    weighted = phd(str(site["url"]), *common, "--heatmap-weight", str(weight),
                   home=footage_home, site=site)
    # The same bytes as a local file: no heatmap at all.
    monkeypatch.setenv("PHD_HOME", str(footage_home["home"]))
    local = suggest_batch([str(footage_home["video"])], SuggestConfig(
        k=4, dry_run=True, history_dir=footage_home["history"],
        c3d_weights=footage_home["weights"], device="cpu", min_gap_s=0, one_shot=False))
    assert "heatmap" not in local.to_dict()["results"][0]

    # Default weight: the ranking (and every score) is the model's own.
    plain_picks = plain["results"][0]["suggestions"]
    local_picks = local.results[0].suggestions
    assert [s["start"] for s in plain_picks] == [s.start_s for s in local_picks]
    assert [s["score"] for s in plain_picks] == pytest.approx([s.score for s in local_picks],
                                                              abs=2e-6)
    assert all(s["explain"]["heatmap_term"] == 0.0 for s in plain_picks)

    # With a weight, each score moves by exactly weight x replay over the span.
    assert len(plain_picks) == 4  # every segment, so every score is compared
    before, after = by_start(plain), by_start(weighted)
    assert set(before) == set(after)
    for start, s in after.items():
        replay = expected_replay(site["spans"], s["start"], s["end"])
        assert s["explain"]["heatmap_value"] == pytest.approx(replay, abs=2e-6)
        assert s["explain"]["heatmap_term"] == pytest.approx(weight * replay, abs=1e-5)
        assert s["score"] - before[start]["score"] == pytest.approx(weight * replay, abs=1e-5)
    # The bump over 5-10 s is large by construction: it now ranks first.
    assert weighted["results"][0]["suggestions"][0]["start"] == 5.0
    assert plain_picks[0]["start"] != 5.0


def test_a_batch_gets_a_page_per_video_and_an_index_and_nothing_is_overwritten(
    footage_home: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phdcli.errors import PhdError

    monkeypatch.setenv("PHD_HOME", str(footage_home["home"]))
    # Two names, one content: the features come from the shared cache.
    second = tmp_path / "second take.mp4"
    shutil.copyfile(footage_home["video"], second)
    out = tmp_path / "batch"
    config = SuggestConfig(k=1, out_dir=out, c3d_weights=footage_home["weights"], device="cpu",
                           report=True, gif=media_gif_options())
    batch = suggest_batch([str(footage_home["video"]), str(second)], config)
    assert batch.report == out / "index.html"
    assert [r.report for r in batch.results] == [out / "footage.html", out / "second_take.html"]
    index = (out / "index.html").read_text()
    assert 'href="footage.html"' in index and 'href="second_take.html"' in index
    page = (out / "second_take.html").read_text()
    assert 'src="second_take_01_' in page and "file://" not in page

    # A page the user already has is refused, up front, without --force.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    single = SuggestConfig(k=1, out_dir=mine, c3d_weights=footage_home["weights"],
                           device="cpu", report=True, gif=media_gif_options())
    with pytest.raises(PhdError, match="index.html already exists"):
        suggest_batch([str(footage_home["video"])], single)
    assert (mine / "index.html").read_text() == "my own page"
    assert sorted(p.name for p in mine.iterdir()) == ["index.html"]  # no GIF written either


def media_gif_options() -> object:
    from phdcli.media.gifs import GifOptions

    return GifOptions(width=96)


@pytest.mark.parametrize("raw", [
    None, [], "x", [{"start_time": 0, "end_time": 1}],
    [{"start_time": 0, "end_time": 1, "value": float("nan")}],
    [{"start_time": 2, "end_time": 1, "value": 0.5}],
    [{"start_time": 0, "end_time": 2, "value": 0.5}, {"start_time": 1, "end_time": 3, "value": 1}],
    [{"start_time": True, "end_time": 2, "value": 0.5}],
])
def test_a_malformed_heatmap_is_ignored(raw: object) -> None:
    from phdcli.sources.heatmap import parse

    assert parse(raw) is None


def test_heatmap_replay_is_the_time_weighted_mean() -> None:
    from phdcli.sources.heatmap import parse, replay, score_term

    heat = parse([{"start_time": 4, "end_time": 6, "value": 1.0},
                  {"start_time": 0, "end_time": 4, "value": 0.5}])
    assert heat == ((0.0, 4.0, 0.5), (4.0, 6.0, 1.0))
    # 0-5: 4 s at 0.5 and 1 s at 1.0; 5-10: 1 s at 1.0, 4 s uncovered.
    assert replay(heat, [0.0, 5.0], [5.0, 10.0]).tolist() == pytest.approx([0.6, 0.2])
    assert score_term(heat, [0.0], [5.0], 0.0)[1].tolist() == [0.0]
    assert score_term(None, [0.0], [5.0], 3.0)[1].tolist() == [0.0]


def test_the_command_on_the_page_pins_settings_from_the_environment(
    footage_home: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import html

    from phdcli.cli import main

    monkeypatch.setenv("PHD_HOME", str(footage_home["home"]))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(footage_home["weights"]))
    monkeypatch.setenv("PHD_K", "1")  # from the environment: the page must say -k 1
    out = tmp_path / "pinned"
    with pytest.raises(SystemExit) as exit_info:
        main(["suggest", str(footage_home["video"]), "--out", str(out), "--report",
              "--width", "96", "--device", "cpu", "--json"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    page = html.unescape((out / "index.html").read_text())
    command = page.split("<code>phd suggest ", 1)[1].split("</code>", 1)[0]
    assert command.startswith(str(footage_home["video"]))
    for words in ("-k 1", f"--out {out}", "--width 96", "--report", "--device cpu",
                  f"--c3d-weights {footage_home['weights']}", "--json"):
        assert f" {words}" in command, (words, command)  # every flag, --json too
