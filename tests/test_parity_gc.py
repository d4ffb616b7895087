"""Parity with sssegmentation==1.7.0: GCNet on ResNet-V1c (ResNet-50 and ResNet-101).

Random weights and calibrated BatchNorm statistics in the reference (the context block's
LayerNorm affine parameters randomised too; on the test input, its attention-pooling mask conv
rescaled to logits of std 1 and its channel_add transform to outputs as large as the block's
input: with the harness's random weights the features are so large that the softmax over the
positions would be one-hot and the added context negligible), its checkpoint loaded strictly through
``create_model(checkpoint=...)``, eval logits compared on a random non-square input; then the
train-mode outputs. The context block alone is compared with the reference's ContextBlock in
the pooling / fusion variants no zoo config uses (average pooling, channel_mul).
"""
import pytest
import torch

from segzoo.models.foreign import rename_keys
from segzoo.models.heads.gc import GlobalContextBlock
from _ssseg import build_ssseg, check_train_outputs, compare_logits, load_reference, rel_diff, ssseg_logits

CONFIGS = ["gcnet_resnet50os8_cityscapes", "gcnet_resnet101os16_ade20k"]


def _randomize_layernorms(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def _soften_(ref, x) -> None:
    """On the input ``x``: the attention-pooling mask conv rescaled to logits of std 1, and the
    channel_add transform's last conv to outputs as large as the block's input."""
    block, stds = ref.contextblock_net, {}
    hooks = [block.register_forward_pre_hook(lambda m, i: stds.update(x=float(i[0].std()))),
             block.conv_mask.register_forward_hook(lambda m, i, o: stds.update(mask=float(o.std()))),
             block.channel_add_conv.register_forward_hook(lambda m, i, o: stds.update(add=float(o.std())))]
    ssseg_logits(ref, x)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for p in block.conv_mask.parameters():
            p.div_(stds["mask"])
        for p in block.channel_add_conv[3].parameters():
            p.mul_(stds["x"] / stds["add"])


@pytest.mark.parametrize("config", CONFIGS)
def test_gcnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    _randomize_layernorms(ref)
    x = torch.randn(1, 3, 72, 104)
    _soften_(ref, x)
    model = load_reference(ref, config, tmp_path)
    assert model.arch["segmentor"] == "gcnet" and type(model.decode_head).__name__ == "GCHead"
    compare_logits(model, ref, x, cfg["num_classes"])

    check_train_outputs(model, cfg["num_classes"])


@pytest.mark.parametrize("pooling,fusions", [("att", ["channel_add"]), ("avg", ["channel_mul"]),
                                             ("att", ["channel_add", "channel_mul"])])
def test_context_block_parity(pooling, fusions):
    from ssseg.modules.models.segmentors.gcnet.contextblock import ContextBlock
    torch.manual_seed(0)
    ref = ContextBlock(16, 0.25, pooling, fusions, norm_cfg={"type": "LayerNorm"}, act_cfg={"type": "ReLU"}).eval()
    _randomize_layernorms(ref)
    ours = GlobalContextBlock(16, 0.25, pooling, fusions).eval()
    rules = [(r"^channel_add_conv\.", "channel_add."), (r"^channel_mul_conv\.", "channel_mul.")]
    ours.load_state_dict(rename_keys(ref.state_dict(), rules), strict=True)
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        assert rel_diff(ours(x), ref(x)) <= 1e-5


def test_gcnet_translation_rejects_other_norms():
    from segzoo.convert.sssegmentation import arch_from_config
    from segzoo.errors import UnsupportedConfig
    from _ssseg import ssseg_config
    cfg = ssseg_config("gcnet_resnet50os8_voc")
    cfg["head"]["norm_cfg"] = {"type": "LayerNorm", "eps": 1e-6}
    with pytest.raises(UnsupportedConfig, match="norm_cfg"):
        arch_from_config(cfg)
