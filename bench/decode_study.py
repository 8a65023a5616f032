"""Where ``decode_clips`` spends its time (``python -m bench.decode_study VIDEO``).

Times, on one video and phd's default clip starts: PyAV decoding every frame;
decode_clips as phd runs it; the same with seeking counted; frame conversion
alone; and decode_clips under other thread settings. A diagnostic for the
R1 breakdown, not a target.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    import av

    import phdcli.media.decode as v
    from phdcli.features.spec import FeatureSpec
    from phdcli.media.probe import probe
    from phdcli.media.segments import clip_starts, fixed_segments

    video = Path(sys.argv[1])
    info = probe(video)
    spec = FeatureSpec()
    starts = sorted(s for seg in fixed_segments(info.duration_s, 5.0)
                    for s in clip_starts(seg, info.duration_s, spec.clip_fps,
                                         spec.clips_per_segment, spec.clip_frames))
    res: dict[str, object] = {"clips": len(starts)}

    def decode_all(thread_type: str, convert: bool = False) -> float:
        t0 = time.perf_counter()
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            s.thread_type = thread_type
            for f in c.decode(s):
                if convert:
                    f.to_ndarray(format="rgb24", width=171, height=128)
        return time.perf_counter() - t0

    res["pyav_all_frames_AUTO_s"] = decode_all("AUTO")
    res["pyav_all_frames_SLICE_s"] = decode_all("SLICE")
    res["pyav_all_frames_AUTO_convert_every_frame_s"] = decode_all("AUTO", convert=True)

    counts = {"seek": 0, "rewind": 0, "frames": 0}
    orig_seek, orig_rewind, orig_next = (v._ClipDecoder._seek, v._ClipDecoder._rewind,
                                         v._ClipDecoder._next)

    def seek(self, t):  # type: ignore[no-untyped-def]
        counts["seek"] += 1
        return orig_seek(self, t)

    def rewind(self):  # type: ignore[no-untyped-def]
        counts["rewind"] += 1
        return orig_rewind(self)

    def nxt(self):  # type: ignore[no-untyped-def]
        counts["frames"] += 1
        return orig_next(self)

    v._ClipDecoder._seek, v._ClipDecoder._rewind, v._ClipDecoder._next = seek, rewind, nxt

    def clips_s() -> float:
        t0 = time.perf_counter()
        for _ in v.decode_clips(video, starts, spec.clip_fps, spec.clip_frames):
            pass
        return time.perf_counter() - t0

    res["decode_clips_s"] = clips_s()
    res["decode_clips_counts"] = dict(counts)
    for key in counts:
        counts[key] = 0
    v.SEEK_AHEAD_S = 1e9  # never seek: decode straight through
    res["decode_clips_no_seek_s"] = clips_s()
    res["decode_clips_no_seek_counts"] = dict(counts)
    v.SEEK_AHEAD_S = 2.0
    orig_init = v._ClipDecoder.__init__

    def init_slice(self, container, path):  # type: ignore[no-untyped-def]
        orig_init(self, container, path)
        self.stream.thread_type = "SLICE"

    v._ClipDecoder.__init__ = init_slice
    for key in counts:
        counts[key] = 0
    res["decode_clips_SLICE_threads_s"] = clips_s()
    res["decode_clips_SLICE_counts"] = dict(counts)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
