"""Parity with sssegmentation==1.7.0: SETR-Naive, SETR-PUP (``SETRUP``) and SETR-MLA on ViT-L/16.

The ViT is shrunk on both sides to 5 blocks of width 256 (``num_layers=5``, ``out_indices=[0, 2, 3, 4]``:
the taken blocks skip one, the last is the last block; 4 heads of 64 channels as in ViT-L), the heads'
and auxiliary decoders' input widths following (1024 -> 256); the code path is the full model's
(the full width, 1024 with 16 heads, passed too; only slower). ``structure_type`` is renamed on the
reference's side because its name pins the ViT-L structure, including ``drop_rate=0.1``, which the
zoo's own configs (``drop_rate=0.0``) fail: the reference cannot build them as shipped.

Random weights everywhere (BatchNorm statistics, LayerNorms, the position embeddings and the class
token included), the reference's checkpoint loaded strictly through ``create_model(checkpoint=...)``,
eval logits compared on a random non-square input that is not a multiple of the patch size (padding,
and position embeddings resized from the 512x512 grid); then each auxiliary head against the
reference's auxiliary decoder on the same maps (eval mode), and the train-mode outputs' keys/shapes.
"""
import pytest
import torch

import segzoo
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import randomize_, rel_diff, ssseg_config, ssseg_logits

DEPTH, OUT, WIDTH, HEADS = 5, [0, 2, 3, 4], 256, 4
CONFIGS = [  # (config, logits stride relative to the padded input)
    ("setrnaive_vitlarge_ade20k", 1),
    ("setrnaive_vitlarge_cityscapes", 4),   # one 1x1 conv, x4; no patch embedding bias
    ("setrnaive_vitlarge_voc", 1),
    ("setrpup_vitlarge_ade20k", 1),         # four convs, x2 each
    ("setrmla_vitlarge_ade20k", 4),
]


def perturb_vit_(model: torch.nn.Module, seed: int = 1) -> None:
    """What ``randomize_`` leaves at its initial value in a ViT: LayerNorm weights (ones), the position
    embeddings and the class token (zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith(("pos_embed", "cls_token")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def build_reference(config: str, seed: int = 0):
    """The reference SETR of ``config`` on the shrunk ViT, random weights (see the module docstring)."""
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = ssseg_config(config, structure_type="vit_shallow", num_layers=DEPTH, out_indices=OUT, embed_dims=WIDTH,
                       num_heads=HEADS)
    cfg["head"]["in_channels_list"] = [WIDTH] * len(cfg["head"]["in_channels_list"])
    for a in cfg["auxiliary"]:
        if a["in_channels"] == 1024:  # SETR-UP's read the backbone; SETR-MLA's the neck (256)
            a["in_channels"] = WIDTH
    torch.manual_seed(seed)
    ref = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    perturb_vit_(ref)
    g = torch.Generator().manual_seed(seed)
    randomize_(ref, seed, calibrate=lambda: ssseg_logits(ref, torch.randn(2, 3, 96, 128, generator=g)))
    return ref.eval(), cfg


def _ref_backbone_maps(ref, cfg, x):
    with torch.no_grad():
        outs = ref.backbone_net(x)
    return [outs[i] for i in cfg["backbone"]["selected_indices"]]


@pytest.mark.parametrize("config,stride", CONFIGS)
def test_setr_parity(config, stride, tmp_path):
    ref, cfg = build_reference(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    name = segzoo_name(config)[0]
    model = segzoo.create_model(name, checkpoint=path, backbone={"depth": DEPTH, "out_indices": OUT,
                                                                    "embed_dim": WIDTH, "num_heads": HEADS})
    mla = cfg["type"] == "SETRMLA"
    assert model.arch["segmentor"] == ("setr_mla" if mla else "setr_up")
    assert type(model).__name__ == ("SETRMLA" if mla else "Segmentor")
    x = torch.randn(1, 3, 72, 104, generator=torch.Generator().manual_seed(0))  # padded to 80x112: 5x7 patches
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], 80 // stride, 112 // stride)
    d = rel_diff(ours, theirs)
    print(f"{config}: max rel diff {d:.2e}")
    assert d <= 1e-4

    # the auxiliary heads (training only) against the reference's auxiliary decoders, eval mode
    with torch.no_grad():
        feats = model.backbone(x)
        maps = _ref_backbone_maps(ref, cfg, x)
        if mla:
            ref_in = list(ref.mla_neck(maps))[-len(ref.auxiliary_decoders):]
            ours_aux = [h(model.decode_head.neck(feats)) for h in model.aux_heads]
        else:
            ref_in = [ref.norm(m, n) for m, n in zip(maps[:-1], ref.norm_layers)]
            ours_aux = [h(feats) for h in model.aux_heads]
        theirs_aux = [dec(m) for m, dec in zip(ref_in, ref.auxiliary_decoders)]
    assert len(ours_aux) == len(theirs_aux) == 3
    for a, b in zip(ours_aux, theirs_aux):
        assert a.shape == b.shape and rel_diff(a, b) <= 1e-4

    # train mode: the decode logits and one logits map per auxiliary decoder (loss_aux1..3)
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 3
    assert out["logits"].shape[:2] == (2, cfg["num_classes"])
    assert set(model.losses_of(out)) == set(cfg["losses"]) == {"loss_cls", "loss_aux1", "loss_aux2", "loss_aux3"}
    aux_scale = cfg["auxiliary"][0]["scale_factor"] ** cfg["auxiliary"][0]["num_convs"]
    assert all(a.shape == (2, cfg["num_classes"], 64 // 16 * aux_scale, 96 // 16 * aux_scale)
               for a in out["aux_logits"])


def test_setr_full_size_and_new_classes():
    """The registered (ViT-L, 24 blocks) models build; ``num_classes=`` re-initialises every classifier;
    the auxiliary heads do not count as inference parameters."""
    from segzoo.models import count_parameters
    model = segzoo.create_model("setr_mla_vit_large_ade20k", num_classes=5)
    assert len(model.backbone.blocks) == 24 and model.backbone.out_indices == [9, 14, 19, 23]
    assert model.num_classes == 5 and all(h.classifier.out_channels == 5 for h in model.aux_heads)
    aux = sum(p.numel() for h in model.aux_heads for p in h.parameters())
    assert count_parameters(model.arch) == sum(p.numel() for p in model.parameters()) - aux
