"""Looking after an install: ``about`` (what phd runs with: ``phd --version``,
``doctor --json``), ``checks`` (``phd doctor``: each part, and the fix),
``torchbuild`` (whether the torch build suits the machine; shared with the
checkout's installer) and ``prune`` (``phd cache prune``: what the cache
holds that nothing reads).
Above the pipeline: it looks at every part of it.
"""
