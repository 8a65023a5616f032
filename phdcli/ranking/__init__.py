"""Scoring segments: the fused model and how a video's segments are ranked.

``model`` is the model file and its score (PHD-CA FNN + SVM-D + the
temporal ``prior``, pure numpy at inference); ``rank`` spends C3D where the
answer is decided (coarse to fine). Shared by ``suggest`` and ``training``;
above ``features``.
"""
