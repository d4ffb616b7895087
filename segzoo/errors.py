"""segzoo's exception classes, importable without torch (``from segzoo import InvalidImageError``).

Each one names what went wrong in its first line; where there is more to say (the sources a
download tried, the keys a checkpoint lacks) it follows on the lines below.
"""
from __future__ import annotations

__all__ = ["UnknownModelError", "InvalidImageError", "WeightsUnavailableError", "ChecksumMismatchError",
           "CheckpointMismatchError", "UnsupportedConfig"]


class UnknownModelError(KeyError):
    """A model name that is not registered; the message names the closest ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidImageError(ValueError):
    """An input that cannot be read as an RGB image; the message says why in one line."""


class WeightsUnavailableError(RuntimeError):
    """No source of a checkpoint could serve it (gone, unreachable, offline and not cached)."""


class ChecksumMismatchError(RuntimeError):
    """A downloaded file whose sha256 differs from the one the record or the ledger knows."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model exactly."""


class UnsupportedConfig(ValueError):
    """A foreign (SSSegmentation) config that segzoo cannot build exactly; the message says which option."""
