"""Parity of DeepLabV3 on MobileViT / MobileViTV2 with sssegmentation==1.7.0 and transformers 5.

SSSegmentation: the reference segmentor of each representative config (random weights, calibrated
BatchNorm statistics, random LayerNorm / GroupNorm affine parameters) saved as SSSegmentation writes
checkpoints and loaded strictly into segzoo's translation of the config; logits compared on a
random input whose side is no multiple of 32 (so every MobileViT block resizes to whole patches).
``deeplabv3_mobilevitv2100_voc-cocosubvoc`` is built with ``arch="mobilevitv2_100"``: its config names
the width only in ``structure_type``, which SSSegmentation 1.7.0 ignores (it would build the default
``mobilevitv2_050``, which its 512-channel head cannot read); segzoo reads the width from it.

transformers: ``MobileViTForSemanticSegmentation`` / ``MobileViTV2ForSemanticSegmentation`` built from
the published config values (``HUB_CONFIGS``, sources in ``segzoo/zoo/hub_mobilevit.py``) with random
weights, saved with ``save_pretrained`` (the Hub's file names) or as a ``state_dict``; transformers'
models read BGR, ours RGB: the reference gets the channel-flipped input. The last test runs
``segzoo.predict`` on a uint8 RGB image against the reference's own preprocessing (``/ 255``, RGB -> BGR).
The tests convert the transformers checkpoints with the format named (as the records' own downloads do)
and pass the converted state dict to ``create_model``; ``detect_format`` recognises them by the
``mobilevit.`` / ``mobilevitv2.`` prefixes the family declares.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo._factory import build_and_load
from segzoo.convert.sssegmentation import arch_from_config
from segzoo.models import build_model
from segzoo.models.backbones import mobilevit
from _ssseg import randomize_, rel_diff, ssseg_logits

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sssegmentation_zoo.json"
X_SHAPE = (1, 3, 67, 101)


def _randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """LayerNorm / GroupNorm scales and shifts away from their initial 1 / 0 (which would hide a swapped norm)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _zoo_config(config: str) -> dict:
    """The reference zoo's model config (read from the reference itself)."""
    return copy.deepcopy(json.loads(REFERENCE.read_text())[config]["config"])


def _ssseg_reference(config: str, seed: int = 0, **backbone_overrides):
    """The reference segmentor of ``config`` (as ``_ssseg.build_ssseg`` builds them: BatchNorm2d, no
    pretrained download, random weights, calibrated BatchNorm statistics) and its config."""
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = _zoo_config(config)
    cfg["norm_cfg"] = {"type": "BatchNorm2d"}
    cfg["backbone"].update(pretrained=False, **backbone_overrides)
    torch.manual_seed(seed)
    ref = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    calib = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))
    randomize_(ref, seed, calibrate=lambda: ssseg_logits(ref, calib))
    _randomize_norms(ref, seed)
    return ref.eval(), cfg


def _ssseg_arch(config: str) -> dict:
    """segzoo's translation of ``config``; the same as its record's where the zoo data holds it."""
    arch = arch_from_config(_zoo_config(config))
    records = [n for n in segzoo.list_models("deeplabv3_mobilevit*")
               if segzoo.model_info(n)["source"].get("config") == config]
    if records:
        assert len(records) == 1 and segzoo.model_info(records[0])["arch"] == json.loads(json.dumps(arch))
    return arch


