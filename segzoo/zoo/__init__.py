"""Model records, one declarative module per source. Torch-free: imported to list models."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).with_name("data")


@lru_cache(maxsize=None)
def load_data(name: str) -> dict:
    return json.loads((_DATA / f"{name}.json").read_text())


def dataset_meta(dataset: str) -> dict:
    """``{num_classes, class_names, palette}`` of a dataset known to segzoo."""
    return load_data("datasets")[dataset]
