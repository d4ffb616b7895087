"""Parity with sssegmentation==1.7.0: ANNNet on ResNet-V1c (ResNet-50 and ResNet-101).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input (at output stride 16 too, where the key pyramid's 6x6 and 8x8 grids are finer than the
feature map); then the train-mode outputs. The reference's query / key projections are first
rescaled on the test input (their norms' affine parameters: unit-std outputs) so that the
attention softmaxes are soft: with the harness's random weights the features are so large that
they are one-hot, and the logits would not see the attention.
"""
import pytest
import torch

from segzoo.models.heads.ann import pyramid_pool_concat
from _ssseg import build_ssseg, check_train_outputs, compare_logits, load_reference, ssseg_logits

CONFIGS = ["annnet_resnet50os16_voc", "annnet_resnet101os8_cityscapes"]


def _soften_(ref, x) -> None:
    """Unit-std query / key projections, the fusion block's then (on its new output) the pyramid block's."""
    for projections in ([p for st in ref.afn_block.stages for p in (st.query_project, st.key_project)],
                        [st.key_project for st in ref.apn_block.stages]):  # APN: query_project is key_project
        stds = {}

        def record(module, inputs, output):
            stds.setdefault(id(module), float(output.std()))

        hooks = [p.register_forward_hook(record) for p in projections]
        ssseg_logits(ref, x)
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for proj in projections:  # Sequential(conv, norm, ReLU): the output scales with the norm's affine
                proj[1].weight.div_(stds[id(proj)])
                proj[1].bias.div_(stds[id(proj)])


@pytest.mark.parametrize("config", CONFIGS)
def test_annnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    x = torch.randn(1, 3, 72, 104)
    _soften_(ref, x)
    model = load_reference(ref, config, tmp_path)
    assert model.arch["segmentor"] == "annnet" and type(model.decode_head).__name__ == "ANNHead"
    compare_logits(model, ref, x, cfg["num_classes"])

    check_train_outputs(model, cfg["num_classes"])


def test_pyramid_pool_concat_matches_ppm_concat():
    """Equal up to rounding (the public 1x1 adaptive pooling takes a mean, the kernel sums bins)."""
    from ssseg.modules.models.segmentors.annnet.ppm import PPMConcat
    x = torch.randn(2, 4, 5, 7)
    torch.testing.assert_close(pyramid_pool_concat(x, (1, 3, 6, 8)), PPMConcat((1, 3, 6, 8))(x), rtol=1e-6, atol=1e-6)


def test_annnet_translation_rejects_query_downsampling():
    from segzoo.convert.sssegmentation import arch_from_config
    from segzoo.errors import UnsupportedConfig
    from _ssseg import ssseg_config
    cfg = ssseg_config("annnet_resnet50os8_voc")
    cfg["head"]["query_scales"] = [1, 2]
    with pytest.raises(UnsupportedConfig, match="query_scales"):
        arch_from_config(cfg)
