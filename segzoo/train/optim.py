"""Optimizers with a recipe's parameter groups, and the learning-rate schedules the zoo trains with.

Parameter groups follow SSSegmentation 1.7.0's params constructors (``ssseg.modules.models.
optimizers.paramsconstructor``):

* ``params_rules = {key: {"lr_multiplier": a, "wd_multiplier": b}, ...}``: a parameter whose full
  name contains ``key`` (the longest key first) gets ``lr * a`` and ``weight_decay * b``; the others
  the base values. Keys are written in the reference's parameter names; segzoo's names differ, so
  a key means, in segzoo, the names a family lists for it (``PARAM_RULE_KEYS`` on a backbone or head
  class: ``{"convs": ["proj."]}`` on the Segformer head), else the key itself (``backbone_net`` is
  segzoo's ``backbone``).
* ``{"type": "LearningRateDecayParamsConstructor", "decay_type": "stage_wise" | "layer_wise" |
  "layer_wise_vit", "num_layers": n, "decay_rate": r}`` (and the Hub recipes' ``layer_decay``): the
  backbone's ``lr_decay_layer(name, n, decay_type)`` numbers each backbone parameter's layer ``i``;
  every other parameter is layer ``n + 1``; the group's lr is ``lr * r ** (n + 1 - i)``, no weight
  decay on 1-D parameters and biases.

Schedules (:class:`LRSchedule`): poly (``(1 - t/T) ** power * (lr - min_lr) + min_lr``, ``min_lr``
defaulting to ``lr / 100`` as in the reference) and cosine (by epoch or by iteration), each with
an optional constant / linear / exp warmup; each group's lr is its multiplier times the schedule's.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["param_groups", "build_optimizer", "LRSchedule"]

_OPTIMIZERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW,
               "Adadelta": torch.optim.Adadelta, "RMSprop": torch.optim.RMSprop, "NAdam": torch.optim.NAdam,
               "RAdam": torch.optim.RAdam}
_LR_DECAY = "LearningRateDecayParamsConstructor"


def _rule_patterns(model: nn.Module, key: str) -> list[tuple[str, str]]:
    """(module prefix, name fragment) pairs that the reference's rule key ``key`` stands for in segzoo's
    names (see the module doc): a parameter matches one when its name starts with the prefix and the
    rest contains the fragment."""
    found = []
    for name, module in model.named_modules():
        local = getattr(type(module), "PARAM_RULE_KEYS", {}).get(key)
        if local is not None:
            found += [(f"{name}." if name else "", p) for p in local]
    if found:
        return found
    if key == "backbone_net" or key.startswith("backbone_net."):
        return [("", "backbone." + key[len("backbone_net."):] if key != "backbone_net" else "backbone.")]
    return [("", key)]


def _matches(name: str, patterns) -> bool:
    return any(name.startswith(prefix) and fragment in name[len(prefix):] for prefix, fragment in patterns)


def _named_trainable(model: nn.Module):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: nn.Module, optimizer: Mapping[str, Any]) -> list[dict]:
    """The optimizer's parameter groups for ``model`` (trainable parameters only), each with its
    ``lr``, ``weight_decay`` (where the optimizer has one), ``lr_multiplier`` and ``names``."""
    lr = float(optimizer["lr"])
    wd = optimizer.get("weight_decay")
    rules = dict(optimizer.get("params_rules") or {})
    layer_decay = optimizer.get("layer_decay")
    if layer_decay:  # the Hub recipes' spelling of the same constructor
        rules = {"type": _LR_DECAY, "decay_type": layer_decay["type"], "num_layers": layer_decay["num_layers"],
                 "decay_rate": layer_decay["rate"]}
    params = _named_trainable(model)
    if not rules:
        group = {"params": [p for _, p in params], "names": [n for n, _ in params], "lr": lr, "lr_multiplier": 1.0}
        if wd is not None:
            group["weight_decay"] = float(wd)
        return [group]
    if rules.get("type", "DefaultParamsConstructor") == _LR_DECAY:
        return _lr_decay_groups(model, params, lr, float(wd or 0.0), rules)
    if rules.pop("type", "DefaultParamsConstructor") != "DefaultParamsConstructor":
        raise ValueError(f"unknown params_rules type {rules.get('type')!r}")
    order = sorted(sorted(rules), key=len, reverse=True)
    patterns = {key: _rule_patterns(model, key) for key in order}
    groups: dict[str, dict] = {}
    for name, p in params:
        key = next((k for k in order if _matches(name, patterns[k])), None)
        rule = rules[key] if key is not None else {}
        g = groups.setdefault(key or "", {"params": [], "names": [], "rule": key or "base",
                                          "lr_multiplier": float(rule.get("lr_multiplier", 1.0)),
                                          "lr": float(rule.get("lr_multiplier", 1.0)) * lr})
        if wd is not None:
            g["weight_decay"] = float(rule.get("wd_multiplier", 1.0)) * float(wd)
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def _lr_decay_groups(model, params, lr, wd, rules) -> list[dict]:
    n = int(rules["num_layers"])
    rate, kind = float(rules["decay_rate"]), rules["decay_type"]
    backbone = getattr(model, "backbone", None)
    layer_of = getattr(backbone, "lr_decay_layer", None)
    if layer_of is None:
        raise ValueError(f"{kind} learning-rate decay: the backbone {type(backbone).__name__} numbers no layers "
                         "(no lr_decay_layer)")
    groups: dict[str, dict] = {}
    for name, p in params:
        layer = layer_of(name[len("backbone."):], n, kind) if name.startswith("backbone.") else n + 1
        decay = not (p.ndim == 1 or name.endswith(".bias"))
        key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        scale = rate ** (n + 1 - layer)
        g = groups.setdefault(key, {"params": [], "names": [], "rule": key, "lr_multiplier": scale,
                                    "lr": scale * lr, "weight_decay": wd if decay else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, optimizer: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``torch.optim.<type>`` over :func:`param_groups` with the recipe's other options."""
    cfg = dict(optimizer)
    kind = cfg.pop("type")
    if kind not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(sorted(_OPTIMIZERS))}")
    groups = param_groups(model, optimizer)
    for key in ("params_rules", "layer_decay", "filter_params"):
        cfg.pop(key, None)
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    return _OPTIMIZERS[kind](groups, **cfg)


