"""The training recipe of a model: a typed, printable, editable record built from its zoo record."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Recipe"]

_DEFAULT_LOSSES = {"loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0},
                   "loss_aux": {"type": "CrossEntropyLoss", "scale_factor": 0.4}}


@dataclass(frozen=True)
class Recipe:
    """How a checkpoint was trained, in fields ``model.fit`` reads and overrides replace.

    ``batch_size`` is the total over all processes (``torchrun``: ``batch_size // world_size`` per
    process). ``iterations`` wins over ``epochs`` when both are set; with only ``epochs`` (the
    SSSegmentation configs), ``fit`` trains ``epochs * (len(train) // batch_size)`` iterations.
    ``train_pipeline`` is the zoo's list of ``[transform, options]``; its crop entries follow
    ``crop_size``. ``losses`` maps the model's loss names (``model.losses_of``) to loss configs
    (see ``segzoo.train.losses``). ``amp``: None, ``"fp16"`` (with a gradient scaler) or ``"bf16"``.
    """

    optimizer: str = "SGD"
    lr: float = 0.01
    weight_decay: float | None = 0.0005
    momentum: float | None = 0.9
    betas: tuple | None = None
    params_rules: Mapping[str, Any] = field(default_factory=dict)
    layer_decay: Mapping[str, Any] | None = None
    schedule: str = "poly"
    power: float = 0.9
    min_lr: float | None = None
    warmup: Mapping[str, Any] | None = None
    by_epoch: bool = True
    iterations: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    crop_size: tuple = (512, 512)
    train_pipeline: tuple = ()
    losses: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(_DEFAULT_LOSSES))
    amp: str | None = None
    clip_grad: Mapping[str, Any] | None = None
    ignore_index: int = 255
    sync_bn: bool = True
    freeze_bn: bool = False
    freeze_backbone: bool = False
    eval_interval: int | None = None
    save_interval: int | None = None
    log_interval: int = 50
    num_workers: int = 2
    seed: int = 0
    source: Mapping[str, Any] = field(default_factory=dict)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_record(cls, record) -> "Recipe":
        """The recipe of a model record (SSSegmentation config or a Hub record's published recipe);
        a record without one gets the defaults with the record's crop size and normalisation."""
        r = dict(record.recipe or {}) if record is not None else {}
        opt = dict(r.get("optimizer") or {})
        sched = dict(r.get("scheduler") or {})
        crop = tuple(r.get("crop_size") or (record.crop_size if record is not None else (512, 512)))
        amp = r.get("amp")
        pipeline = r.get("train_pipeline")
        if not isinstance(pipeline, (list, tuple)):
            pipeline = default_pipeline(record, crop)
        kw = dict(
            optimizer=opt.get("type", "SGD"), lr=float(opt.get("lr", 0.01)), weight_decay=opt.get("weight_decay"),
            momentum=opt.get("momentum"), betas=tuple(opt["betas"]) if opt.get("betas") else None,
            params_rules=dict(opt.get("params_rules") or {}), layer_decay=opt.get("layer_decay"),
            schedule=str(sched.get("type", "poly")).lower().replace("scheduler", ""),
            power=float(sched.get("power", 0.9)), min_lr=sched.get("min_lr"),
            warmup=sched.get("warmup_cfg") or sched.get("warmup"), by_epoch=bool(sched.get("by_epoch", True)),
            iterations=r.get("iterations"), epochs=sched.get("max_epochs"),
            batch_size=int(r.get("batch_size") or 16), crop_size=crop,
            train_pipeline=_freeze(pipeline), losses=copy.deepcopy(r.get("losses") or _DEFAULT_LOSSES),
            amp="fp16" if amp is True else (amp or None), clip_grad=sched.get("clipgrad_cfg"),
            source={"record": getattr(record, "name", None), "schedule": r.get("schedule"),
                    "pretrain": r.get("pretrain")},
        )
        return cls(**kw)

    def replace(self, **overrides) -> "Recipe":
        """A copy with some fields changed; unknown names get a suggestion."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in overrides:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; fields: {', '.join(names)}"
                raise TypeError(f"unknown recipe field {key!r}{hint}")
        if "crop_size" in overrides:
            c = overrides["crop_size"]
            overrides["crop_size"] = (int(c), int(c)) if isinstance(c, (int, float)) else tuple(int(v) for v in c)
        if "amp" in overrides and overrides["amp"] not in (None, False, "fp16", "bf16", True):
            raise ValueError(f"amp must be None, 'fp16' or 'bf16', got {overrides['amp']!r}")
        if overrides.get("amp") is True:
            overrides["amp"] = "fp16"
        if overrides.get("amp") is False:
            overrides["amp"] = None
        if "train_pipeline" in overrides:
            overrides["train_pipeline"] = _freeze(overrides["train_pipeline"])
        return dataclasses.replace(self, **overrides)

    # ---- what the loops read -----------------------------------------------------------------
    def optimizer_config(self) -> dict:
        cfg = {"type": self.optimizer, "lr": self.lr}
        for key in ("weight_decay", "momentum", "betas", "layer_decay"):
            if getattr(self, key) is not None:
                cfg[key] = getattr(self, key)
        if self.optimizer in ("Adam", "AdamW", "NAdam", "RAdam"):
            cfg.pop("momentum", None)
        else:
            cfg.pop("betas", None)
        cfg["params_rules"] = dict(self.params_rules)
        return cfg

    def schedule_config(self) -> dict:
        return {"type": self.schedule, "power": self.power, "min_lr": self.min_lr, "warmup": self.warmup,
                "by_epoch": self.by_epoch}

    def pipeline(self) -> list:
        """The train pipeline with its crop and padding sizes set to ``crop_size``."""
        out = []
        for name, opts in self.train_pipeline:
            opts = dict(opts)
            if name == "RandomCrop":
                opts["crop_size"] = list(self.crop_size)
            if name == "Padding":
                opts["output_size"] = list(self.crop_size)
            out.append([name, opts])
        return out

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    def __str__(self) -> str:
        lines = [f"Recipe ({self.source.get('record') or 'defaults'})"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "train_pipeline":
                value = " -> ".join(name for name, _ in value)
            elif f.name == "losses":
                value = ", ".join(f"{k}: {_loss_text(v)}" for k, v in value.items())
            lines.append(f"  {f.name:16s} {value}")
        return "\n".join(lines)


def _loss_text(cfg) -> str:
    cfgs = [cfg] if isinstance(cfg, Mapping) else list(cfg)
    return " + ".join(f"{c.get('scale_factor', 1.0)} x {c['type']}" for c in cfgs)


def _freeze(pipeline) -> tuple:
    return tuple((str(step[0]), dict(step[1])) for step in pipeline)


def default_pipeline(record, crop) -> list:
    """The standard mmsegmentation / SSSegmentation training pipeline for a record whose recipe
    describes its pipeline in words only: resize to the test scale times 0.5-2, random crop (at most
    75% one class), flip, photometric distortion, normalise, pad."""
    resize = ((record.inference or {}).get("resize") or {}) if record is not None else {}
    size = list(resize.get("size") or [2048, 512])
    norm = dict(record.normalization) if record is not None and record.normalization else \
        {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    return [["Resize", {"output_size": size, "keep_ratio": True, "scale_range": [0.5, 2.0]}],
            ["RandomCrop", {"crop_size": list(crop), "one_category_max_ratio": 0.75}],
            ["RandomFlip", {"prob": 0.5}], ["PhotoMetricDistortion", {}],
            ["Normalize", {"mean": list(norm["mean"]), "std": list(norm["std"])}], ["ToTensor", {}],
            ["Padding", {"output_size": list(crop), "data_type": "tensor"}]]
