"""Datasets, paired-folder discovery and blur synthesis."""
