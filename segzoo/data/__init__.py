"""Datasets (standard on-disk layouts and a folder dataset) and the training/test transforms."""
