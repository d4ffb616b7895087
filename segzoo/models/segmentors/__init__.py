"""Segmentors whose heads compose differently from the generic backbone -> decode head; each file
registers its class with ``register_segmentor`` and this package imports them all."""
from .._registry import import_submodules

import_submodules(__name__, __path__)
