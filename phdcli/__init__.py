"""phd: personalized highlight detection for automatic GIF creation.

A library first; ``phdcli.cli`` is a thin command line over it. The product
is a pipeline of stages, one package each, every package importing only
from the layers below it (``tests/test_layout.py`` holds the order and
fails on a loop or an upward import)::

    cli           flags -> a validated config -> one library call; exit codes
    doctor        what phd runs with, whether each part works, cache upkeep
    suggest       the phd suggest pipeline: picks, outputs, report
    training      PHD^2 annotations -> feature store -> trained model file
    cluster       Ray for both: joining, its failures as phd errors, C3D actors
    history       a user's GIFs, and what phd remembers of its own outputs
    ranking       the fused model (PHD-CA + SVM-D + temporal prior), coarse to fine
    features      C3D: weights, device and precision (probe), int8, clip cache, extractor
    sources       inputs: files, folders, URLs (yt-dlp, watched), heatmaps
    media         ffmpeg and PyAV: probe, decode clips, segments, write GIFs
    config, fsutil, procs, paths, defaults, errors   the cross-cutting ground

Nothing heavy is imported here so that ``phd --help`` stays fast.
"""

__version__ = "0.1.0"

# Log level of the lines that stay on stderr when it is not a terminal (the
# device and precision in use); plain INFO lines show only on a terminal.
NOTICE = 25
