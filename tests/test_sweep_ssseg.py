"""Slow sweep (pytest -m slow): every registered SSSegmentation config.

For each record: the reference segmentor with random weights and BatchNorm statistics, its
checkpoint saved as SSSegmentation writes it, loaded strictly by create_model(checkpoint=...)
and compared on a small random input, both sides in float64.

Two families need otherwise, for the reference's sake: BEiT and MAE run only at their training crop
(the reference's relative-position tables and position embedding do not resize), so they are compared
at it; MaskFormer and Mask2Former stay in float32 (the reference's pixel decoder casts its inputs to
float32).
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, load_reference, rel_diff, ssseg_logits

SSSEG = [(n, segzoo.model_info(n)["source"]["config"]) for n in segzoo.list_models()
         if segzoo.model_info(n)["source"]["project"] == "sssegmentation"]


@pytest.mark.slow
@pytest.mark.parametrize("name,config", SSSEG, ids=[n for n, _ in SSSEG])
def test_sweep(name, config, tmp_path):
    info = segzoo.model_info(name)
    fixed = info["arch"]["backbone"]["type"] == "beit"
    h, w = info["crop_size"] if fixed else (64, 96)
    ref, _ = build_ssseg(config, calibration_size=(2, h, w) if fixed else (2, 96, 128))
    model = load_reference(ref, config, tmp_path)
    assert model.record.name == name
    # in float64: the random networks' activations reach the hundreds, where float32 rounding
    # alone can approach the tolerance; the comparison is of the computation, not of the rounding
    dtype = torch.float32 if info["architecture"] in ("maskformer", "mask2former") else torch.float64
    model.to(dtype)
    ref.to(dtype)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        assert rel_diff(model(x), ssseg_logits(ref, x)) <= 1e-4
