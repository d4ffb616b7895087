"""Training: recipes, losses, metrics and the loops behind ``model.fit`` / ``model.evaluate``."""
from .losses import SegmentationCriterion, build_loss
from .metrics import SegmentationMetrics
from .optim import LRSchedule, build_optimizer, param_groups
from .recipe import Recipe
from .trainer import evaluate, fit

__all__ = ["Recipe", "fit", "evaluate", "SegmentationCriterion", "build_loss", "SegmentationMetrics", "LRSchedule",
           "build_optimizer", "param_groups"]
