"""Slow sweep (pytest -m slow): every registered SSSegmentation config.

For each record: the reference segmentor with random weights and BatchNorm statistics, its
checkpoint saved as SSSegmentation writes it, loaded strictly by create_model(checkpoint=...)
and compared on a small random input.
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, rel_diff, ssseg_logits

SSSEG = [(n, segzoo.model_info(n)["source"]["config"]) for n in segzoo.list_models()
         if segzoo.model_info(n)["source"]["project"] == "sssegmentation"]


@pytest.mark.slow
@pytest.mark.parametrize("name,config", SSSEG, ids=[n for n, _ in SSSEG])
def test_sweep(name, config, tmp_path):
    ref, _ = build_ssseg(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(name, checkpoint=path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert rel_diff(model(x), ssseg_logits(ref, x)) <= 1e-4
