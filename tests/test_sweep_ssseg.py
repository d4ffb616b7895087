"""Slow sweep (pytest -m slow): every registered SSSegmentation config.

For each record: the reference segmentor with random weights and BatchNorm statistics, its
checkpoint saved as SSSegmentation writes it, loaded strictly by create_model(checkpoint=...)
and compared on a small random input, both sides in float64.
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
    ref, _ = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert model.record.name == name
    # in float64: the random networks' activations reach the hundreds, where float32 rounding
    # alone can approach the tolerance; the comparison is of the computation, not of the rounding
    model.double()
    ref.double()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        assert rel_diff(model(x), ssseg_logits(ref, x)) <= 1e-4
