"""The local engine: the whole build in this process, no Ray needed.

Fetching, probing and shot detection of the next videos run in a small
thread pool ahead of the main thread, which decodes (in a thread of its
own, ``FeatureExtractor.clip_features``) and runs C3D: no video waits for
all downloads, and the network is loaded once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from phdcli.training.engines import EngineProgress, OnOutcome
from phdcli.training.jobs import BuildContext, Outcome, Prepared, VideoJob, failed, finish, prepare

LOOKAHEAD = 2  # videos prepared ahead of the one in C3D


class LocalEngine:
    name = "local"

    def run(self, jobs: Sequence[VideoJob], ctx: BuildContext, on_outcome: OnOutcome,
            progress: EngineProgress | None = None) -> None:
        extractor = ctx.extractor()
        todo = iter(jobs)
        n_done = clips_done = 0
        clips_total = 0
        with ThreadPoolExecutor(LOOKAHEAD, thread_name_prefix="phd-prepare") as pool:
            ahead: deque[Future[Prepared | Outcome]] = deque()

            def top_up() -> None:
                while len(ahead) < LOOKAHEAD + 1 and (job := next(todo, None)) is not None:
                    ahead.append(pool.submit(prepare, job, ctx))

            top_up()
            while ahead:
                prep = ahead.popleft().result()
                top_up()
                if isinstance(prep, Prepared):
                    clips_total += len(prep.clip_starts_s)

                    def clip_progress(done: int, _total: int, base: int = clips_done,
                                      total: int = clips_total) -> None:
                        if progress is not None:
                            progress("clips", base + done, total)

                    try:
                        feats = (extractor.clip_features(prep.path, prep.clip_starts_s,
                                                         clip_progress)
                                 if len(prep.clip_starts_s) else np.zeros((0, 0), np.float32))
                    except Exception as exc:  # a corrupt file fails its video, not the build
                        outcome = failed(prep.job, "decode", exc, ctx.store())
                    else:
                        outcome = finish(prep, feats, ctx, extractor.runtime.describe())
                    clips_done += len(prep.clip_starts_s)
                else:
                    outcome = prep
                n_done += 1
                on_outcome(outcome)
                if progress is not None:
                    progress("videos", n_done, len(jobs))
