"""How a batch's videos go through the stages, and how a failed input is recorded.

``run_in_order`` runs prepare -> rank -> finish for every input. With
``ahead`` 0 (the local engine) each video runs them back to back, as phd
always did. With ``ahead`` n (``--engine ray``) the next n videos are
prepared on the driver and ranked on threads of the driver, whose feature
requests the cluster's actors answer (``phdcli.suggest.rayrun``), while
the driver writes the oldest one: results, files and JSONL lines come per
video as its features arrive, in input order (the same stems, the same
order as the local engine), and the driver holds at most n videos, so its
memory stays flat in the number of inputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from phdcli.errors import PhdError
from phdcli.suggest.results import BatchResult, BatchStopped, Failure

log = logging.getLogger("phd")

P = TypeVar("P")
R = TypeVar("R")

# on_failure(failure): called as an input fails (--jsonl), the batch's stop included.
OnFailure = Callable[[Failure], None]

WAIT_S = 1.0  # the driver looks at the cluster's head this often while it waits


@dataclass
class Stages(Generic[P, R]):
    """The batch's stages for one input; ``failed(index, item, exc)`` records the input's
    failure or raises to stop the batch; ``tick`` runs while the driver waits."""

    prepare: Callable[[str], P]
    rank: Callable[[P], R]
    finish: Callable[[P, R], None]
    failed: Callable[[int, str, Exception], None]
    tick: Callable[[], None] = lambda: None


def run_in_order(items: Sequence[str], stages: Stages[P, R], ahead: int = 0) -> None:
    """Every item through the stages once, finished in input order (see the module)."""
    if ahead <= 0:
        for index, item in enumerate(items):
            try:
                video = stages.prepare(item)
                stages.finish(video, stages.rank(video))
            except (PhdError, OSError) as exc:
                stages.failed(index, item, exc)
        return
    pool = ThreadPoolExecutor(ahead, thread_name_prefix="phd-rank")
    # (index, item, prepared video, its ranking) or (index, item, None, why it failed):
    # a failure waits its turn, so that failures are told in input order too.
    window: deque[tuple[int, str, P | None, Future[R] | Exception]] = deque()
    todo = iter(enumerate(items))
    try:
        while True:
            while len(window) < ahead and (nxt := next(todo, None)) is not None:
                index, item = nxt
                try:
                    video = stages.prepare(item)
                except (PhdError, OSError) as exc:
                    window.append((index, item, None, exc))
                else:
                    window.append((index, item, video, pool.submit(stages.rank, video)))
            if not window:
                return
            index, item, video, ranked = window[0]
            try:
                while isinstance(ranked, Future) and not wait([ranked], timeout=WAIT_S).done:
                    stages.tick()
                stages.tick()
            except PhdError as exc:  # the cluster is lost: this and every later input fail
                stages.failed(index, item, exc)
                raise
            window.popleft()
            try:
                if isinstance(ranked, Exception):
                    raise ranked
                assert video is not None
                stages.finish(video, ranked.result())
            except (PhdError, OSError) as exc:
                stages.failed(index, item, exc)
    finally:  # a stopped batch: what is still queued never starts
        pool.shutdown(wait=False, cancel_futures=True)


def failure_message(item: str, exc: BaseException) -> str:
    """One line that names the input once (never ``clip.mp4: clip: ...``)."""
    if isinstance(exc, OSError) and not isinstance(exc, PhdError):
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{exc.strerror or type(exc).__name__}{where}"
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(item) else f"{item}: {text}"


def stop_batch(batch: BatchResult, remaining: Sequence[str], exc: PhdError,
               on_failure: OnFailure | None = None) -> NoReturn:
    """Stop the batch: every remaining input failed with ``exc``, said in BatchStopped."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    record_failures(batch, [Failure(item, message) for item in remaining], on_failure)
    raise BatchStopped(exc, batch) from exc


def record_failures(batch: BatchResult, failures: list[Failure],
                    on_failure: OnFailure | None) -> None:
    """Record failed inputs, each told to ``on_failure`` as it is recorded."""
    for failure in failures:
        batch.failures.append(failure)
        if on_failure is not None:
            on_failure(failure)
