"""The user-facing model: a segzoo network plus the methods people call on it.

Networks (``segzoo.models``) know nothing of images, files or the Hub; the methods that do
(``predict``, ``save_pretrained``, ``push_to_hub``) live here, above inference and the hub, and
join a network through :func:`with_api`, which ``create_model`` applies. The class a model gets
is its network class with :class:`ModelAPI` mixed in, under the network class's name
(``type(model).__name__ == "OCRNet"``; ``isinstance(model, segzoo.models.Segmentor)`` holds).
Those classes are made on demand and are reachable as attributes of this module, so a model
pickles (``torch.save(model)``) and unpickles like any other.
"""
from __future__ import annotations

import torch.nn as nn

from . import hub
from . import inference as _inference
from .sam import PromptableModel
from .train import trainer as _trainer
from .train.recipe import Recipe
from . import models as _models  # a module, so that no network class name is an attribute here

__all__ = ["ModelAPI", "with_api", "api_class"]


class ModelAPI:
    """Methods of every model ``create_model`` returns (mixed into its network class)."""

    def predict(self, image, *, mode: str | None = None, crop_size=None, stride=None, scales=None,
                flip: bool | None = None, output: str = "labels", batch_size: int | None = None, device=None,
                score_device=None, resize=None, optimize: bool | None = None):
        """Segment ``image``: a path, PIL image, HxWx3 uint8 numpy array (float arrays: 0..255), or a
        list of those. Returns, at the input's size, an HxW int64 array of class ids
        (``output="labels"``), CxHxW float32 probabilities (``"probs"``) or logits (``"logits"``);
        a list for a list input.

        Unset arguments follow the model's record (its test protocol): ``mode`` ("whole" or
        "slide"), ``crop_size`` and ``stride`` of the slide windows (int or (h, w)), ``scales``
        (multi-scale), ``flip``, ``resize`` (the test-time resize; False skips it) and the
        normalisation. ``batch_size``: slide windows per forward pass; ``device``: move the model
        first; ``score_device``: where the full-size score buffer lives; ``optimize``: the CPU
        fast path for slide windows (None: where it pays). See ``segzoo.inference.predict``."""
        return _inference.predict(self, image, mode=mode, crop_size=crop_size, stride=stride, scales=scales,
                                  flip=flip, output=output, batch_size=batch_size, device=device,
                                  score_device=score_device, resize=resize, optimize=optimize)

    @property
    def recipe(self) -> Recipe:
        """The training recipe of the checkpoint this model was created from (``Recipe``: print it,
        ``recipe.replace(lr=...)`` for a changed copy; assign ``model.recipe = ...`` to make ``fit``
        use another by default)."""
        own = self.__dict__.get("_segzoo_recipe")
        return own if own is not None else Recipe.from_record(getattr(self, "record", None))

    @recipe.setter
    def recipe(self, value: Recipe) -> None:
        if not isinstance(value, Recipe):
            raise TypeError(f"model.recipe takes a segzoo.train.Recipe, got {type(value).__name__}")
        self.__dict__["_segzoo_recipe"] = value

    def fit(self, train, val=None, *, recipe: Recipe | None = None, out=None, resume=None, progress: bool = True,
            device=None, **overrides):
        """Train on ``train`` with ``recipe`` (default ``model.recipe``) changed by ``overrides``
        (recipe fields: ``iterations``, ``batch_size``, ``lr``, ``crop_size``, ``amp``, ...), validating
        on ``val``; see ``segzoo.train.fit``. Returns the history, best metrics and skipped steps."""
        return _trainer.fit(self, train, val, recipe=recipe or self.recipe, out=out, resume=resume,
                            progress=progress, device=device, **overrides)

    def evaluate(self, dataset, *, mode: str | None = None, crop_size=None, stride=None, scales=None,
                 flip: bool | None = None, resize=None, progress: bool = True, device=None) -> dict:
        """mIoU, mAcc, aAcc, mDice (percent) and per-class IoU on ``dataset`` with the record's test
        protocol, overridable as in ``predict``; see ``segzoo.train.evaluate``."""
        return _trainer.evaluate(self, dataset, mode=mode, crop_size=crop_size, stride=stride, scales=scales,
                                 flip=flip, resize=resize, progress=progress, device=device)

    def save_pretrained(self, save_directory, **kwargs):
        """Write ``model.safetensors``, ``config.json`` and a model card into ``save_directory``
        (see ``segzoo.hub.save_pretrained``); ``create_model("local-dir:<dir>")`` loads it back."""
        return hub.save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """``save_pretrained`` into a temporary folder and upload it (see ``segzoo.hub.push_to_hub``)."""
        return hub.push_to_hub(self, repo_id, **kwargs)


_CLASSES: dict[type, type] = {}


def api_class(cls: type) -> type:
    """``cls`` (a network class) with :class:`ModelAPI` mixed in; one class per network class."""
    if issubclass(cls, ModelAPI):
        return cls
    if cls not in _CLASSES:  # promptable networks (SAM): their predict takes prompts, before ModelAPI's
        bases = (PromptableModel, ModelAPI, cls) if getattr(cls, "promptable", False) else (ModelAPI, cls)
        _CLASSES[cls] = type(cls.__name__, bases, {"__module__": __name__, "__qualname__": cls.__name__,
                                                  "__doc__": cls.__doc__})
    return _CLASSES[cls]


def with_api(model: nn.Module) -> nn.Module:
    """Give ``model`` (built by ``segzoo.models.build_model``) the user-facing methods, in place."""
    model.__class__ = api_class(type(model))
    return model


def __getattr__(name: str):
    """``segzoo.api.<NetworkClass>``: how pickle finds a model's class (made on first use)."""
    for cls in (_models.Segmentor, *_models.SEGMENTORS.values()):
        if cls.__name__ == name:
            return api_class(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
