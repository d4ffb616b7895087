"""Parity with sssegmentation==1.7.0: ICNet (three-branch cascade on ResNet-V1c-50 and -101, os8).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly
(``create_model(checkpoint=...)``), eval
logits (the final branch's) compared on random non-square inputs; then, from the same random seed,
the train-mode outputs and the reference's three losses.
"""
import pytest
import torch
import torch.nn.functional as F

from _ssseg import build_ssseg, compare_logits, load_reference

CONFIGS = ["icnet_resnet50os8_cityscapes", "icnet_resnet101os8_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_icnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert model.backbone.out_channels == [128, 128, 128] and model.min_input_size == 14
    for h, w in ((72, 104), (67, 93), (14, 14)):  # odd sizes: the halvings round down
        x = torch.randn(1, 3, h, w)
        compare_logits(model, ref, x, cfg["num_classes"])

    # train mode, the same dropout draws: the final branch -> loss_cls, the 1/16 and 1/8 fusion branches
    # (aux_logits[0], [1]) -> loss_aux1, loss_aux2; their losses as the reference computes them
    from ssseg.modules.utils import SSSegInputStructure
    x, labels = torch.randn(2, 3, 64, 96), torch.randint(0, cfg["num_classes"], (2, 64, 96))
    ref.train()
    model.train()
    torch.manual_seed(1)
    theirs = ref(SSSegInputStructure(images=x, seg_targets=labels, mode="TRAIN")).losses_log_dict
    torch.manual_seed(1)
    out = model(x)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == (2, cfg["num_classes"], 8, 12)
    # the 1/16 branch: max pooling with ceil mode rounds up
    assert [a.shape for a in out["aux_logits"]] == [(2, cfg["num_classes"], 5, 7), (2, cfg["num_classes"], 8, 12)]
    for name, logits in zip(("loss_cls", "loss_aux1", "loss_aux2"), (out["logits"], *out["aux_logits"])):
        up = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
        loss = cfg["losses"][name]["scale_factor"] * F.cross_entropy(up, labels, ignore_index=-100)
        assert loss.item() == pytest.approx(theirs[name], rel=1e-4), name
