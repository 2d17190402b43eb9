"""LiT-tune vision-language models for species identification.

A library (captions, shards, model, training, zero-shot evaluation) plus thin CLIs.
Nothing here imports `launcher` or submitit.
"""

__version__ = "0.1.0"
