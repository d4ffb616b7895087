"""Parity with sssegmentation==1.7.0: ICNet (three-branch cascade on ResNet-V1c-50 and -101, os8).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly
(``create_model(checkpoint=...)`` once the zoo registers ICNet; until the SSSegmentation dispatcher
takes ICNet's backbone from its family the same load by hand, on the arch it will build), eval
logits (the final branch's) compared on random non-square inputs; then, from the same random seed,
the train-mode outputs and the reference's three losses.
"""
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.convert import to_segzoo
from segzoo.convert.checkpoint import load_state_dict_strict
from segzoo.models import build_model
from segzoo.models.foreign import SSSEG_BACKBONES
from segzoo.models.heads.fcn import aux_from_ssseg
from segzoo.models.segmentors.icnet import icnet_backbone_from_ssseg, icnet_from_ssseg
from segzoo.zoo import load_data
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import randomize_, rel_diff, ssseg_logits

CONFIGS = ["icnet_resnet50os8_cityscapes", "icnet_resnet101os8_cityscapes"]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sssegmentation_zoo.json"


def _config(config: str) -> dict:
    data = load_data("sssegmentation")
    if config in data:
        return copy.deepcopy(data[config]["config"])
    if not REFERENCE.is_file():
        pytest.skip(f"{config} is not registered and the SSSegmentation zoo reference is not at {REFERENCE}")
    return copy.deepcopy(json.loads(REFERENCE.read_text())[config]["config"])


def _arch(cfg: dict) -> dict:
    """The arch the dispatcher builds with ICNet's backbone taken from its family."""
    sel = list(cfg["backbone"]["selected_indices"])
    resnet = SSSEG_BACKBONES[cfg["backbone"]["type"]](cfg["backbone"])
    return {"segmentor": "icnet", "backbone": icnet_backbone_from_ssseg(cfg, resnet),
            "decode_head": icnet_from_ssseg(cfg, sel), "aux_heads": aux_from_ssseg(cfg, sel),
            "num_classes": int(cfg["num_classes"]), "align_corners": bool(cfg.get("align_corners", False))}


def _reference(cfg: dict, seed: int = 0):
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = copy.deepcopy(cfg)
    cfg["norm_cfg"] = {"type": "BatchNorm2d"}  # SyncBatchNorm needs a process group in training
    cfg["backbone"]["pretrained"] = False
    cfg.setdefault("dataset", {"train": {"data_pipelines": []}})
    torch.manual_seed(seed)
    model = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    randomize_(model, seed, calibrate=lambda: ssseg_logits(model, torch.randn(
        2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))))
    return model.eval()


def _segzoo_model(config: str, cfg: dict, path: Path):
    name = segzoo_name(config)[0]
    if name in segzoo.list_models():
        model = segzoo.create_model(name, checkpoint=path)
        assert model.arch["backbone"] == _arch(cfg)["backbone"]
        return model
    arch = _arch(cfg)
    model = build_model(arch)
    sd, fmt = to_segzoo(torch.load(path, map_location="cpu", weights_only=True), arch)
    assert fmt == "sssegmentation"
    load_state_dict_strict(model, sd)
    return model.eval()


@pytest.mark.parametrize("config", CONFIGS)
def test_icnet_parity(config, tmp_path):
    cfg = _config(config)
    ref = _reference(cfg)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = _segzoo_model(config, cfg, path)
    assert model.backbone.out_channels == [128, 128, 128] and model.min_input_size == 14
    for h, w in ((72, 104), (67, 93), (14, 14)):  # odd sizes: the halvings round down
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ours = model(x)
        theirs = ssseg_logits(ref, x)
        assert ours.shape == theirs.shape and ours.shape[:2] == (1, cfg["num_classes"])
        assert rel_diff(ours, theirs) <= 1e-4

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
