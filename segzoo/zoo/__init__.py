"""Model records, one declarative module per source. Torch-free: imported to list models."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).with_name("data")


@lru_cache(maxsize=None)
def load_data(name: str) -> dict:
    return json.loads((_DATA / f"{name}.json").read_text())


def record_modules() -> list[str]:
    """The modules that declare records: every public module of this package, SSSegmentation's
    last (its records take the suffix ``_ssseg`` where a Hub record already owns the name)."""
    import pkgutil
    names = sorted(i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_"))
    names.sort(key=lambda n: n == "sssegmentation")
    return [f"{__name__}.{n}" for n in names]


def dataset_meta(dataset: str) -> dict:
    """``{num_classes, class_names, palette}`` of a dataset known to segzoo."""
    return load_data("datasets")[dataset]
