"""The bundled ranking model and its card (README.md), installed as ``phdcli.bundled``.

pyproject.toml maps this folder to that package so that a wheel carries the
files and ``importlib.resources`` finds them wherever phd is installed; read
them through ``phdcli.paths.bundled_file``, never by a path next to the code.
"""