@pytest.mark.parametrize("config, overrides", [
    ("deeplabv3_mobilevits_voc-cocosubvoc", {}),
    ("deeplabv3_mobilevitv2050_voc-cocosubvoc", {}),
    ("deeplabv3_mobilevitv2100_voc-cocosubvoc", {"arch": "mobilevitv2_100"}),
])
def test_mobilevit_ssseg_parity(config, overrides, tmp_path):
    ref, _ = _ssseg_reference(config, **overrides)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model, info = build_and_load(_ssseg_arch(config), checkpoint=path)  # strict load
    assert info["format"] == "sssegmentation"
    x = torch.randn(*X_SHAPE)
    with torch.no_grad():
        ours = model.eval()(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape and ours.shape[:2] == (1, 21)
    assert rel_diff(ours, theirs) <= 1e-4
    model.train()  # train mode: the decode head's logits (stride 32) and the auxiliary FCN's (stage 3, stride 16)
    out = model(torch.randn(2, 3, 64, 128))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == (2, 21, 2, 4) and out["aux_logits"][0].shape == (2, 21, 4, 8)


def test_mobilevit_ssseg_arch_from_structure_type():
    """The v2-1.00 config's head and auxiliary widths (512 / 384) are MobileViTV2-1.0's; MobileViT-S ends
    with the 4x expansion (640 channels, the head's in_channels)."""
    v2 = _ssseg_arch("deeplabv3_mobilevitv2100_voc-cocosubvoc")
    assert build_model(v2).backbone.out_channels[3:] == [384, 512]
    assert _ssseg_arch("deeplabv3_mobilevits_voc-cocosubvoc")["backbone"]["exp_channels"] == 640
    assert build_model(_ssseg_arch("deeplabv3_mobilevitv2050_voc-cocosubvoc")).backbone.out_channels[3:] == [192, 256]


# The published config.json values of each repo (see segzoo/zoo/hub_mobilevit.py for the sources), kept here so
# that the reference is not configured from segzoo's own record.
_V1_COMMON = {"output_stride": 16, "num_labels": 21, "image_size": 512, "num_attention_heads": 4, "mlp_ratio": 2.0,
              "patch_size": 2, "aspp_out_channels": 256, "atrous_rates": [6, 12, 18], "hidden_act": "silu"}
HUB_CONFIGS = {
    "apple/deeplabv3-mobilevit-xx-small": ("v1", dict(_V1_COMMON, hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                                                      neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320],
                                                      hidden_dropout_prob=0.05)),
    "apple/deeplabv3-mobilevit-x-small": ("v1", dict(_V1_COMMON, hidden_sizes=[96, 120, 144], expand_ratio=4.0,
                                                     neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384])),
    "apple/deeplabv3-mobilevit-small": ("v1", dict(_V1_COMMON, hidden_sizes=[144, 192, 240], expand_ratio=4.0,
                                                   neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640])),
    "apple/mobilevitv2-1.0-voc-deeplabv3": ("v2", {"width_multiplier": 1.0, "output_stride": 16, "num_labels": 21,
                                                   "image_size": 512, "aspp_out_channels": 512,
                                                   "atrous_rates": [6, 12, 18], "hidden_act": "swish",
                                                   "n_attn_blocks": [2, 4, 3], "base_attn_unit_dims": [128, 192, 256],
                                                   "expand_ratio": 2.0, "ffn_multiplier": 2}),
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("deeplabv3_mobilevit*")
             if segzoo.model_info(n)["source"].get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_mobilevit_hub_records_match_published_configs(repo):
    version, pub = HUB_CONFIGS[repo]
    info = segzoo.model_info(_hub_record(repo))
    arch, bb, head = info["arch"], info["arch"]["backbone"], info["arch"]["decode_head"]
    assert bb["output_stride"] == pub["output_stride"] and bb["flavor"] == "transformers"
    if version == "v1":
        assert bb["type"] == "mobilevit" and bb["exp_channels"] is None
        assert bb["channels"] == pub["neck_hidden_sizes"][:6] and bb["dims"] == pub["hidden_sizes"]
        assert (bb["expand_ratio"], bb["num_heads"], bb["mlp_ratio"]) == (
            pub["expand_ratio"], pub["num_attention_heads"], pub["mlp_ratio"])
    else:
        assert bb["type"] == "mobilevitv2" and bb["dims"] == pub["base_attn_unit_dims"]
        assert bb["depths"] == pub["n_attn_blocks"] and bb["expand_ratio"] == pub["expand_ratio"]
    assert (head["type"], head["channels"], head["dilations"]) == (
        "mobilevit_aspp", pub["aspp_out_channels"], [1] + pub["atrous_rates"])
    assert arch["num_classes"] == pub["num_labels"] and arch["aux_heads"] == []
    assert info["normalization"] == {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}


def _create_from_transformers(name: str, path):
    """``create_model(name, checkpoint=...)`` with the file converted as a transformers checkpoint. (Format
    detection does not know MobileViT's key prefixes yet, see the module docstring; the record's own
    weights name their format, ``transformers``, and take the same conversion.)"""
    from segzoo.convert import detect_format
    from segzoo.hub import load_checkpoint, read_state_dict
    if detect_format(read_state_dict(path)) == "transformers":
        return segzoo.create_model(name, checkpoint=path)
    sd, fmt, _ = load_checkpoint(path, segzoo.model_info(name)["arch"], fmt="transformers")
    return segzoo.create_model(name, checkpoint=sd)


def _hf_model(repo: str):
    """The transformers reference of ``repo`` (HUB_CONFIGS) with random weights and calibrated BatchNorm statistics."""
    version, pub = HUB_CONFIGS[repo]
    if version == "v1":
        from transformers import MobileViTConfig as Config, MobileViTForSemanticSegmentation as Model
    else:
        from transformers import MobileViTV2Config as Config, MobileViTV2ForSemanticSegmentation as Model
    torch.manual_seed(0)
    ref = Model(Config(**pub)).eval()
    with torch.no_grad():  # transformers initialises BatchNorm scales ~N(0, 0.02): calibrate at unit scale
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    calib = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    randomize_(ref, 0, calibrate=lambda: ref(pixel_values=calib))
    _randomize_norms(ref)
    return ref.eval()


