"""ImageNet classifier checkpoints ("timm" format) passed as ``checkpoint=``, for every backbone family.

A randomly initialised classifier of the architecture each family takes its ImageNet weights from
(timm's ResNet-V1c, Swin and ConvNeXt; transformers' ``SegformerForImageClassification`` for MiT,
the layout of ``nvidia/mit-b*``) is saved to a file and loaded with
``create_model(record, checkpoint=file)``: its classifier keys are dropped, everything else goes
into the backbone, strictly. A key the backbone does not know, a junk one or one that only looks
like a classifier key, still fails the load, and the error names it.
"""
import pytest
import timm
import torch
from safetensors.torch import save_file

import segzoo
from segzoo.models.backbones import convnext as convnext_mod
from segzoo.models.backbones import resnet as resnet_mod
from segzoo.models.backbones import swin as swin_mod

SHALLOW = [1, 1, 1, 1]
UPER_HEADS = {"decode_head": {"channels": 32}, "aux_heads": [{"type": "fcn", "in_index": 2, "channels": 16,
                                                              "num_convs": 1, "dropout": 0.1}]}


def _randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Every float tensor random: constant initial values (norm weights, layer scale, zero biases
    and bias tables) would hide a tensor loaded into the wrong place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim == 1 else torch.randn(t.shape, generator=g))


def _save(sd: dict, path) -> str:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def _timm_case(family: str):
    """(record, overrides, timm classifier, its classifier keys, a classifier look-alike key)."""
    if family == "resnet":
        # the record's ResNet-50 V1c maps to timm's resnet50c (resnet.py's _TIMM_NAMES)
        name = resnet_mod._TIMM_NAMES[(50, True)].split(".")[0]
        net = timm.create_model(name, pretrained=False)  # ResNet depths are fixed: full size
        return ("fcn_resnet50_os16_voc", {"decode_head": {"channels": 32}, "aux_heads": []}, net,
                {"fc.weight", "fc.bias"}, "fc.scale")
    if family == "swin":
        name = swin_mod._TIMM_WEIGHTS[(96, (2, 2, 6, 2), 7)].split(".")[0]
        net = timm.create_model(name, pretrained=False, depths=SHALLOW)
        return ("upernet_swin_tiny_ade20k", {"backbone": {"depths": SHALLOW}, **UPER_HEADS}, net,
                {"head.fc.weight", "head.fc.bias", "norm.weight", "norm.bias"}, "head.fc.scale")
    if family == "convnext":
        name = convnext_mod._TIMM_WEIGHTS[((3, 3, 9, 3), (96, 192, 384, 768))].split(".")[0]
        net = timm.create_model(name, pretrained=False, depths=SHALLOW)
        return ("upernet_convnext_tiny_ade20k", {"backbone": {"depths": SHALLOW}, **UPER_HEADS}, net,
                {"head.fc.weight", "head.fc.bias", "head.norm.weight", "head.norm.bias"}, "head.norm.scale")
    raise AssertionError(family)


@pytest.mark.parametrize("family", ["resnet", "swin", "convnext"])
def test_timm_classifier_checkpoint_loads_into_the_backbone(family, tmp_path):
    record, overrides, net, classifier, lookalike = _timm_case(family)
    _randomize_(net)
    sd = net.state_dict()
    assert classifier <= set(sd)  # the checkpoint really is a classifier
    path = _save(sd, tmp_path / "imagenet.safetensors")

    model = segzoo.create_model(record, checkpoint=path, **overrides)
    assert model.provenance["format"] == "timm"
    ours = model.backbone.state_dict()
    used = set(sd) - classifier
    assert used <= set(ours), sorted(used - set(ours))
    for k in used:
        assert torch.equal(ours[k], sd[k]), k
    for k in set(ours) - used:  # what a classifier lacks: the per-stage output norms, fresh
        assert k.startswith("out_norms."), k
        assert torch.all(ours[k] == (1.0 if k.endswith("weight") else 0.0)), k

    for junk in ("junk.weight", lookalike):
        bad = _save({**sd, junk: torch.zeros(3)}, tmp_path / "bad.safetensors")
        with pytest.raises(segzoo.CheckpointMismatchError, match=rf"unused keys \(1\): {junk}"):
            segzoo.create_model(record, checkpoint=bad, **overrides)


