"""Checkpoint formats: detection and conversion of foreign state dicts to segzoo keys.

One module per foreign format; each exposes ``convert_state_dict(sd, arch) -> sd``. The "timm"
format is an ImageNet classifier of the backbone alone (timm's; for MiT, which timm lacks,
transformers' ``SegformerForImageClassification``): each backbone family's ``convert_timm`` maps it,
dropping exactly that classifier's keys, and it loads into the backbone only.
"""
from __future__ import annotations

from ..models import backbone_family
from ..models.foreign import TRANSFORMERS_KEY_PREFIXES, rename_key

__all__ = ["detect_format", "to_segzoo", "rename_key", "FORMATS"]

FORMATS = ("segzoo", "sssegmentation", "transformers", "timm", "sam", "mobilesam")


def detect_format(sd: dict) -> str:
    """Guess a checkpoint's format from its keys."""
    from ..models.sam.convert import detect_format as sam_format
    fmt = sam_format(sd)  # Segment Anything's layouts (Meta's, MobileSAM's, transformers')
    if fmt is not None:
        return fmt
    if "model" in sd and isinstance(sd["model"], dict):
        return "sssegmentation"
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd]
    if any(k.startswith("backbone_net.") for k in keys):
        return "sssegmentation"
    if TRANSFORMERS_KEY_PREFIXES and any(k.startswith(tuple(TRANSFORMERS_KEY_PREFIXES)) for k in keys):
        return "transformers"  # a family's own transformers prefix (see foreign.transformers_segmentor)
    if any(k.startswith(("decode_head.", "aux_heads.")) for k in keys) and any(k.startswith("backbone.") for k in keys) \
            and not any(k.startswith("auxiliary_head.") for k in keys) \
            and not any(".batch_norm." in k or "linear_c." in k for k in keys):
        return "segzoo"
    if any(k.startswith("segformer.") for k in keys) and not any(k.startswith("decode_head.") for k in keys):
        # a Segformer encoder without a decode head: MiT's ImageNet classifier (transformers'
        # SegformerForImageClassification, ``nvidia/mit-b*``), a backbone-only checkpoint like timm's
        return "timm"
    if any(k.startswith(("segformer.", "auxiliary_head.")) for k in keys) or any(
            ".batch_norm." in k or k.startswith("decode_head.linear_c") for k in keys):
        return "transformers"
    if not any(k.startswith(("backbone.", "decode_head.")) for k in keys):
        return "timm"
    return "segzoo"


def to_segzoo(sd: dict, arch: dict, fmt: str | None = None) -> tuple[dict, str]:
    """Convert ``sd`` (any known format) to segzoo keys; returns (state_dict, format)."""
    if arch.get("segmentor") == "sam":  # every SAM layout has its own converter
        from ..models.sam.convert import convert_state_dict as sam_convert
        return sam_convert(sd, arch, fmt)
    fmt = fmt or detect_format(sd)
    if fmt == "segzoo":
        return dict(sd), fmt
    if fmt == "sssegmentation":
        from . import sssegmentation
        return sssegmentation.convert_state_dict(sd, arch), fmt
    if fmt == "transformers":
        from . import transformers
        return transformers.convert_state_dict(sd, arch), fmt
    if fmt == "timm":  # an ImageNet classifier of the backbone: its classifier keys are dropped
        kind = arch["backbone"]["type"]
        conv = getattr(backbone_family(kind), "convert_timm", None)
        if conv is None:
            raise ValueError(f"{kind} backbones have no ImageNet classifier format to load")
        return {f"backbone.{k}": v for k, v in conv(sd).items()}, fmt
    raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
