"""Parity with sssegmentation==1.7.0: DMNet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input, and each dynamic convolutional module's output too (the backbone map, concatenated with
them, dominates the logits under random weights); then the train-mode outputs' keys and shapes.
The options no zoo config uses (even filter sizes, ``is_fusion``) are compared module to module.
"""
import pytest
import torch

from _ssseg import build_ssseg, check_train_outputs, compare_logits, hook_outputs, load_reference, randomize_, rel_diff

CONFIGS = ["dmnet_resnet50os8_ade20k", "dmnet_resnet101os16_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_dmnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert type(model.decode_head).__name__ == "DMHead" and model.arch["segmentor"] == "dmnet"
    assert len(model.decode_head.dcms) == len(cfg["head"]["filter_sizes"])
    seen = hook_outputs(zip(model.decode_head.dcms, ref.dcm_modules))

    x = torch.randn(1, 3, 72, 104)
    compare_logits(model, ref, x, cfg["num_classes"])
    for i in range(len(ref.dcm_modules)):
        assert rel_diff(seen["ours", i], seen["theirs", i]) <= 1e-4, i

    check_train_outputs(model, cfg["num_classes"])


@pytest.mark.parametrize("filter_size", [2, 3, 4])
def test_dynamic_module_even_sizes_and_fusion(filter_size):
    """The reference's module with ``is_fusion`` and even filter sizes (one-sided padding), its
    keys mapped by the DMNet key rules."""
    from ssseg.modules.models.segmentors.dmnet import DynamicConvolutionalModule
    from segzoo.models.foreign import SSSEG_SEGMENTORS, rename_keys
    from segzoo.models.heads.dm import DynamicConv
    torch.manual_seed(0)
    ref = DynamicConvolutionalModule(filter_size, True, 16, 8, norm_cfg={"type": "BatchNorm2d"},
                                     act_cfg={"type": "ReLU", "inplace": True})
    randomize_(ref)
    ours = DynamicConv(16, 8, filter_size, fusion=True)
    rules = SSSEG_SEGMENTORS["DMNet"].key_rules({})
    prefix = "decode_head.dcms.0."
    sd = rename_keys({f"dcm_modules.0.{k}": v for k, v in ref.state_dict().items()}, rules)
    ours.load_state_dict({k[len(prefix):]: v for k, v in sd.items()})
    ref.eval(), ours.eval()
    x = torch.randn(2, 16, 7, 10)
    with torch.no_grad():
        assert rel_diff(ours(x), ref(x)) <= 1e-5