@pytest.mark.parametrize("repo, layout, size", [
    ("apple/deeplabv3-mobilevit-xx-small", "hub", (67, 101)),
    ("apple/deeplabv3-mobilevit-small", "state_dict", (72, 104)),
    ("apple/mobilevitv2-1.0-voc-deeplabv3", "hub", (72, 104)),       # odd maps at strides 8 and 16: unfold drops
    ("apple/mobilevitv2-1.0-voc-deeplabv3", "state_dict", (64, 96)),
])
def test_mobilevit_transformers_parity(repo, layout, size, tmp_path):
    ref = _hf_model(repo)
    if layout == "hub":
        ref.save_pretrained(tmp_path)
        path = tmp_path / "model.safetensors"
    else:
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    model = _create_from_transformers(_hub_record(repo), path).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        ours = model(x)
        theirs = ref(pixel_values=x.flip(1)).logits  # transformers' models read BGR
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


def test_mobilevit_hub_predict_matches_reference_pipeline(tmp_path):
    """``segzoo.predict`` on a uint8 RGB image = the reference on the image / 255 in BGR order, upsampled."""
    repo = "apple/deeplabv3-mobilevit-xx-small"
    ref = _hf_model(repo)
    ref.save_pretrained(tmp_path)
    model = _create_from_transformers(_hub_record(repo), tmp_path / "model.safetensors")
    img = np.random.default_rng(0).integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    ours = model.predict(img, mode="whole", resize=False, output="logits")
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits = ref(pixel_values=pixels.flip(1)).logits
    theirs = F.interpolate(logits, size=img.shape[:2], mode="bilinear", align_corners=False)[0]
    assert ours.shape == tuple(theirs.shape)
    assert rel_diff(torch.as_tensor(ours), theirs) <= 1e-4


def _randomize_all(model: torch.nn.Module, seed: int = 0) -> None:
    """Every float tensor random (constant initial values would hide a tensor loaded into the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim == 1
                        else torch.randn(t.shape, generator=g) * 0.1)


@pytest.mark.parametrize("timm_name, cfg", [
    ("mobilevit_xxs", {"type": "mobilevit", "channels": [16, 16, 24, 48, 64, 80], "dims": [64, 80, 96],
                       "expand_ratio": 2.0, "exp_channels": 320, "flavor": "transformers"}),
    ("mobilevitv2_050", {"type": "mobilevitv2", "channels": [16, 32, 64, 128, 192, 256], "dims": [64, 96, 128],
                         "flavor": "sssegmentation"}),
])
def test_mobilevit_timm_classifier_features(timm_name, cfg):
    """timm's classifier (the ImageNet weights' layout) loads strictly through ``convert_timm`` and computes
    the same features (v1: our transformers flavour; v2: our SSSegmentation flavour)."""
    import timm
    from segzoo.models.backbones import build_backbone
    net = timm.create_model(timm_name, pretrained=False).eval()
    _randomize_all(net)
    ours = build_backbone(cfg).eval()
    ours.load_state_dict(mobilevit.convert_timm(net.state_dict()), strict=True)
    x = torch.randn(1, 3, 67, 101)
    with torch.no_grad():
        a, b = ours(x)[-1], net.forward_features(x)
    assert a.shape == b.shape and rel_diff(a, b) <= 1e-5
    assert mobilevit.imagenet_weights(cfg) == {"timm": f"{timm_name}.cvnets_in1k"}


def test_mobilevit_pretrained_backbone(tmp_path, monkeypatch):
    """``pretrained_backbone=True`` on a transformers-layout record (no 1x1 expansion): timm's classifier file,
    classifier and ``final_conv`` dropped, the rest loaded strictly."""
    import timm
    from safetensors.torch import save_file
    net = timm.create_model("mobilevit_xxs", pretrained=False)
    _randomize_all(net)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    assert mobilevit.imagenet_weights(segzoo.model_info("deeplabv3_mobilevit_xxs_voc")["arch"]["backbone"]) == {
        "timm": "mobilevit_xxs.cvnets_in1k"}
    weights = {"sources": [{"path": str(tmp_path / "w.safetensors")}]}
    monkeypatch.setattr(mobilevit, "imagenet_weights", lambda c: weights)
    model = segzoo.create_model("deeplabv3_mobilevit_xxs_voc", pretrained_backbone=True)
    assert torch.equal(model.backbone.stem.conv.weight, net.stem.conv.weight)
    assert torch.equal(model.backbone.stages[4][1].transformer[2].attn.qkv.weight,
                       net.stages[4][1].transformer[2].attn.qkv.weight)
