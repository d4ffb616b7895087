"""Registry, records, listing, CLI listing, model cards, and that every listed name builds."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import segzoo
from segzoo.cli import main as cli_main
from segzoo.models.foreign import SSSEG_SEGMENTORS

ROOT = Path(__file__).resolve().parents[1]
ZOO_SEGMENTORS = {s.segmentor for s in SSSEG_SEGMENTORS.values()}  # registered by the head files, never listed by hand


def test_counts_and_required_names():
    names = segzoo.list_models()
    assert names == sorted(names)
    ssseg = [n for n in names if segzoo.model_info(n)["source"]["project"] == "sssegmentation"]
    # every config of the data file that segzoo's translator builds is registered, once; the data file
    # holds no other (tests/test_zoo_data.py: the rest of the zoo is skipped there with a reason)
    from segzoo.convert.sssegmentation import UnsupportedConfig, arch_from_config
    from segzoo.zoo import load_data

    def builds(cfg):
        try:
            return bool(arch_from_config(cfg))
        except UnsupportedConfig:
            return False

    data = load_data("sssegmentation")
    buildable = sorted(c for c, entry in data.items() if builds(entry["config"]))
    assert buildable == sorted(data), "data/sssegmentation.json lists configs segzoo cannot build"
    assert sorted(segzoo.model_info(n)["source"]["config"] for n in ssseg) == buildable
    assert len(ssseg) == len(buildable) >= 87  # the zoo's FCN/PSP/DeepLabV3(+)/UPerNet/Segformer configs
    info = segzoo.model_info("upernet_swin_base_ade20k")
    assert {k: info["source"][k] for k in ("project", "repo_id")} == {"project": "transformers",
                                                                       "repo_id": "openmmlab/upernet-swin-base"}
    assert info["metrics"] == {"mIoU": 50.76, "mIoU_ms": 52.4}  # mmseg's table for the converted checkpoint
    assert info["weights"][0]["hf_hub_id"] == "openmmlab/upernet-swin-base"
    for v in ("tiny", "small", "base", "large", "xlarge"):
        assert f"upernet_convnext_{v}_ade20k" in names
    for b in range(6):
        assert f"segformer_mit_b{b}_ade20k" in names and f"segformer_mit_b{b}_cityscapes" in names


def test_record_fields_are_json_and_complete():
    for name in segzoo.list_models():
        info = segzoo.model_info(name)
        json.dumps(info)
        for key in ("name", "architecture", "backbone", "dataset", "num_classes", "class_names", "crop_size",
                    "inference", "normalization", "metrics", "weights", "source", "recipe"):
            assert key in info, (name, key)
        assert len(info["class_names"]) == info["num_classes"]
        assert info["architecture"] in ZOO_SEGMENTORS | {"sam"} and info["architecture"] == info["arch"]["segmentor"]
        assert info["name"] == name
        assert info["inference"]["mode"] in ("whole", "slide")
        assert all(v > 0 for v in info["metrics"].values()), name
        if not info["weights"] or info["num_classes"] == 0:
            continue  # an architecture without a checkpoint (ConvNeXtV2), or a promptable model (SAM)
        assert info["recipe"]["optimizer"]["type"] in ("SGD", "AdamW"), name
        assert info["recipe"]["batch_size"] > 0 and len(info["recipe"]["crop_size"]) == 2, name
        if info["source"]["project"] == "sssegmentation":
            assert info["weights"][0]["format"] == "sssegmentation"
            # a metric wherever the zoo's table reports one (its MobileViT rows have an empty column)
            assert info["metrics"] or info["architecture"] == "deeplabv3" and "mobilevit" in name, name
        else:  # the Hub repos report no metric: each number and recipe cites where it was published
            assert info["metrics"]["mIoU"] > 0, name
            assert _cited(info["source"]["metrics_source"]) and _cited(info["recipe"]["source"]), name


def _cited(source) -> bool:
    """A citation: text, or a mapping with ``citation`` and ``url``."""
    return bool(source) and (isinstance(source, str) or bool(source.get("citation") and source.get("url")))


def test_filters():
    assert all(n.startswith("upernet_") for n in segzoo.list_models("upernet_*"))
    ade = segzoo.list_models(dataset="ade20k")
    assert ade and all(segzoo.model_info(n)["dataset"] == "ade20k" for n in ade)
    assert segzoo.list_models(architecture="pspnet", backbone="resnet50_os8", dataset="voc") == ["pspnet_resnet50_os8_voc"]
    with_weights = [n for n in segzoo.list_models() if segzoo.model_info(n)["weights"]]
    assert segzoo.list_models(pretrained=True) == with_weights and len(with_weights) > 300
    assert segzoo.list_models("no_such_*") == []


def test_unknown_name_suggests():
    with pytest.raises(segzoo.UnknownModelError, match="did you mean.*upernet_swin_base_ade20k"):
        segzoo.create_model("upernet_swin_bse_ade20k")
    with pytest.raises(KeyError):
        segzoo.model_info("deeplabv3plus_resnet50_cityscapes")


def test_listing_does_not_import_torch():
    code = "import sys, segzoo; n = segzoo.list_models(); segzoo.model_info(n[0]); assert 'torch' not in sys.modules, 'torch imported'; print(len(n))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(segzoo.list_models())


def test_cli_list_and_info(capsys):
    assert cli_main(["list-models", "pspnet_*", "--dataset", "voc"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == segzoo.list_models("pspnet_*", dataset="voc")
    assert cli_main(["list-models", "--architecture", "segformer", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(segzoo.list_models(architecture="segformer"))
    assert cli_main(["info", "fcn_resnet50_os8_ade20k"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["mIoU"] == 36.96
    assert cli_main(["info", "fcn_resnet50_ade20k"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_model_cards_up_to_date():
    from segzoo.cards import render_model_cards
    assert (ROOT / "MODEL_CARDS.md").read_text() == render_model_cards(), \
        "MODEL_CARDS.md is out of date: run python scripts/gen_model_cards.py"


def _unique_archs():
    """Every distinct network of the registry (one name each); the first of each (architecture,
    backbone type) runs by default, the others in the slow run (the slow sweep also loads each)."""
    seen, pairs = {}, set()
    for name in segzoo.list_models():
        if segzoo.model_info(name)["num_classes"] == 0:
            continue  # promptable (SAM): tests/test_sam.py
        arch = dict(segzoo.model_info(name)["arch"])
        arch.pop("num_classes")
        seen.setdefault(json.dumps(arch, sort_keys=True), name)
    params = []
    for name in sorted(seen.values()):
        arch = segzoo.model_info(name)["arch"]
        pair = (arch["segmentor"], arch["backbone"]["type"])
        params.append(pytest.param(name, marks=() if pair not in pairs else pytest.mark.slow))
        pairs.add(pair)
    return params


@pytest.mark.parametrize("name", _unique_archs())
def test_every_architecture_builds_and_runs(name):
    model = segzoo.create_model(name)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    assert out.shape[:2] == (1, model.record.num_classes)
    assert torch.isfinite(out).all()
    model.train()
    train_out = model(torch.randn(2, 3, 64, 64))
    # the outputs the losses need, each named in the segmentor's LOSSES, and every loss the
    # record's recipe trains with has an output to read
    assert {"logits", "aux_logits"} <= set(train_out) <= set(type(model).LOSSES)
    assert set(model.record.recipe.get("losses") or {}) <= set(model.losses_of(train_out))
    assert len(train_out["aux_logits"]) >= len(model.record.arch["aux_heads"])  # PointRend adds its coarse head


def test_num_classes_override_and_bad_override():
    m = segzoo.create_model("fcn_resnet50_os16_voc", num_classes=5)
    assert m.num_classes == 5 and all(h.classifier.out_channels == 5 for h in m.aux_heads)
    with pytest.raises(TypeError, match="unknown override"):
        segzoo.create_model("fcn_resnet50_os16_voc", no_such_key=1)
    m = segzoo.create_model("fcn_resnet50_os16_voc", backbone={"output_stride": 8})
    assert m.backbone.reductions[-1] == 8


# ---- names a user types -------------------------------------------------------------------------
def test_hub_ids_and_config_names_are_aliases(capsys):
    assert segzoo.model_info("openmmlab/upernet-swin-base")["name"] == "upernet_swin_base_ade20k"
    assert segzoo.model_info("hf-hub:nvidia/segformer-b0-finetuned-ade-512-512")["name"] == "segformer_mit_b0_ade20k"
    assert segzoo.model_info("nvidia/segformer-b2-finetuned-cityscapes-1024-1024")["name"] == \
        "segformer_mit_b2_cityscapes"
    assert segzoo.model_info("upernet_swinbase_ade20k")["name"] == "upernet_swin_base_ade20k_ssseg"  # ssseg config
    assert segzoo.model_info("SegFormer_MiT_B0_ADE20K")["name"] == "segformer_mit_b0_ade20k"
    model = segzoo.create_model("nvidia/segformer-b0-finetuned-ade-512-512")
    assert model.record.name == "segformer_mit_b0_ade20k"
    assert cli_main(["info", "openmmlab/upernet-swin-base"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "upernet_swin_base_ade20k"


@pytest.mark.parametrize("typed", ["segformer_b0", "mit_b0", "segformer-b0"])
def test_suggestions_find_the_tokens(typed):
    with pytest.raises(segzoo.UnknownModelError) as info:
        segzoo.model_info(typed)
    suggested = str(info.value).split("did you mean: ")[1].rstrip("?").split(", ")
    assert set(suggested) == set(segzoo.list_models("segformer_mit_b0_*"))


def test_empty_listing_says_why(capsys):
    assert cli_main(["list-models", "segformr_*"]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and "no model matches 'segformr_*'; did you mean 'segformer_*'?" in cap.err
    assert cli_main(["list-models", "--dataset", "citiscapes"]) == 1
    assert "no dataset 'citiscapes'; did you mean cityscapes?" in capsys.readouterr().err
    assert cli_main(["list-models", "upernet_swin_*", "--dataset", "voc"]) == 1
    assert "it exists for dataset ade20k" in capsys.readouterr().err
    assert segzoo.list_models("SegFormer_*") == segzoo.list_models("segformer_*") != []  # any case


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"segzoo {segzoo.__version__}"


def test_pretrained_filter_drops_records_without_weights():
    import dataclasses

    from segzoo.registry import get_record, register, unregister
    rec = get_record("fcn_resnet50_os16_voc")
    register(dataclasses.replace(rec, name="test_registry_no_weights_voc", weights=(), source={}))
    try:
        assert "test_registry_no_weights_voc" in segzoo.list_models("test_registry_*")
        assert segzoo.list_models("test_registry_*", pretrained=True) == []
        assert "test_registry_no_weights_voc" not in segzoo.list_models(pretrained=True)
    finally:
        unregister("test_registry_no_weights_voc")