def _mit_classifier():
    """transformers' SegformerForImageClassification of MiT-b0's widths, shallow, random weights."""
    from transformers import SegformerConfig, SegformerForImageClassification
    info = segzoo.model_info("segformer_mit_b0_ade20k")["arch"]["backbone"]
    torch.manual_seed(0)
    ref = SegformerForImageClassification(SegformerConfig(depths=SHALLOW, hidden_sizes=info["embed_dims"],
                                                          num_labels=1000)).eval()
    _randomize_(ref)
    return ref


@pytest.mark.parametrize("layout", ["hub", "state_dict"])
def test_mit_imagenet_classifier_checkpoint_loads_into_the_backbone(layout, tmp_path):
    """The ``nvidia/mit-b*`` layout: ``hub`` is save_pretrained's file (the Hub's key names,
    ``segformer.encoder.*``), ``state_dict`` the installed transformers' names (``segformer.stages.*``)."""
    from safetensors.torch import load_file
    ref = _mit_classifier()
    if layout == "hub":
        ref.save_pretrained(tmp_path / "mit")
        path = str(tmp_path / "mit" / "model.safetensors")
    else:
        path = _save(ref.state_dict(), tmp_path / "mit.safetensors")
    sd = load_file(path)
    assert {"classifier.weight", "classifier.bias"} <= set(sd)

    for record in ("segformer_mit_b0_ade20k", "segformer_mit_b0_ade20k_ssseg"):
        model = segzoo.create_model(record, checkpoint=path, backbone={"depths": SHALLOW},
                                    decode_head={"channels": 32})
        assert model.provenance["format"] == "timm"
        bb = model.backbone
        if layout == "hub":
            stage0 = "segformer.encoder.patch_embeddings.0.proj.weight"
            key, value = ("segformer.encoder.block.3.0.attention.self.key.weight",
                          "segformer.encoder.block.3.0.attention.self.value.weight")
            norm = "segformer.encoder.layer_norm.3.weight"
        else:
            stage0 = "segformer.stages.0.patch_embeddings.proj.weight"
            key, value = ("segformer.stages.3.blocks.0.attention.k_proj.weight",
                          "segformer.stages.3.blocks.0.attention.v_proj.weight")
            norm = "segformer.stages.3.layer_norm.weight"
        assert torch.equal(bb.stages[0].patch_embed.proj.weight, sd[stage0])
        assert torch.equal(bb.stages[3].blocks[0].attn.kv.weight, torch.cat([sd[key], sd[value]]))
        assert torch.equal(bb.stages[3].norm.weight, sd[norm])
    # every encoder tensor is used: the backbone gives the classifier's stage outputs (transformers'
    # LayerNorm eps, the Hub record's)
    x = torch.randn(1, 3, 67, 90, generator=torch.Generator().manual_seed(0))
    model = segzoo.create_model("segformer_mit_b0_ade20k", checkpoint=path, backbone={"depths": SHALLOW},
                                decode_head={"channels": 32})
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = ref(pixel_values=x, output_hidden_states=True).hidden_states
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)

    for junk in ("junk.weight", "classifier.scale"):
        bad = _save({**sd, junk: torch.zeros(3)}, tmp_path / "bad.safetensors")
        with pytest.raises(segzoo.CheckpointMismatchError, match=rf"unused keys \(1\): {junk}"):
            segzoo.create_model("segformer_mit_b0_ade20k", checkpoint=bad, backbone={"depths": SHALLOW},
                                decode_head={"channels": 32})


def test_classifier_checkpoint_of_another_family_names_its_keys(tmp_path):
    """Only the family's own classifier keys are dropped: a ConvNeXt classifier given to a ResNet
    model fails, naming the keys (``head.fc.*`` among them) it cannot place."""
    net = timm.create_model("convnext_atto", pretrained=False, depths=SHALLOW)
    path = _save(net.state_dict(), tmp_path / "convnext.safetensors")
    with pytest.raises(segzoo.CheckpointMismatchError, match=r"unused keys.*head\.fc\.bias"):
        segzoo.create_model("fcn_resnet50_os16_voc", checkpoint=path, decode_head={"channels": 32}, aux_heads=[])
