"""PSPNet head: pyramid pooling module then the classifier."""
from __future__ import annotations

from ..layers import PyramidPooling
from ..foreign import cna_rules, head_options, ssseg_segmentor
from .base import DecodeHead, register_head


@register_head("psp")
class PSPHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, pool_scales=(1, 2, 3, 6), in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.ppm = PyramidPooling(self.in_channels, channels, pool_scales, align_corners)

    def forward(self, feats):
        return self.classify(self.ppm(self.select(feats)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
def ssseg_ppm_rules(dst: str) -> list[tuple[str, str]]:
    """SSSegmentation's ``ppm_net`` (PSPNet, UPerNet) -> segzoo ``PyramidPooling`` at ``dst``."""
    return [(r"^ppm_net\.branches\.(\d+)\.1\.", rf"{dst}.stages.\1.conv."),
            (r"^ppm_net\.branches\.(\d+)\.2\.", rf"{dst}.stages.\1.bn."), *cna_rules(r"ppm_net\.bottleneck", f"{dst}.bottleneck")]


@ssseg_segmentor("PSPNet", "pspnet", ssseg_ppm_rules("decode_head.ppm") + [(r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "psp", "in_index": sel[-1], "pool_scales": list(cfg["head"]["pool_scales"]), **head_options(cfg)}
