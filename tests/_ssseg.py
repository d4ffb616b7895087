"""Build SSSegmentation reference segmentors from segzoo's bundled config data (CPU, BatchNorm)."""
from __future__ import annotations

import copy

import torch

from segzoo.zoo import load_data


def ssseg_config(config_name: str, **backbone_overrides) -> dict:
    cfg = copy.deepcopy(load_data("sssegmentation")[config_name]["config"])
    # SyncBatchNorm needs a process group in training; PointRend's point head normalises (N, C, P)
    # point features, which BatchNorm2d refuses and SyncBatchNorm (plain batch norm without a
    # process group) takes
    cfg["norm_cfg"] = {"type": "SyncBatchNorm" if cfg["type"] == "PointRend" else "BatchNorm2d"}
    cfg["backbone"]["pretrained"] = False
    if cfg["backbone"]["type"] == "VisionTransformer":
        # jx_vit_large_p16_384 pins drop_rate=0.1 while every zoo config sets 0.0: the reference
        # asserts; a custom structure name lifts the pin (the released checkpoints predate it)
        cfg["backbone"]["structure_type"] = "vit_custom"
    if cfg["backbone"]["type"] == "MobileViTV2" and "arch" not in cfg["backbone"]:
        # the width is named only in structure_type, which the reference ignores (it would build its
        # default 0.5 width); segzoo reads it from there: the reference is given it explicitly
        cfg["backbone"]["arch"] = cfg["backbone"]["structure_type"]
    cfg["backbone"].update(backbone_overrides)
    if cfg["backbone"].get("norm_cfg", {}).get("type") == "SyncBatchNorm":
        cfg["backbone"]["norm_cfg"] = {"type": "BatchNorm2d"}
    cfg.setdefault("dataset", {"train": {"data_pipelines": []}})
    return cfg


class MMCVCrissCrossAttention(torch.nn.Module):
    """``mmcv.ops.CrissCrossAttention(in_channels)``: mmcv's parameters, segzoo's plain-PyTorch operator."""

    def __init__(self, in_channels: int):
        super().__init__()
        from ssseg.modules.models.backbones import Scale
        self.query_conv = torch.nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = torch.nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = torch.nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = Scale(0.)
        self.in_channels = in_channels

    def forward(self, x):
        from segzoo.models.heads.cc import criss_cross_attention
        out = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return self.gamma(out) + x


class MMCVPSAMask(torch.nn.Module):
    """``mmcv.ops.PSAMask(psa_type, mask_size)``: segzoo's plain-PyTorch operator."""

    def __init__(self, psa_type: str, mask_size=None):
        super().__init__()
        assert psa_type in ("collect", "distribute")
        self.psa_type, self.mask_size = psa_type, mask_size

    def forward(self, x):
        from segzoo.models.heads.psa import psa_mask
        return psa_mask(x, self.psa_type, self.mask_size)


def install_fvcore_stand_in() -> None:
    """SSSegmentation's Mask2Former imports ``fvcore.nn.weight_init`` (not installed) for its
    initialisation only: a stand-in with detectron2's ``c2_xavier_fill`` where fvcore is missing."""
    import sys
    import types
    try:
        import fvcore.nn.weight_init  # noqa: F401
        return
    except ImportError:
        pass

    def c2_xavier_fill(module):  # detectron2's: kaiming_uniform_(a=1), zero bias
        torch.nn.init.kaiming_uniform_(module.weight, a=1)
        if module.bias is not None:
            torch.nn.init.constant_(module.bias, 0)
    weight_init = types.ModuleType("fvcore.nn.weight_init")
    weight_init.c2_xavier_fill = c2_xavier_fill
    fv, fv_nn = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")
    fv.nn, fv_nn.weight_init = fv_nn, weight_init
    sys.modules.update({"fvcore": fv, "fvcore.nn": fv_nn, "fvcore.nn.weight_init": weight_init})


def install_plain_ops() -> None:
    """The reference imports CCNet's, PSANet's and PointRend's operators from mmcv (compiled, absent
    here: the names hold None). Put segzoo's plain-PyTorch versions, each tested against a written-out
    computation of its definition (tests/test_ops_*.py), in their place, with mmcv's signatures."""
    import ssseg.modules.models.segmentors.ccnet.ccnet as ccnet
    import ssseg.modules.models.segmentors.pointrend.pointrend as pointrend
    import ssseg.modules.models.segmentors.psanet.psanet as psanet
    from segzoo.models.heads.pointrend import point_sample
    ccnet.CrissCrossAttention = MMCVCrissCrossAttention
    psanet.PSAMask = MMCVPSAMask
    pointrend.PointSample = point_sample
    install_fvcore_stand_in()  # Mask2Former: its deformable attention falls back to segzoo's operator
    import ssseg.modules.models.segmentors.mask2former.transformers.pixeldecoder as pixeldecoder
    from segzoo.models.heads.msdeform_attn import multi_scale_deformable_attention
    pixeldecoder.MSDeformAttnFunction = None
    pixeldecoder.ms_deform_attn_core_pytorch = multi_scale_deformable_attention


