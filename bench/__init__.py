"""``python -m bench``: speed and memory of ``phd`` against the targets R1..R8.

Not part of the test suite. Inputs (videos, a RANDOM C3D weights file) are
generated once into ``bench/.inputs/``; every number is a median of several
runs on this machine, and each target is a ratio of two numbers measured in
the same run, so the machine's absolute speed cancels out.
"""
