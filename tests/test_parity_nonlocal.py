"""Parity with sssegmentation==1.7.0: NonLocalNet and DNLNet on ResNet-V1c (ResNet-50 and ResNet-101).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input; then the train-mode outputs (decode and auxiliary logits). The reference's attention
embeddings (and DNL's unary mask) are first rescaled on the test input so that the softmaxes are
soft: with the harness's random weights the features are so large that they are one-hot, and
the logits would not see the scale, the temperature or the centring. The non-local blocks alone
are also compared with the reference's, plain and disentangled, at a temperature and scale
where the disentangled centring and unary term change the output.
"""

import pytest
import torch

import segzoo
from segzoo.models.foreign import rename_keys
from _ssseg import build_ssseg, check_train_outputs, compare_logits, load_reference, randomize_, rel_diff, ssseg_logits

from segzoo.models.heads import non_local as nonlocal_heads

CONFIGS = [("nonlocalnet_resnet50os8_voc", "nonlocalnet", "NonLocalHead"),
           ("nonlocalnet_resnet101os16_cityscapes", "nonlocalnet", "NonLocalHead"),
           ("dnlnet_resnet50os16_ade20k", "dnlnet", "DNLHead"),
           ("dnlnet_resnet101os8_voc", "dnlnet", "DNLHead")]


def _output_std(ref, module, x) -> float:
    out = []
    hook = module.register_forward_hook(lambda m, i, o: out.append(float(o.std())))
    ssseg_logits(ref, x)
    hook.remove()
    return out[0]


def _soften_(ref, x) -> None:
    """Rescale the block's theta / phi embeddings (similarities of std ~2 after scale and
    temperature) and DNL's mask conv (logits of std ~1) on the input ``x``."""
    block = ref.dnl_block if hasattr(ref, "dnl_block") else ref.nl_block
    temperature = getattr(block, "temperature", 1.0)
    with torch.no_grad():
        for proj in (block.theta, block.phi):
            factor = (2 * temperature) ** 0.5 / _output_std(ref, proj, x)
            for p in proj.parameters():
                p.mul_(factor)
        if hasattr(block, "conv_mask"):
            factor = 1 / _output_std(ref, block.conv_mask, x)
            for p in block.conv_mask.parameters():
                p.mul_(factor)


@pytest.mark.parametrize("config,segmentor,head", CONFIGS)
def test_nonlocal_parity(config, segmentor, head, tmp_path):
    ref, cfg = build_ssseg(config)
    x = torch.randn(1, 3, 72, 104)
    _soften_(ref, x)
    model = load_reference(ref, config, tmp_path)
    assert model.arch["segmentor"] == segmentor and type(model.decode_head).__name__ == head
    compare_logits(model, ref, x, cfg["num_classes"])

    check_train_outputs(model, cfg["num_classes"])


@pytest.mark.parametrize("disentangled", [False, True])
def test_nonlocal_block_parity(disentangled):
    """The block alone against ssseg's NonLocal2d / DisentangledNonLocal2d (temperature 0.5, no scale)."""
    from ssseg.modules.models.segmentors.dnlnet import DisentangledNonLocal2d
    from ssseg.modules.models.segmentors.nonlocalnet import NonLocal2d as RefNonLocal2d
    kwargs = dict(in_channels=16, reduction=4, use_scale=False, mode="embeddedgaussian",
                  norm_cfg={"type": "BatchNorm2d"}, act_cfg={"type": "ReLU"})
    torch.manual_seed(0)
    ref = (DisentangledNonLocal2d(temperature=0.5, **kwargs) if disentangled else RefNonLocal2d(**kwargs)).eval()
    randomize_(ref)
    ours = nonlocal_heads.NonLocal2d(16, 4, use_scale=False, temperature=0.5 if disentangled else 1.0,
                                     disentangled=disentangled).eval()
    rules = [(f"^{src}", dst) for src, dst in nonlocal_heads._BLOCK_RULES]
    ours.load_state_dict(rename_keys(ref.state_dict(), rules), strict=True)
    x = torch.randn(2, 16, 5, 7) + 1.0  # a non-zero mean: the disentangled centring matters
    with torch.no_grad():
        assert rel_diff(ours(x), ref(x)) <= 1e-5
        if disentangled:  # the centring and the unary term both change the block's output
            plain = nonlocal_heads.NonLocal2d(16, 4, use_scale=False, temperature=0.5).eval()
            plain.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("conv_mask")})
            assert rel_diff(plain(x), ref(x)) > 1e-3


def test_dnl_unary_term_trains():
    """In train mode the DNL head's unary mask conv receives gradient from the decode logits."""
    model = segzoo.create_model("dnlnet_resnet50_os8_voc", num_classes=3, backbone={"depth": 18},
                                decode_head={"channels": 16}, aux_heads=[])
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    out["logits"].square().mean().backward()
    assert model.decode_head.block.conv_mask.weight.grad.abs().sum() > 0