class LRSchedule:
    """The learning rate at each iteration; :meth:`apply` writes it into the optimizer's groups.

    ``schedule``: ``{"type": "poly" | "cosine" (or the zoo's PolyScheduler / CosineScheduler),
    "power", "min_lr", "warmup": {"type", "iters", "ratio"}, "by_epoch"}``."""

    def __init__(self, schedule: Mapping[str, Any], lr: float, max_iters: int, iters_per_epoch: int = 1):
        kind = str(schedule.get("type", "poly")).lower().replace("scheduler", "")
        if kind not in ("poly", "cosine"):
            raise ValueError(f"unknown LR schedule {schedule.get('type')!r}; known: poly, cosine")
        self.kind, self.lr, self.max_iters = kind, float(lr), int(max_iters)
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.max_epochs = max(1, math.ceil(self.max_iters / self.iters_per_epoch))
        min_lr = schedule.get("min_lr")
        self.min_lr = self.lr * 0.01 if min_lr is None else float(min_lr)
        self.power = float(schedule.get("power", 0.9))
        self.by_epoch = bool(schedule.get("by_epoch", True))
        self.warmup = schedule.get("warmup") or schedule.get("warmup_cfg")

    def lr_at(self, it: int) -> float:
        if self.kind == "poly":
            target = (1 - it / self.max_iters) ** self.power * (self.lr - self.min_lr) + self.min_lr
        else:
            frac = (it // self.iters_per_epoch) / self.max_epochs if self.by_epoch else it / self.max_iters
            target = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * frac))
        w = self.warmup
        if w and w["iters"] >= it:
            ratio, iters = float(w["ratio"]), float(w["iters"])
            if w["type"] == "constant":
                target *= ratio
            elif w["type"] == "linear":
                target *= 1 - (1 - it / iters) * (1 - ratio)
            elif w["type"] == "exp":
                target *= ratio ** (1 - it / iters)
            else:
                raise ValueError(f"unknown warmup type {w['type']!r}; known: constant, linear, exp")
        return target

    def apply(self, optimizer: torch.optim.Optimizer, it: int) -> float:
        lr = self.lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = group.get("lr_multiplier", 1.0) * lr
        return lr
