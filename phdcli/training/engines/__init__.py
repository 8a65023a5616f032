"""Engines run the feature store's video jobs: one small interface, two implementations.

Like PySceneDetect's video backends, an engine is picked by name and hides
how the work is spread: ``local`` (default) runs it in this process, with
downloads and shot detection in threads ahead of C3D; ``ray`` spreads
download, decoding, C3D and writing over a Ray cluster (``pip install
'phdcli[ray]'``). Both run the same per-video code (``phdcli.training.jobs``)
and write the same store; the dataset build does not know which ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from phdcli.cluster.address import ENGINES
from phdcli.training.jobs import BuildContext, Outcome, VideoJob

# progress(stage, done, total); stages "videos" and "clips".
EngineProgress = Callable[[str, int, int], None]
OnOutcome = Callable[[Outcome], None]


class Engine(Protocol):
    name: str

    def run(self, jobs: Sequence[VideoJob], ctx: BuildContext, on_outcome: OnOutcome,
            progress: EngineProgress | None = None) -> None:
        """Run every job; report each video's outcome exactly once, as it ends."""


def get_engine(name: str, address: str | None = None) -> Engine:
    """The engine called ``name``; ``address`` is the Ray cluster to join (None: start one).

    The options are checked once, before any work, by ``cluster.address.check_engine_options``
    (``dataset.BuildConfig`` calls it: the user's one error line); an unknown
    name here is a caller's bug.
    """
    if name == "ray":
        from phdcli.training.engines.ray import RayEngine

        return RayEngine(address=address)
    if name != "local":
        raise ValueError(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")
    from phdcli.training.engines.local import LocalEngine

    return LocalEngine()
