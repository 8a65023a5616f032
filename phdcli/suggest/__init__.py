"""``phd suggest``: the product pipeline, from inputs to written GIFs.

``pipeline.suggest_batch`` (the library entry point) runs a
``config.SuggestConfig`` over many inputs with one ``pipeline.Suggester``;
``picks`` turns a ranking into suggestions, ``outputs`` names, checks,
writes and remembers the files, ``report`` renders the contact sheet, and
``results`` holds what is returned (and printed as JSON). The top of the
product side: it imports every stage below it.
"""
