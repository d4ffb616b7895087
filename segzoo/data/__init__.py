"""Datasets (standard on-disk layouts and a folder dataset) and the training/test transforms."""
from __future__ import annotations

from .datasets import (ADE20K, DATASETS, IGNORE_INDEX, LIP, VOC, COCOStuff10k, Cityscapes, FolderDataset,
                       PascalContext, PascalContext59, SegmentationDataset, build_dataset, list_datasets,
                       register_dataset)
from .synthetic import ShapesDataset
from .transforms import TRANSFORMS, Compose, build_pipeline, register_transform

__all__ = ["ADE20K", "Cityscapes", "VOC", "PascalContext", "PascalContext59", "COCOStuff10k", "LIP", "FolderDataset",
           "SegmentationDataset", "ShapesDataset", "DATASETS", "IGNORE_INDEX", "build_dataset", "list_datasets",
           "register_dataset", "TRANSFORMS", "Compose", "build_pipeline", "register_transform"]
