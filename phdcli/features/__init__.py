"""C3D features of segments and GIFs: the expensive stage, cached clip by clip.

``extractor.FeatureExtractor`` is the face. Its parts, one job each:
``spec`` (what a feature is), ``clips`` (which clips a request needs, pure
numpy), ``cache`` (clip tables on disk, checked), ``registry`` (which
weights file, fetching it) and ``weights`` (loading, converting), ``device``
and ``precision`` (where and how C3D runs), ``precision_probe`` (``auto``'s CPU
precision: the fastest candidate that passes the self-check), ``int8`` (OpenVINO),
``c3d_spec`` / ``c3d`` (the network) and ``network`` (running it, decoding
ahead). Above ``media``; nothing here knows of users or ranking.
"""
