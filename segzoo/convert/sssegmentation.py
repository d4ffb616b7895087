"""SSSegmentation: config -> segzoo ``arch`` and checkpoint ``{'model': state_dict}`` -> segzoo keys.

Nothing here imports torch at module level: ``arch_from_config`` runs while listing models.
Backbone keys are handed to ``segzoo.models.backbones.<type>.convert_sssegmentation``.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable

from . import rename_key

__all__ = ["arch_from_config", "convert_state_dict", "BACKBONE_TRANSLATORS", "UnsupportedConfig"]


class UnsupportedConfig(ValueError):
    """An SSSegmentation config that segzoo cannot build exactly."""


def _check_defaults(bb: dict, **defaults) -> None:
    for key, value in defaults.items():
        if key in bb and bb[key] != value:
            raise UnsupportedConfig(f"{bb['type']} with {key}={bb[key]!r} is not ported (only {value!r})")


def _resnet(bb: dict) -> dict:
    _check_defaults(bb, contract_dilation=True, use_avg_for_downsample=False, style="pytorch", base_channels=64,
                    stem_channels=64, in_channels=3)
    return {"type": "resnet", "depth": int(bb["depth"]), "output_stride": int(bb.get("outstride", 8)),
            "deep_stem": bool(bb.get("use_conv3x3_stem", True))}


def _swin(bb: dict) -> dict:
    _check_defaults(bb, use_abs_pos_embed=False, patch_norm=True, in_channels=3, qk_scale=None, drop_rate=0.0,
                    attn_drop_rate=0.0)
    return {"type": "swin", "embed_dim": int(bb["embed_dims"]), "depths": list(bb["depths"]),
            "num_heads": list(bb["num_heads"]), "window_size": int(bb["window_size"]),
            "mlp_ratio": float(bb.get("mlp_ratio", 4)), "qkv_bias": bool(bb.get("qkv_bias", True)),
            "patch_size": int(bb.get("patch_size", 4)), "drop_path_rate": float(bb.get("drop_path_rate", 0.0))}


CONVNEXT_SIZES = {  # size -> (depths, dims)
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)), "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)), "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048))}


def _convnext(bb: dict) -> dict:
    _check_defaults(bb, gap_before_final_norm=False, in_channels=3, stem_patch_size=4)
    depths, dims = CONVNEXT_SIZES[bb["arch"]]
    out = {"type": "convnext", "depths": list(depths), "dims": list(dims),
           "layer_scale_init_value": float(bb.get("layer_scale_init_value", 1e-6)),
           "drop_path_rate": float(bb.get("drop_path_rate", 0.0))}
    if str(bb.get("structure_type", "")).endswith("_21k"):  # ImageNet-22k initialisation
        out["pretrained_tag"] = f"convnext_{bb['arch']}.fb_in22k"
    return out


def _mit(bb: dict) -> dict:
    _check_defaults(bb, num_stages=4, in_channels=3)
    heads = list(bb["num_heads"])
    return {"type": "mit", "embed_dims": [int(bb["embed_dims"]) * h for h in heads], "num_heads": heads,
            "depths": list(bb["num_layers"]), "sr_ratios": list(bb["sr_ratios"]),
            "patch_sizes": list(bb.get("patch_sizes", [7, 3, 3, 3])), "strides": list(bb.get("strides", [4, 2, 2, 2])),
            "mlp_ratio": float(bb.get("mlp_ratio", 4)), "qkv_bias": bool(bb.get("qkv_bias", True)),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.0)), "flavor": "sssegmentation"}


# ssseg backbone type -> function(backbone cfg) -> segzoo backbone cfg.
BACKBONE_TRANSLATORS: dict[str, Callable[[dict], dict]] = {
    "ResNet": _resnet, "SwinTransformer": _swin, "ConvNeXt": _convnext, "MixVisionTransformer": _mit}
_SEGMENTORS = {"FCN": "fcn", "PSPNet": "pspnet", "Deeplabv3": "deeplabv3", "Deeplabv3Plus": "deeplabv3plus",
               "UPerNet": "upernet", "Segformer": "segformer", "OCRNet": "ocrnet"}
_OCR_HEAD_KEYS = {"in_channels", "feats_channels", "transform_channels", "scale", "dropout"}


def arch_from_config(cfg: dict) -> dict:
    """Translate an SSSegmentation model config into segzoo's ``arch`` mapping."""
    seg_type, bb = cfg["type"], cfg["backbone"]
    if seg_type not in _SEGMENTORS:
        raise UnsupportedConfig(f"segmentor {seg_type} is not ported")
    if bb["type"] not in BACKBONE_TRANSLATORS:
        raise UnsupportedConfig(f"backbone {bb['type']} is not ported")
    backbone = BACKBONE_TRANSLATORS[bb["type"]](bb)
    sel = list(bb.get("selected_indices") or (0, 1, 2, 3))
    head = cfg["head"]
    if "feature2pyramid" in head:
        raise UnsupportedConfig("feature2pyramid necks are not ported")
    common = {"channels": int(head["feats_channels"]), "dropout": float(head.get("dropout", 0.1))}
    if seg_type == "FCN":
        decode = {"type": "fcn", "in_index": sel[-1], "num_convs": int(head.get("num_convs", 2)), **common}
    elif seg_type == "PSPNet":
        decode = {"type": "psp", "in_index": sel[-1], "pool_scales": list(head["pool_scales"]), **common}
    elif seg_type == "Deeplabv3":
        decode = {"type": "aspp", "in_index": sel[-1], "dilations": list(head["dilations"]), **common}
    elif seg_type == "Deeplabv3Plus":
        decode = {"type": "aspp", "in_index": sel[-1], "dilations": list(head["dilations"]), "separable": True,
                  "low_level_index": sel[0], "low_level_channels": int(head["shortcut_channels"]), **common}
    elif seg_type == "UPerNet":
        decode = {"type": "uper", "in_index": sel, "pool_scales": list(head["pool_scales"]), **common}
    elif seg_type == "OCRNet":
        if set(head) - _OCR_HEAD_KEYS:
            raise UnsupportedConfig(f"OCRNet head options {sorted(set(head) - _OCR_HEAD_KEYS)} are not ported")
        if head.get("scale", 1) != 1:  # ssseg then max-pools the attention's queries
            raise UnsupportedConfig(f"OCRNet with scale={head['scale']!r} is not ported (only 1)")
        if not isinstance(cfg.get("auxiliary"), dict):  # ssseg asserts one auxiliary head: the soft regions
            raise UnsupportedConfig("OCRNet without exactly one auxiliary head (its soft object regions) is not ported")
        decode = {"type": "ocr", "in_index": sel[-1], "transform_channels": int(head["transform_channels"]),
                  "scale": 1, **common}
    else:  # Segformer
        decode = {"type": "segformer", "in_index": sel, "proj": "conv", **common}
    aux_cfgs = cfg.get("auxiliary") or []
    if isinstance(aux_cfgs, dict):
        aux_cfgs = [aux_cfgs]
    aux_inputs = sel[:-1][-len(aux_cfgs):] if aux_cfgs else []
    aux = []
    for idx, a in zip(aux_inputs, aux_cfgs):
        if set(a) - {"in_channels", "out_channels", "dropout", "num_convs"}:
            raise UnsupportedConfig(f"auxiliary head options {sorted(a)} are not ported")
        aux.append({"type": "fcn", "in_index": idx, "channels": int(a["out_channels"]),
                    "num_convs": int(a.get("num_convs", 1)), "dropout": float(a.get("dropout", 0.1))})
    return {"segmentor": _SEGMENTORS[seg_type], "backbone": backbone, "decode_head": decode, "aux_heads": aux,
            "num_classes": int(cfg["num_classes"]), "align_corners": bool(cfg.get("align_corners", False))}


