"""Datasets, captions, shards, cached embeddings and the training data pipeline."""
