"""Parity of the ViT backbone with sssegmentation==1.7.0's ``VisionTransformer``, option by option, and of
its ImageNet weight loading (timm / JAX checkpoint layout) with the reference's ``loadpretrainedweights``.

Small networks (width 64, 4 heads, 3-4 blocks; the reference's ``structure_type`` renamed, since its ViT-L
name pins the full structure), random weights everywhere (LayerNorms, position embeddings and class
token included), the reference's state dict converted by ``convert_sssegmentation`` and loaded strictly,
every output map compared.
"""
import pytest
import torch

from segzoo.models.backbones import build_backbone
from segzoo.models.backbones import vit as vit_mod
from _ssseg import rel_diff

BASE = {"structure_type": "vit_test", "img_size": 128, "patch_size": 16, "embed_dims": 64, "num_layers": 4,
        "num_heads": 4, "mlp_ratio": 4, "out_indices": [0, 2, 3], "drop_rate": 0.0, "pretrained": False,
        "norm_cfg": {"type": "LayerNorm", "eps": 1e-6}}
CASES = [  # (options over BASE, input size)
    ({}, (72, 104)),                                         # padded to 80x112: 5x7 patches, embeddings resized
    ({}, (64, 256)),                                         # 4x16 = 64 patches, as many as the 8x8 grid: not resized
    ({"img_size": [96, 160], "out_indices": -1}, (50, 70)),  # non-square grid; the last block only
    ({"pre_norm": True, "final_norm": True, "out_origin": True, "out_indices": [1, 3], "patch_norm": True,
      "patch_bias": False, "qkv_bias": False, "with_cls_token": False, "interpolate_mode": "bicubic",
      "norm_cfg": {"type": "LayerNorm"}}, (72, 104)),
]


def _randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm weights
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith(("pos_embed", "cls_token")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


def _reference(options: dict):
    from ssseg.modules.models.backbones.vit import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(**dict(BASE, **options)).eval()


def _ours(options: dict):
    arch = vit_mod.from_ssseg(dict(BASE, type="VisionTransformer", **options))
    return build_backbone(arch).eval()


def _compare(ours, ref, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert len(a) == len(b) == len(ours.out_channels)
    for u, v in zip(a, b):
        assert u.shape == v.shape and rel_diff(u, v) <= 1e-4
    return a


@pytest.mark.parametrize("options,size", CASES)
def test_vit_ssseg_parity(options, size):
    ref = _reference(options)
    _randomize_(ref)
    ours = _ours(options)
    ours.load_state_dict(vit_mod.convert_sssegmentation(ref.state_dict()), strict=True)
    outs = _compare(ours, ref, size)
    assert all(o.shape[1:] == (64, -(-size[0] // 16), -(-size[1] // 16)) for o in outs)


def test_vit_imagenet_weights_like_reference(tmp_path, monkeypatch):
    """A timm ViT classifier's checkpoint (the layout of the JAX ``jx_vit_large_p16_384`` file: 24x24 grid,
    classifier, final norm) loaded as the reference loads it (classifier and final norm dropped, position
    embeddings resized bilinearly to the 32x32 grid of 512x512) and through ``convert_timm`` +
    ``adapt_imagenet``; then one with ``patch_bias=False`` (the Cityscapes config): the bias is dropped.
    Last, ``create_model(..., pretrained_backbone=True)`` with the file as the weights' source."""
    import timm
    net = timm.create_model("vit_large_patch16_384", pretrained=False, depth=4, embed_dim=64, num_heads=4,
                            num_classes=10)
    _randomize_(net, seed=3)
    path = tmp_path / "jx.pth"
    torch.save(net.state_dict(), path)
    for options in ({"img_size": 512}, {"img_size": 512, "patch_bias": False}):
        options = dict(options, num_layers=4, out_indices=[0, 3])
        ref = _reference(options)
        ref.loadpretrainedweights("vit_test", str(path))
        ours = _ours(options)
        sd = vit_mod.adapt_imagenet(vit_mod.convert_timm(torch.load(path)), ours)
        ours.load_state_dict(sd, strict=True)
        _compare(ours, ref, (72, 104))

    import segzoo
    monkeypatch.setattr(vit_mod, "imagenet_weights", lambda cfg: {"sources": [{"path": str(path)}]})
    model = segzoo.create_model("setr_naive_vit_large_cityscapes", pretrained_backbone=True, backbone={
        "embed_dim": 64, "num_heads": 4, "depth": 4, "out_indices": [0, 1, 2, 3], "img_size": [512, 512]})
    ref = _reference({"img_size": 512, "patch_bias": False, "num_layers": 4, "out_indices": [0, 1, 2, 3]})
    ref.loadpretrainedweights("vit_test", str(path))
    _compare(model.backbone.eval(), ref, (72, 104))


def test_vit_imagenet_source_and_registered_arch():
    """ViT-L/16 starts from the JAX ViT-L/16 384 file the reference downloads; the registered SETR backbone
    is the reference's jx_vit_large_p16_384 structure."""
    import segzoo
    arch = segzoo.model_info("setr_naive_vit_large_ade20k")["arch"]["backbone"]
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["patch_size"]) == (1024, 24, 16, 16)
    assert arch["out_indices"] == [9, 14, 19, 23] and not arch["final_norm"] and arch["img_size"] == [512, 512]
    where = vit_mod.imagenet_weights(arch)
    assert where["sources"][0]["url"].endswith("/v0.1-vitjx/jx_vit_large_p16_384-b3be5167.pth")
    assert vit_mod.imagenet_weights(dict(arch, pretrained_tag="vit_large_patch16_384.augreg_in21k_ft_in1k")) == {
        "timm": "vit_large_patch16_384.augreg_in21k_ft_in1k"}
    city = segzoo.model_info("setr_naive_vit_large_cityscapes")["arch"]["backbone"]
    assert city["patch_bias"] is False and city["img_size"] == [768, 768]
