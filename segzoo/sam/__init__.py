"""Promptable inference for Segment Anything models (``segzoo.models.sam.Sam``): point / box / mask
prompts on a cached image embedding (``predictor``: the ``PromptableModel`` mixin, or
``make_promptable(model)`` for a bare network), automatic whole-image mask generation
(``automatic.AutomaticMaskGenerator``, also ``model.generate_masks(image, ...)``) and the CLI's
argument parsing and output files (``outputs``)."""
from .predictor import PromptableModel, embed_image, make_promptable, predict_torch

__all__ = ["PromptableModel", "embed_image", "predict_torch", "make_promptable", "AutomaticMaskGenerator"]


def __getattr__(name):
    if name == "AutomaticMaskGenerator":
        from .automatic import AutomaticMaskGenerator
        return AutomaticMaskGenerator
    raise AttributeError(name)
