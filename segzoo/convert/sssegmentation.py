"""SSSegmentation: config -> segzoo ``arch``, and checkpoint ``{'model': state_dict}`` -> segzoo keys.

A dispatcher only: each backbone and head file declares its own translation and key rules
(``segzoo.models.foreign``); the auxiliary FCN heads are ``segzoo.models.heads.fcn``'s.
``scripts/build_zoo_data.py`` runs :func:`arch_from_config` over the zoo and stores each built
record's ``arch`` in ``segzoo/zoo/data/sssegmentation.json``, so listing models never runs it.
"""
from __future__ import annotations

from ..errors import UnsupportedConfig
from ..models import backbone_family
from ..models.foreign import SSSEG_BACKBONES, SSSEG_SEGMENTORS, rename_key, ssseg_segmentor_for
from ..models.heads.fcn import aux_from_ssseg, aux_key_rules

__all__ = ["arch_from_config", "convert_state_dict", "UnsupportedConfig"]

_NECK = "feats_to_pyramid_net."  # SSSegmentation's Feature2Pyramid (head.feature2pyramid), part of segzoo's backbone


def arch_from_config(cfg: dict) -> dict:
    """Translate an SSSegmentation model config into segzoo's ``arch`` mapping; raises
    :class:`UnsupportedConfig` with the reason where segzoo cannot build it exactly."""
    seg_type, bb = cfg["type"], cfg["backbone"]
    if seg_type not in SSSEG_SEGMENTORS:
        raise UnsupportedConfig(f"segmentor {seg_type} is not ported")
    if bb["type"] not in SSSEG_BACKBONES:
        raise UnsupportedConfig(f"backbone {bb['type']} is not ported")
    backbone = SSSEG_BACKBONES[bb["type"]](bb)
    sel = list(bb.get("selected_indices") or (0, 1, 2, 3))
    if "feature2pyramid" in cfg["head"]:  # a neck after the backbone, built by the backbone family where it has one
        neck_from_ssseg = getattr(backbone_family(backbone["type"]), "feature2pyramid_from_ssseg", None)
        if neck_from_ssseg is None:
            raise UnsupportedConfig("feature2pyramid necks are not ported")
        backbone = neck_from_ssseg(backbone, cfg)
    spec = SSSEG_SEGMENTORS[seg_type]
    decode = spec.decode_head(cfg, sel)
    if spec.backbone is not None:  # a segmentor whose encoder wraps the backbone (ICNet)
        backbone = spec.backbone(cfg, backbone)
    aux = spec.aux_heads(cfg, sel) if spec.aux_heads is not None else aux_from_ssseg(cfg, sel)
    return {"segmentor": spec.segmentor, "backbone": backbone, "decode_head": decode, "aux_heads": aux,
            "num_classes": int(cfg["num_classes"]),
            "align_corners": bool(cfg.get("align_corners", False))}


def convert_state_dict(sd: dict, arch: dict) -> dict:
    """Map an SSSegmentation segmentor state dict onto segzoo keys. Keys no rule knows are
    kept as they are, so that the strict load that follows names them."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    family = backbone_family(arch["backbone"]["type"])
    backbone = {k[len("backbone_net."):]: v for k, v in sd.items() if k.startswith("backbone_net.")}
    backbone.update((k, v) for k, v in sd.items() if k.startswith(_NECK))  # the family converts its neck too
    out = {f"backbone.{k}": v for k, v in family.convert_sssegmentation(backbone).items()}
    rules = [*aux_key_rules(arch), *ssseg_segmentor_for(arch["segmentor"]).key_rules(arch)]
    for key, value in sd.items():
        if not key.startswith(("backbone_net.", _NECK)):
            out[rename_key(key, rules) or key] = value
    return out