def build_ssseg(config_name: str, seed: int = 0, calibration_size=(2, 96, 128), **backbone_overrides):
    """The reference segmentor of ``config_name`` (random weights and BatchNorm statistics, measured on
    random images of ``calibration_size`` (N, H, W); mmcv's operators replaced by segzoo's, see
    :func:`install_plain_ops`)."""
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    install_plain_ops()
    cfg = ssseg_config(config_name, **backbone_overrides)
    torch.manual_seed(seed)
    model = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    n, h, w = calibration_size
    randomize_(model, seed, calibrate=lambda: ssseg_logits(
        model, torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))))
    return model.eval(), cfg


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def randomize_(model: torch.nn.Module, seed: int = 0, calibrate=None) -> None:
    """Random weights everywhere, BatchNorm statistics and affine parameters included.

    With ``calibrate`` (a callable running one forward pass), BatchNorm statistics are first
    measured on random data and then jittered, so activations keep unit scale through deep
    networks and the logits carry a strong input-dependent signal (a parity test that cannot
    see a wrong padding or dilation is no test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # initialisers leave biases at 0: exercise them too
            if p.ndim == 1 and torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif p.ndim == 0 and p == 0:  # attention gates (``Scale``/``gamma``) start at 0: open them
                p.fill_(float(torch.rand((), generator=g)) * 0.5 + 0.5)
        bns = _batchnorms(model)
        if calibrate is not None and bns:
            saved = [(m.training, m.momentum) for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
                m.train()
            calibrate()
            for m, (training, momentum) in zip(bns, saved):
                m.train(training)
                m.momentum = momentum
        for m in bns:
            if calibrate is not None:
                std = m.running_var.sqrt()
                m.running_mean.add_(torch.randn(m.num_features, generator=g) * 0.1 * std)
                m.running_var.mul_(torch.rand(m.num_features, generator=g) * 0.4 + 0.8)
            else:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def load_reference(ref, config_name: str, tmp_path, **create_kwargs):
    """segzoo's model of ``config_name`` with the reference ``ref``'s weights: ``ref`` saved as
    SSSegmentation writes checkpoints, loaded strictly through ``create_model(<its segzoo name>,
    checkpoint=...)``."""
    import segzoo
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    try:  # the config name is an alias of its record (``_ssseg`` where a Hub record owns the plain name)
        return segzoo.create_model(config_name, checkpoint=path, **create_kwargs)
    finally:
        path.unlink()  # a sweep of hundreds of ResNet-101 checkpoints would fill the disk


def compare_logits(model, ref, x: torch.Tensor, num_classes: int):
    """Eval logits of segzoo's ``model`` and the reference ``ref`` on ``x``: same shape, ``num_classes``
    channels, relative difference <= 1e-4; returns (ours, theirs)."""
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape and ours.shape[:2] == (x.shape[0], num_classes)
    assert rel_diff(ours, theirs) <= 1e-4
    return ours, theirs


def check_train_outputs(model, num_classes: int, size=(64, 96), num_aux: int = 1) -> dict:
    """Train-mode outputs of the generic kind: ``logits`` and ``num_aux`` auxiliary logits, all at
    the head's resolution (the backbone's last reduction) for a (2, 3, *size) input; returns them."""
    model.train()
    out = model(torch.randn(2, 3, *size))
    stride = model.backbone.reductions[-1]
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == num_aux
    shape = (2, num_classes, size[0] // stride, size[1] // stride)
    assert out["logits"].shape == shape and all(a.shape == shape for a in out["aux_logits"])
    return out


def hook_outputs(pairs) -> dict:
    """Forward hooks on (ours, theirs) module pairs: ``seen[("ours" | "theirs", i)]`` holds the
    i-th pair's latest outputs, to compare a head's inner blocks with the reference's."""
    seen = {}
    for i, (ours, theirs) in enumerate(pairs):
        ours.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(("ours", i), o))
        theirs.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(("theirs", i), o))
    return seen


def ssseg_logits(model, x: torch.Tensor) -> torch.Tensor:
    from ssseg.modules.utils import SSSegInputStructure
    with torch.no_grad():
        return model(SSSegInputStructure(images=x, mode="TEST")).seg_logits


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
