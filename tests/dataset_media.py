"""Shared by the dataset tests: cut videos, a loopback server for yt-dlp, PHD^2-style rows.

The videos are lavfi sources joined with hard cuts (so scenedetect finds
the shots); the server answers ``/<id>.mp4`` and 404 otherwise, and counts
requests, so tests see what yt-dlp fetched.
"""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from pathlib import Path

from media import run_ffmpeg


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


class VideoServer:
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# Three users on three_videos, every video there: what the engine tests build.
ENGINE_ANNOTATIONS = """youtubeId,start,duration,user_id,video_duration,is_last
vidA,5.5,3.5,201,15.0,True
vidC,2.0,2.0,201,10.0,False
vidC,0.5,2.0,202,10.0,True
vidA,1.0,2.0,202,15.0,False
vidB,6.0,2.0,203,15.0,True
vidA,11.0,2.0,203,15.0,False
"""


def three_videos(folder: Path) -> dict[str, bytes]:
    """vidA and vidB: three 5 s shots; vidC: two."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "/vidA.mp4": cut_video(folder / "a.mp4", ["testsrc2", "smptebars", "rgbtestsrc"]),
        "/vidB.mp4": cut_video(folder / "b.mp4", ["testsrc", "smptehdbars", "testsrc2"]),
        "/vidC.mp4": cut_video(folder / "c.mp4", ["rgbtestsrc", "testsrc"]),
    }
    return {k: v.read_bytes() for k, v in files.items()}


# Users 101-103 have their last video on the server; 104's is gone (and of unknown
# duration); gone1 is a history video that is gone too.
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
