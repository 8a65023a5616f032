"""Media in and out: ffmpeg and PyAV, and nothing of phd's model.

``probe`` opens and checks a file (against the pixel budget of ``budget``
and the GIF block layout of ``gif_layout``), ``decode`` decodes only the
clips asked for, ``segments`` cuts a timeline (fixed or detected shots),
``gifs`` writes a looping GIF / mp4 / WebP of a span with the command lines
``ffgraph`` builds and ``ffmpeg`` runs; ``thumbs`` makes the small stills a
report shows of history GIFs. Imports only the cross-cutting modules
(errors, paths, fsutil, procs).
"""
