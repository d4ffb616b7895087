"""PointRend head: a coarse Semantic FPN prediction refined at its most uncertain points by a point
head (an MLP of 1x1 convolutions over the fine features and the coarse class scores sampled there).

Eval mode (``forward``) runs the test-time subdivision: ``subdivision_steps`` times, the current
logits are upsampled by ``subdivision_scale`` and the ``subdivision_points`` most uncertain pixels
(smallest margin between the two best class scores) are replaced by the point head's prediction.
Training (``forward_train``) predicts at points drawn by importance sampling over the coarse
uncertainty (``sample_points``); the loss compares them with the labels sampled at the same points.

The point operations are plain PyTorch: :func:`point_sample` (mmcv's ``point_sample``: bilinear
``grid_sample`` at points in [0, 1] coordinates), :func:`uncertainty`, :func:`most_uncertain_points`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import UnsupportedConfig, check_options, ssseg_segmentor
from .base import DecodeHead, register_head
from .fpn import FPNHead, fpn_head_from_ssseg, fpn_head_rules, fpn_neck_from_ssseg, fpn_neck_rules

__all__ = ["point_sample", "uncertainty", "most_uncertain_points", "sample_points", "PointRendHead"]


def point_sample(x: torch.Tensor, points: torch.Tensor, align_corners: bool = False, mode: str = "bilinear",
                 padding_mode: str = "zeros") -> torch.Tensor:
    """``x`` (N, C, H, W) sampled at ``points`` (N, P, 2) or (N, Hp, Wp, 2), (x, y) in [0, 1] of the
    map's extent (``align_corners`` as in ``grid_sample``; outside: ``padding_mode``) -> (N, C, P) or
    (N, C, Hp, Wp). The same as mmcv's ``point_sample``."""
    squeeze = points.dim() == 3
    grid = (points.unsqueeze(2) if squeeze else points).to(x.dtype)  # float32 points sample a float64 map too
    out = F.grid_sample(x, grid * 2.0 - 1.0, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return out.squeeze(3) if squeeze else out


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Per location, the second-best minus the best class score (<= 0; closer to 0 is more
    uncertain): (N, C, ...) -> (N, 1, ...)."""
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def most_uncertain_points(logits: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(num_points, H * W)`` most uncertain pixels of ``logits`` (N, C, H, W): their flat
    indices (N, P), most uncertain first, and their centres (N, P, 2) as (x, y) in [0, 1]."""
    n, _, h, w = logits.shape
    scores = uncertainty(logits).view(n, h * w)
    index = scores.topk(min(h * w, int(num_points)), dim=1)[1]
    h_step, w_step = 1.0 / h, 1.0 / w
    xs = w_step / 2.0 + (index % w).to(logits.dtype) * w_step
    ys = h_step / 2.0 + (index // w).to(logits.dtype) * h_step
    return index, torch.stack([xs, ys], dim=2)


def sample_points(logits: torch.Tensor, num_points: int, oversample_ratio: float = 3,
                  importance_sample_ratio: float = 0.75) -> torch.Tensor:
    """Training points (N, num_points, 2) in [0, 1] for coarse ``logits`` (N, C, H, W): of
    ``num_points * oversample_ratio`` uniform random points, the ``importance_sample_ratio`` share
    most uncertain (their logits sampled bilinearly), then uniform random points for the rest."""
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device, dtype=logits.dtype)
    scores = uncertainty(point_sample(logits, coords))[:, 0]  # (n, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    index = scores.topk(num_uncertain, dim=1)[1]
    points = torch.gather(coords, 1, index.unsqueeze(2).expand(-1, -1, 2))
    if num_points > num_uncertain:
        extra = torch.rand(n, num_points - num_uncertain, 2, device=logits.device, dtype=logits.dtype)
        points = torch.cat([points, extra], dim=1)
    return points


class _PointFC(nn.Sequential):
    """Conv1d (1x1, no bias) -> BatchNorm1d -> ReLU over (N, C, points)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU(inplace=True)


@register_head("pointrend")
class PointRendHead(DecodeHead):
    """``coarse``: an :class:`FPNHead` (``coarse_channels`` wide, ``feature_strides``,
    ``coarse_dropout``) over the levels ``in_index``; the point head reads the finest of them
    (``in_index[0]``) and the coarse logits at each point: ``num_fcs`` 1x1 ``_PointFC`` of ``channels``
    (the coarse scores concatenated again after each when ``coarse_pred_each_layer``), dropout and
    a 1x1 Conv1d classifier. Subdivision (eval) and point sampling (train) options: see the module."""

    def __init__(self, in_channels, num_classes, channels=256, num_fcs=3, coarse_pred_each_layer=True,
                 coarse_channels=128, feature_strides: Sequence[int] = (4, 8, 16, 32), coarse_dropout=0.0,
                 in_index=(0, 1, 2, 3), subdivision_steps=2, subdivision_points=8196, subdivision_scale=2,
                 train_points=2048, oversample_ratio=3, importance_sample_ratio=0.75, dropout=0.0,
                 align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        self.coarse = FPNHead(in_channels, num_classes, coarse_channels, feature_strides, in_index, coarse_dropout,
                              align_corners)
        self.coarse_pred_each_layer = coarse_pred_each_layer
        extra = num_classes if coarse_pred_each_layer else 0
        width = self.in_channels[0] + num_classes
        self.fcs = nn.ModuleList()
        for _ in range(num_fcs):
            self.fcs.append(_PointFC(width, channels))
            width = channels + extra
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv1d(width, num_classes, kernel_size=1)
        self.subdivision_steps, self.subdivision_points = int(subdivision_steps), int(subdivision_points)
        self.subdivision_scale = subdivision_scale
        self.train_points, self.oversample_ratio = int(train_points), oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def point_logits(self, fine: torch.Tensor, coarse: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The point head's logits (N, C, P) at ``points`` (N, P, 2) from the fine feature map and
        the coarse logits."""
        coarse_at = point_sample(coarse, points, self.align_corners)
        x = torch.cat([point_sample(fine, points, self.align_corners), coarse_at], dim=1)
        for fc in self.fcs:
            x = fc(x)
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse_at], dim=1)
        return self.classify(x)

    def forward_train(self, feats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(point logits (N, C, train_points), their points (N, train_points, 2) as (x, y) in [0, 1],
        coarse logits (N, C, h, w))."""
        xs = self.select(feats)
        coarse = self.coarse(feats)
        with torch.no_grad():
            points = sample_points(coarse, self.train_points, self.oversample_ratio, self.importance_sample_ratio)
        return self.point_logits(xs[0], coarse, points), points, coarse

    def forward(self, feats) -> torch.Tensor:
        """The refined logits (N, C, h * scale ** steps, w * scale ** steps) of the subdivision."""
        fine = self.select(feats)[0]
        coarse = self.coarse(feats)
        refined = coarse
        for _ in range(self.subdivision_steps):
            refined = F.interpolate(refined, scale_factor=self.subdivision_scale, mode="bilinear",
                                    align_corners=self.align_corners)
            n, c, h, w = refined.shape
            index, points = most_uncertain_points(refined, self.subdivision_points)
            logits = self.point_logits(fine, coarse, points)
            refined = refined.reshape(n, c, h * w).scatter(2, index.unsqueeze(1).expand(-1, c, -1), logits)
            refined = refined.view(n, c, h, w)
        return refined


# ---- SSSegmentation ---------------------------------------------------------------------------------
_POINTREND_OPTIONS = {"coarse_pred_each_layer", "dropout", "feats_channels", "feature_stride_list",
                      "fpn_in_channels_list", "num_fcs", "pointrend_in_channels_list", "scale_head_channels",
                      "test", "train", "upsample_cfg"}


def pointrend_aux_heads(cfg: dict, sel: list) -> list:
    """PointRend's ``auxiliary`` is its coarse head's classifier (part of the decode head here): no
    auxiliary heads."""
    return []


def _key_rules(arch: dict) -> list[tuple[str, str]]:
    return [*fpn_neck_rules(), *fpn_head_rules(arch["decode_head"]["head"], "decode_head.coarse"),
            (r"^auxiliary_decoder\.1\.", "decode_head.coarse.classifier."),
            (r"^fcs\.(\d+)\.0\.", r"decode_head.fcs.\1.conv."), (r"^fcs\.(\d+)\.1\.", r"decode_head.fcs.\1.bn."),
            (r"^decoder\.1\.", "decode_head.classifier.")]


def pointrend_from_ssseg(cfg: dict, sel: list) -> dict:
    """``arch["decode_head"]`` of an SSSegmentation PointRend config (its auxiliary heads:
    :func:`pointrend_aux_heads`)."""
    head = cfg["head"]
    check_options(head, _POINTREND_OPTIONS, "PointRend head")
    aux = cfg.get("auxiliary")
    if not isinstance(aux, dict) or set(aux) - {"in_channels", "num_convs", "dropout"} or aux.get("num_convs", 1) \
            or int(aux["in_channels"]) != int(head["scale_head_channels"]):
        raise UnsupportedConfig("PointRend's auxiliary must be its coarse classifier (one dict, num_convs=0, "
                                f"in_channels=scale_head_channels); got {aux!r}")
    if [int(c) for c in head["pointrend_in_channels_list"]] != [int(head["feats_channels"])]:
        raise UnsupportedConfig("PointRend reads the finest FPN level only: pointrend_in_channels_list must be "
                                f"[feats_channels], got {head['pointrend_in_channels_list']!r}")
    test, train = head["test"], head["train"]
    if set(test) - {"scale_factor", "subdivision_num_points", "subdivision_steps"} \
            or set(train) - {"importance_sample_ratio", "num_points", "oversample_ratio"}:
        raise UnsupportedConfig(f"PointRend test/train options {sorted(test)} / {sorted(train)} are not ported")
    coarse = fpn_head_from_ssseg(head, sel, aux.get("dropout", 0.1))
    return {"type": "with_neck", "neck": fpn_neck_from_ssseg(head, sel, "fpn_in_channels_list"), "head": {
        "type": "pointrend", "in_index": coarse["in_index"], "channels": int(head["feats_channels"]),
        "num_fcs": int(head["num_fcs"]), "coarse_pred_each_layer": bool(head["coarse_pred_each_layer"]),
        "coarse_channels": coarse["channels"], "feature_strides": coarse["feature_strides"],
        "coarse_dropout": coarse["dropout"], "subdivision_steps": int(test["subdivision_steps"]),
        "subdivision_points": int(test["subdivision_num_points"]), "subdivision_scale": test["scale_factor"],
        "train_points": int(train["num_points"]), "oversample_ratio": train["oversample_ratio"],
        "importance_sample_ratio": train["importance_sample_ratio"], "dropout": float(head.get("dropout", 0.0))}}


ssseg_segmentor("PointRend", "pointrend", _key_rules, aux_heads=pointrend_aux_heads)(pointrend_from_ssseg)
