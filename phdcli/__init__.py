"""phd: personalized highlight detection for automatic GIF creation.

A library first (``phdcli.suggest.suggest``, ``phdcli.history``,
``phdcli.training.evaluate``); ``phdcli.cli`` is a thin command line over it. Nothing
heavy is imported here so that ``phd --help`` stays fast.
"""

__version__ = "0.1.0"

# Log level of the lines that stay on stderr when it is not a terminal (the
# device and precision in use); plain INFO lines show only on a terminal.
NOTICE = 25
