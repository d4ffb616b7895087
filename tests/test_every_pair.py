"""Default paths on one record of every registered (architecture, backbone family) pair: slide
predict's fast path agrees with the eager network, and any image from 1x1 up works in whole and
slide mode. The pairs come from the registry (the lightest record of each), never from a list;
each runs as a shallow variant (one block per stage, narrow heads) of its own structure."""
import re

import numpy as np
import pytest
import torch

import segzoo
from segzoo.models import count_parameters


def _one_record_per_pair() -> list[str]:
    best = {}
    for name in segzoo.list_models():
        info = segzoo.model_info(name)
        if info["num_classes"] == 0:
            continue  # promptable (SAM): tests/test_sam.py
        pair = (info["architecture"], re.match(r"[a-z]+", info["backbone"]).group(0))
        size = count_parameters(info["arch"])
        if pair not in best or (size, name) < best[pair]:
            best[pair] = (size, name)
    return sorted(name for _, name in best.values())


PAIRS = _one_record_per_pair()


def _shallow(arch: dict) -> dict:
    """Overrides that keep the record's structure (strides, windows, pooling, heads) and make it
    cheap: one block per stage (ResNet-18 for ResNets), 32-channel decode and auxiliary heads."""
    bb = arch["backbone"]
    shallow = {"resnet": {"depth": 18}, "resnest": {"depth": 50}, "icnet": {"resnet": {"depth": 50}},
               "vit": {"depth": 4, "out_indices": [0, 1, 2, 3], "embed_dim": 64, "num_heads": 4},
               "beit": {"depth": 4, "out_indices": [0, 1, 2, 3], "embed_dim": 64, "num_heads": 4}}
    over = {"backbone": shallow.get(bb["type"]) or {"depths": [1] * len(bb["depths"])}}
    if "channels" in arch["decode_head"]:
        over["decode_head"] = {"channels": 32}
    over["aux_heads"] = [dict(h, channels=16) for h in arch.get("aux_heads", ())]
    return over


def test_pairs_cover_every_architecture_and_backbone_family():
    archs = {segzoo.model_info(n)["architecture"] for n in segzoo.list_models() if segzoo.model_info(n)["num_classes"]}
    assert {segzoo.model_info(n)["architecture"] for n in PAIRS} == archs  # SAM (no classes): tests/test_sam*.py
    assert len(PAIRS) >= 8  # fcn/pspnet/deeplabv3/deeplabv3plus/upernet x resnet, upernet x swin/convnext, segformer


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()  # one model at a time: memory stays flat
            torch.manual_seed(0)
            cache[name] = segzoo.create_model(name, **_shallow(segzoo.model_info(name)["arch"]))
        return cache[name]
    return get


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", PAIRS)
def test_slide_default_path_matches_eager(models, name):
    """predict's default slide path (the CPU fast path where the network says it pays), and the
    fast path forced on, against optimize=False: same logits to float rounding, same labels."""
    model = models(name)
    img = _image(96, 136, seed=1)
    kw = dict(mode="slide", crop_size=64, stride=32, resize=False, output="logits", batch_size=1)
    eager = model.predict(img, optimize=False, **kw)
    for optimize in (None, True):
        logits = model.predict(img, optimize=optimize, **kw)
        assert np.abs(logits - eager).max() <= 1e-4 * np.abs(eager).max(), (name, optimize)
        assert (logits.argmax(0) == eager.argmax(0)).mean() > 0.999, (name, optimize)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_any_image_from_one_pixel_up(models, name, mode):
    """1x1, 1x517, 517x1 and 1x20000 images: padded up to the network's minimum input and cropped
    back, labels at the input's size (the record's resize turned off, so the sizes reach the net;
    slide with the record's windows)."""
    model = models(name)
    for h, w in ((1, 1), (1, 517), (517, 1), (1, 20000)):
        labels = model.predict(_image(h, w), mode=mode, resize=False)
        assert labels.shape == (h, w), (name, mode, h, w)
        assert labels.min() >= 0 and labels.max() < model.num_classes
    # and with the record's own protocol (resize and crop), a thin image too
    assert model.predict(_image(1, 517), mode=mode).shape == (1, 517)


@pytest.mark.parametrize("name", PAIRS)
def test_one_training_step_with_its_recipe(models, name):
    """Every pair trains: one ``fit`` step with the record's own recipe (optimizer, parameter groups,
    schedule, losses; its warmup off, whose first step is too small to see, and its fp16 off: the
    gradient scaler skips its first overflowing steps by design), on two synthetic images; the weights
    move and the loss is finite."""
    from segzoo.data import ShapesDataset
    model = models(name)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    norm = ["Normalize", dict(model.record.normalization)]
    res = model.fit(ShapesDataset(2, seed=3), iterations=1, batch_size=2, crop_size=64, num_workers=0,
                    train_pipeline=[norm, ["ToTensor", {}]], progress=False, log_interval=1, warmup=None,
                    amp=None)
    assert res["skipped"] == 0 and np.isfinite(res["history"][-1]["loss"]), name
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), name
