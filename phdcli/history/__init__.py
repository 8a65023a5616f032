"""A user's history: the GIFs they made before, and phd's memory of its own outputs.

``store.History`` is a profile folder (or any folder of GIFs) with its
manifest rows (``items``); ``adding`` is ``phd history add``, which keeps
phd's own outputs using their ``records`` (provenance and feature, checked
through ``vectors``); ``kept`` says which spans of a video were kept.
Above ``features`` and ``ranking`` (the model's spec decides the features).
"""