# ---- state dict -------------------------------------------------------------------------------
def _cna(src: str, dst: str) -> list[tuple[str, str]]:
    """Rules for an ssseg ``Sequential(conv, norm, act)`` at ``src`` -> segzoo ConvNormAct at ``dst``."""
    return [(rf"^{src}\.0\.", f"{dst}.conv."), (rf"^{src}\.1\.", f"{dst}.bn.")]


def _dsconv(src: str, dst: str) -> list[tuple[str, str]]:
    return [(rf"^{src}\.depthwise_conv\.", f"{dst}.depthwise.conv."), (rf"^{src}\.depthwise_bn\.", f"{dst}.depthwise.bn."),
            (rf"^{src}\.pointwise_conv\.", f"{dst}.pointwise.conv."), (rf"^{src}\.pointwise_bn\.", f"{dst}.pointwise.bn.")]


def _ppm(dst: str) -> list[tuple[str, str]]:
    return [(r"^ppm_net\.branches\.(\d+)\.1\.", rf"{dst}.stages.\1.conv."),
            (r"^ppm_net\.branches\.(\d+)\.2\.", rf"{dst}.stages.\1.bn."), *_cna(r"ppm_net\.bottleneck", f"{dst}.bottleneck")]


def _fcn_sequential(key: str, src: str, dst: str, num_convs: int) -> str | None:
    """ssseg FCN-style Sequential [conv, norm, act] * n + [dropout, classifier] -> segzoo FCNHead keys."""
    m = re.match(rf"^{src}\.(\d+)\.(.*)$", key)
    if not m:
        return None
    i, rest = int(m.group(1)), m.group(2)
    if i < 3 * num_convs and i % 3 < 2:
        return f"{dst}.convs.{i // 3}.{('conv', 'bn')[i % 3]}.{rest}"
    if i == 3 * num_convs + 1:
        return f"{dst}.classifier.{rest}"
    return None


