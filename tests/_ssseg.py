"""Build SSSegmentation reference segmentors from segzoo's bundled config data (CPU, BatchNorm)."""
from __future__ import annotations

import copy

import torch

from segzoo.zoo import load_data


def ssseg_config(config_name: str, **backbone_overrides) -> dict:
    cfg = copy.deepcopy(load_data("sssegmentation")[config_name]["config"])
    cfg["norm_cfg"] = {"type": "BatchNorm2d"}  # SyncBatchNorm needs a process group
    cfg["backbone"]["pretrained"] = False
    cfg["backbone"].update(backbone_overrides)
    if cfg["backbone"].get("norm_cfg", {}).get("type") == "SyncBatchNorm":
        cfg["backbone"]["norm_cfg"] = {"type": "BatchNorm2d"}
    cfg.setdefault("dataset", {"train": {"data_pipelines": []}})
    return cfg


def build_ssseg(config_name: str, seed: int = 0, **backbone_overrides):
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = ssseg_config(config_name, **backbone_overrides)
    torch.manual_seed(seed)
    model = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    randomize_(model, seed, calibrate=lambda: ssseg_logits(model, torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))))
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


def ssseg_logits(model, x: torch.Tensor) -> torch.Tensor:
    from ssseg.modules.utils import SSSegInputStructure
    with torch.no_grad():
        return model(SSSegInputStructure(images=x, mode="TEST")).seg_logits


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