_HEAD_RULES = {
    "pspnet": _ppm("decode_head.ppm") + [(r"^decoder\.1\.", "decode_head.classifier.")],
    "deeplabv3": [*_cna(r"aspp_net\.parallel_branches\.(\d+)", r"decode_head.aspp.branches.\1"),
                  (r"^aspp_net\.global_branch\.1\.", "decode_head.aspp.image_pool.conv."),
                  (r"^aspp_net\.global_branch\.2\.", "decode_head.aspp.image_pool.bn."),
                  *_cna(r"aspp_net\.bottleneck", "decode_head.aspp.bottleneck"),
                  (r"^decoder\.1\.", "decode_head.classifier.")],
    "upernet": _ppm("decode_head.ppm") + [
        *_cna(r"lateral_convs\.(\d+)", r"decode_head.lateral_convs.\1"),
        *_cna(r"fpn_convs\.(\d+)", r"decode_head.fpn_convs.\1"),
        *_cna(r"decoder", "decode_head.fpn_bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")],
    "segformer": [*_cna(r"convs\.(\d+)", r"decode_head.proj.\1"), *_cna(r"decoder", "decode_head.fuse"),
                  (r"^decoder\.4\.", "decode_head.classifier.")],
}


def _attention_project(src: str, dst: str, num_convs: int) -> list[tuple[str, str]]:
    """ssseg ``SelfAttentionBlock.buildproject`` (with norm): one conv is a flat Sequential(conv,
    norm, act), several a Sequential of them -> segzoo ``SelfAttention`` projection at ``dst``."""
    if num_convs == 1:
        return _cna(src, f"{dst}.0")
    return _cna(rf"{src}\.(\d+)", rf"{dst}.\1")


_OCR = r"object_context_block"
_HEAD_RULES["ocrnet"] = [
    *_cna(r"bottleneck", "decode_head.bottleneck"),
    *_attention_project(rf"{_OCR}\.key_project", "decode_head.object_context.attention.key_project", 2),
    *_attention_project(rf"{_OCR}\.query_project", "decode_head.object_context.attention.query_project", 2),
    *_attention_project(rf"{_OCR}\.value_project", "decode_head.object_context.attention.value_project", 1),
    *_attention_project(rf"{_OCR}\.out_project", "decode_head.object_context.attention.out_project", 1),
    *_cna(rf"{_OCR}\.bottleneck", "decode_head.object_context.bottleneck"),
    (r"^decoder\.1\.", "decode_head.classifier.")]
_HEAD_RULES["deeplabv3plus"] = [
    *_dsconv(r"aspp_net\.parallel_branches\.(\d+)", r"decode_head.aspp.branches.\1"),
    *_HEAD_RULES["deeplabv3"][:-1], *_cna("shortcut", "decode_head.low_level"),
    *_dsconv(r"decoder\.(\d)", r"decode_head.fuse.\1"), (r"^decoder\.3\.", "decode_head.classifier.")]


def convert_state_dict(sd: dict, arch: dict) -> dict:
    """Map an SSSegmentation segmentor state dict onto segzoo keys. Keys no rule knows are
    kept as they are, so that the strict load that follows names them."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    bb_type = arch["backbone"]["type"]
    bb_convert = importlib.import_module(f"segzoo.models.backbones.{bb_type}").convert_sssegmentation
    backbone = {k[len("backbone_net."):]: v for k, v in sd.items() if k.startswith("backbone_net.")}
    out = {f"backbone.{k}": v for k, v in bb_convert(backbone).items()}
    segmentor = arch["segmentor"]
    n_aux = len(arch.get("aux_heads", ()))
    for key, value in sd.items():
        if key.startswith("backbone_net."):
            continue
        new = None
        if key.startswith("auxiliary_decoder."):
            m = re.match(r"^auxiliary_decoder\.(\d+)\.(\d+\..*)$", key) if n_aux > 1 else None
            k_idx, rest = (int(m.group(1)), m.group(2)) if m else (0, key[len("auxiliary_decoder."):])
            if k_idx < n_aux:
                new = _fcn_sequential("a." + rest, "a", f"aux_heads.{k_idx}", arch["aux_heads"][k_idx]["num_convs"])
        elif segmentor == "fcn":
            new = _fcn_sequential(key, "decoder", "decode_head", arch["decode_head"]["num_convs"])
        else:
            new = rename_key(key, _HEAD_RULES[segmentor])
        out[new or key] = value
    return out
