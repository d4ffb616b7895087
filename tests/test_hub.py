"""Weight sources, cache and the save_pretrained / push_to_hub / convert round trip, against a real
HTTP server on 127.0.0.1 (tests/hub_emulator.py) that speaks the Hub's download and upload
endpoints and serves plain release files.

The model is a small SSSegmentation FCN (ResNet-18 backbone, 32-channel heads, 5 classes) with
random weights: its ``{'model': state_dict}`` checkpoint is what a release URL serves, and its
logits are the reference every load is compared with.
"""
import hashlib
import io
import json
import logging
import os
import socket
import time

import numpy as np
import pytest
import torch

import segzoo
from segzoo import hub
from segzoo.errors import CheckpointMismatchError
from segzoo.hub import ChecksumMismatchError, WeightsUnavailableError
from segzoo.registry import ModelRecord, register, unregister
from _ssseg import randomize_, rel_diff, ssseg_config, ssseg_logits

X = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref():
    """(arch, ssseg checkpoint bytes, reference logits on X)."""
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    from segzoo.convert.sssegmentation import arch_from_config
    cfg = ssseg_config("fcn_resnet50os16_voc", depth=18, structure_type="resnet18conv3x3stem")
    cfg["head"].update(in_channels=512, feats_channels=32)
    cfg["auxiliary"].update(in_channels=256, out_channels=32)
    cfg["num_classes"] = 5
    torch.manual_seed(0)
    model = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    randomize_(model, 0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict()}, buf)
    return arch_from_config(cfg), buf.getvalue(), ssseg_logits(model, X)


@pytest.fixture
def env(hub_env):
    """A fresh segzoo cache and Hugging Face cache per test, HF_ENDPOINT at a running emulator (conftest)."""
    return hub_env


@pytest.fixture
def make_record(ref):
    names = []

    def make(name, weights):
        arch, _, _ = ref
        names.append(name)
        return register(ModelRecord(
            name=name, architecture="fcn", backbone="resnet18_os16", dataset="voc", num_classes=5, arch=arch,
            class_names=("a", "b", "c", "d", "e"), metrics={"mIoU": 1.0}, weights=tuple(weights),
            source={"project": "sssegmentation", "config": "fcn_resnet50os16_voc"}))
    yield make
    for n in names:
        unregister(n)


def _logits(model):
    with torch.no_grad():
        return model(X)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- create_model(pretrained=True): sources in order, conversion cache ---------------------------
def test_pretrained_falls_back_converts_and_caches(env, ref, make_record, caplog, monkeypatch, tmp_path):
    arch, ckpt, expected = ref
    url = env.add_url_file("releases/download/ssseg_fcn/fcn_tiny_voc.pth", ckpt)
    rec = make_record("test_hub_fcn_tiny_voc", [
        {"hf_hub_id": "segzoo-mirror/fcn-tiny-voc", "filename": "model.safetensors", "revision": "main",
         "format": "segzoo"},
        {"url": url, "filename": "fcn_tiny_voc.pth", "format": "sssegmentation"}])
    caplog.set_level(logging.INFO, logger="segzoo")

    model = segzoo.create_model(rec.name, pretrained=True)
    assert rel_diff(_logits(model), expected) <= 1e-4
    log = caplog.text
    assert "hf-hub:segzoo-mirror/fcn-tiny-voc/model.safetensors" in log and "not found" in log
    assert "trying the next source" in log
    assert f"weights served by {url} (source 2 of 2)" in log
    assert env.requests_to("/segzoo-mirror/fcn-tiny-voc/resolve/main/model.safetensors")
    # the download is recorded in the ledger, the conversion cached next to its meta
    ledger = json.loads((tmp_path / "segzoo-cache/downloads/ledger.json").read_text())
    assert ledger[url]["sha256"] == hashlib.sha256(ckpt).hexdigest()
    converted = tmp_path / "segzoo-cache/converted" / rec.name
    assert _files(converted) == ["meta.json", "model.safetensors"]
    assert json.loads((converted / "meta.json").read_text())["source"] == url

    # second call: server gone, and neither download nor conversion may run
    env.stop()
    n_requests = len(env.log)
    monkeypatch.setattr(hub.cache, "fetch_weights", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(hub.cache, "to_segzoo", lambda *a, **k: pytest.fail("converted again"))
    caplog.clear()
    again = segzoo.create_model(rec.name, pretrained=True)
    assert torch.equal(_logits(again), _logits(model))
    assert len(env.log) == n_requests
    assert "(cached, from " + url in caplog.text


def test_each_kind_of_gone_source_falls_through(env, monkeypatch, caplog):
    good = env.add_url_file("ok/weights.bin", b"payload")
    env.add_url_file("slow/weights.bin", b"late")
    env.faults["/slow/weights.bin"] = ("sleep", 1.5)
    monkeypatch.setenv("SEGZOO_DOWNLOAD_TIMEOUT", "0.3")
    sources = [
        {"hf_hub_id": "nobody/nothing", "filename": "model.safetensors"},      # Hub: repo not found
        {"url": env.url("gone/weights.bin")},                                 # HTTP 404
        {"url": f"http://127.0.0.1:{_closed_port()}/weights.bin"},           # connection refused
        {"url": "http://segzoo-test-host.invalid/weights.bin"},              # DNS failure
        {"url": env.url("slow/weights.bin")},                                 # timeout
        {"url": good},
    ]
    caplog.set_level(logging.INFO, logger="segzoo")
    path, src = hub.fetch_weights(sources, label="fallbacks")
    assert path.read_bytes() == b"payload" and src["url"] == good
    text = caplog.text
    for reason in ("repository nobody/nothing not found", "HTTP 404", "connection refused", "DNS lookup failed",
                   "no answer within 0.3 s"):
        assert reason in text, reason
    assert f"served by {good} (source 6 of 6)" in text

    with pytest.raises(WeightsUnavailableError) as info:
        hub.fetch_weights(sources[:3], label="all_gone")
    first, *tried = str(info.value).splitlines()
    assert first.startswith("no weights for all_gone: none of its 3 sources could serve them; ")
    assert "HF_ENDPOINT" in first and "checkpoint=" in first  # what to do, on the first line
    assert len(tried) == 3 and all(line.startswith("  - ") for line in tried)  # each source tried, one a line
    assert "hf-hub:nobody/nothing/model.safetensors" in tried[0] and env.url("gone/weights.bin") in tried[1]
    with pytest.raises(WeightsUnavailableError, match=r"^no weights for one_gone: its one source could not serve "
                                                      r"them; connect"):
        hub.fetch_weights(sources[1:2], label="one_gone")


def test_unreachable_hub_serves_the_cache_or_fails_fast(env, monkeypatch):
    env.add_repo_file("org/cached", "model.safetensors", b"cached weights")
    cached = hub.hub_download("org/cached", "model.safetensors")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    assert hub.hub_download("org/cached", "model.safetensors") == cached
    with pytest.raises(WeightsUnavailableError, match=r"hf-hub:org/cached/other\.bin: not in the Hugging Face cache "
                                                      r"and the Hub cannot be reached \(connection to 127\.0\.0\.1:\d+ "
                                                      r"refused\)"):
        hub.hub_download("org/cached", "other.bin")
    assert time.monotonic() - start < 5  # not huggingface_hub's retries with backoff


# ---- downloads: checksums, interruptions, offline --------------------------------------------------
def test_sha256_mismatch_keeps_nothing(env, tmp_path):
    data = b"release bytes" * 1000
    url = env.add_url_file("rel/model.pth", data)
    downloads = tmp_path / "segzoo-cache/downloads"
    with pytest.raises(ChecksumMismatchError, match=f"{url}: sha256 {hashlib.sha256(data).hexdigest()} does not "
                                                    "match the record's"):
        hub.download_url(url, sha256="0" * 64)
    assert _files(downloads) == []
    # the record's sha256 accepted; the ledger remembers it
    path = hub.download_url(url, sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    # a cached file that rots on disk is verified on use and fetched again
    path.write_bytes(b"rotten")
    assert hub.download_url(url).read_bytes() == data
    assert len(env.requests_to("/rel/model.pth")) == 3
    # without a record sha256 the ledger's (recorded on first download) guards later downloads
    path.unlink()
    env.url_files["/rel/model.pth"] = b"changed upstream"
    with pytest.raises(ChecksumMismatchError, match="recorded on first download"):
        hub.download_url(url)
    assert _files(downloads) == ["ledger.json"]
    # Hub files: a record sha256 is checked too, and a mismatching file leaves the HF cache
    env.add_repo_file("org/weights", "model.safetensors", data)
    with pytest.raises(ChecksumMismatchError, match="hf-hub:org/weights/model.safetensors: sha256"):
        hub.hub_download("org/weights", "model.safetensors", sha256="1" * 64)
    assert not [p for p in (tmp_path / "hf-home").rglob("model.safetensors") if p.exists()]
    assert hub.hub_download("org/weights", "model.safetensors",
                            sha256=hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_interrupted_download_leaves_nothing_and_retries_cleanly(env, tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    url = env.add_url_file("rel/big.pth", data)
    env.faults["/rel/big.pth"] = "truncate"
    with pytest.raises(WeightsUnavailableError, match=f"{url}: download interrupted"):
        hub.fetch_weights([{"url": url}], label="cut")
    assert _files(tmp_path / "segzoo-cache/downloads") == []  # no .part, no file, no ledger entry
    del env.faults["/rel/big.pth"]
    # what a killed process leaves: a .part file beside the target, never read; old ones are swept
    folder = tmp_path / "segzoo-cache/downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".big.pth.999.dead.part").write_bytes(data[:1000])
    os.utime(folder / ".big.pth.999.dead.part", (time.time() - 7200,) * 2)
    (folder / ".big.pth.998.busy.part").write_bytes(data[:10])  # another process, still downloading
    path, _ = hub.fetch_weights([{"url": url}], label="cut")
    assert path.read_bytes() == data
    assert _files(folder) == [".big.pth.998.busy.part", "big.pth"]
    ledger = json.loads((tmp_path / "segzoo-cache/downloads/ledger.json").read_text())
    assert ledger[url]["sha256"] == hashlib.sha256(data).hexdigest()


def test_offline_with_empty_cache_is_one_clear_error(env, make_record, monkeypatch):
    url = env.add_url_file("rel/fcn.pth", b"never served")
    rec = make_record("test_hub_offline_fcn", [
        {"hf_hub_id": "segzoo-mirror/offline-fcn", "filename": "model.safetensors", "format": "segzoo"},
        {"url": url, "filename": "fcn.pth", "format": "sssegmentation"}])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        segzoo.create_model(rec.name, pretrained=True)
    first, *tried = str(info.value).splitlines()
    assert first.startswith(f"no weights for {rec.name}: none of its 2 sources could serve them; connect to the "
                            "network (or set HF_ENDPOINT to a reachable Hub mirror), download the file into the cache "
                            "beforehand, or pass checkpoint=<local file>")
    assert tried[0] == ("  - hf-hub:segzoo-mirror/offline-fcn/model.safetensors: not in the Hugging Face cache and "
                        "HF_HUB_OFFLINE is set")
    assert tried[1] == f"  - {url} (fcn.pth) is not in the cache and HF_HUB_OFFLINE is set"
    with pytest.raises(WeightsUnavailableError, match=r"hf-hub:org/saved-model/config\.json: not in the Hugging Face"):
        segzoo.create_model("hf-hub:org/saved-model")
    assert env.log == []


# ---- checkpoint= forms, strict loading, num_classes ----------------------------------------------
def test_checkpoint_url_hub_file_and_folder(env, ref, make_record, tmp_path):
    arch, ckpt, expected = ref
    rec = make_record("test_hub_checkpoint_forms", [])
    url = env.add_url_file("files/fcn.pth", ckpt)
    env.add_repo_file("someone/fcn-ckpt", "weights/fcn.pth", ckpt)
    by_url = segzoo.create_model(rec.name, checkpoint=url)
    assert rel_diff(_logits(by_url), expected) <= 1e-4
    by_hub = segzoo.create_model(rec.name, checkpoint="hf-hub:someone/fcn-ckpt/weights/fcn.pth")
    assert rel_diff(_logits(by_hub), expected) <= 1e-4
    folder = tmp_path / "folder"
    folder.mkdir()
    from safetensors.torch import save_file
    save_file(by_url.state_dict(), str(folder / "model.safetensors"))
    by_dir = segzoo.create_model(rec.name, checkpoint=folder)
    assert torch.equal(_logits(by_dir), _logits(by_url))


def test_strict_loading_names_extra_and_missing_keys(ref, make_record, tmp_path):
    arch, ckpt, _ = ref
    rec = make_record("test_hub_strict", [])
    sd = torch.load(io.BytesIO(ckpt), weights_only=True)["model"]
    extra = dict(sd, **{"decoder.9.weight": torch.zeros(1)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"unused keys \(1\): decoder\.9\.weight"):
        segzoo.create_model(rec.name, checkpoint=tmp_path / "extra.pth")
    missing = {k: v for k, v in sd.items() if k != "backbone_net.layer4.1.bn2.running_var"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): backbone\.layer4\.1\.bn2\.running_var"):
        segzoo.create_model(rec.name, checkpoint=tmp_path / "missing.pth")


def test_num_classes_reinitialises_only_classifiers_and_round_trips_local_dir(env, ref, make_record, tmp_path, caplog):
    arch, ckpt, expected = ref
    rec = make_record("test_hub_reheaded", [])
    (tmp_path / "fcn.pth").write_bytes(ckpt)
    caplog.set_level(logging.INFO, logger="segzoo")
    model = segzoo.create_model(rec.name, checkpoint=tmp_path / "fcn.pth", num_classes=3)
    assert "num_classes=3 differs from the checkpoint's 5; re-initialised decode_head.classifier, " \
           "aux_heads.0.classifier" in caplog.text
    full = segzoo.create_model(rec.name, checkpoint=tmp_path / "fcn.pth")
    ours, theirs = model.state_dict(), full.state_dict()
    assert set(ours) == set(theirs)
    for k in ours:
        if ".classifier." in k:
            assert ours[k].shape[0] == 3 and theirs[k].shape[0] == 5, k
        else:
            assert torch.equal(ours[k], theirs[k]), k
    assert _logits(model).shape[1] == 3

    out = hub.save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == cfg["arch"]["num_classes"] == 3 and cfg["class_names"] == []
    assert cfg["name"] == rec.name and cfg["arch"]["decode_head"] == arch["decode_head"]
    assert "library_name: segzoo" in (out / "README.md").read_text()
    back = segzoo.create_model(f"local-dir:{out}")
    assert back.record.num_classes == 3 and back.record.name == rec.name
    assert torch.equal(_logits(back), _logits(model))


# ---- save_pretrained -> push_to_hub -> create_model("hf-hub:...") ---------------------------------
def test_push_to_hub_round_trip(env, ref, make_record, tmp_path, monkeypatch):
    arch, ckpt, expected = ref
    rec = make_record("test_hub_pushed", [])
    (tmp_path / "fcn.pth").write_bytes(ckpt)
    model = segzoo.create_model(rec.name, checkpoint=tmp_path / "fcn.pth")
    info = model.push_to_hub("segzoo-test/fcn-tiny", token="hf_emulator")
    assert env.requests_to("/api/repos/create") and env.requests_to("/api/models/segzoo-test/fcn-tiny/commit/main")
    files = env.repos["segzoo-test/fcn-tiny"].files()
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert info.oid == env.repos["segzoo-test/fcn-tiny"].branches["main"]
    assert "hf-hub:segzoo-test/fcn-tiny" in files["README.md"].decode() and env.cards  # front matter validated
    assert json.loads(files["config.json"])["arch"] == json.loads(json.dumps(dict(arch)))

    loaded = segzoo.create_model("hf-hub:segzoo-test/fcn-tiny")
    assert rel_diff(_logits(loaded), expected) <= 1e-4
    assert loaded.record.weights[0]["hf_hub_id"] == "segzoo-test/fcn-tiny"
    # a record whose weights are the mirror, pinned to the pushed commit: segzoo-format Hub files are
    # not copied into the conversion cache, its meta points at the Hugging Face cache's blob
    mirrored = make_record("test_hub_mirrored", [{"hf_hub_id": "segzoo-test/fcn-tiny", "filename": "model.safetensors",
                                                  "revision": info.oid, "format": "segzoo"}])
    pinned = segzoo.create_model(mirrored.name, pretrained=True)
    assert torch.equal(_logits(pinned), _logits(loaded))
    unpinned = make_record("test_hub_bad_revision", [{"hf_hub_id": "segzoo-test/fcn-tiny", "filename": "model.safetensors",
                                                     "revision": "v9", "format": "segzoo"}])
    with pytest.raises(WeightsUnavailableError, match="revision v9 not found in segzoo-test/fcn-tiny"):
        segzoo.create_model(unpinned.name, pretrained=True)
    meta = json.loads((tmp_path / "segzoo-cache/converted" / mirrored.name / "meta.json").read_text())
    assert meta["format"] == "segzoo" and meta["file"].startswith(str(tmp_path / "hf-home"))
    assert _files(tmp_path / "segzoo-cache/converted" / mirrored.name) == ["meta.json"]
    # both files now sit in the HF cache: offline, with the server gone, the model still loads
    env.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = segzoo.create_model("hf-hub:segzoo-test/fcn-tiny")
    assert torch.equal(_logits(again), _logits(loaded))


# ---- segzoo convert ---------------------------------------------------------------------------------
def test_convert_command_writes_a_loadable_folder(env, ref, make_record, tmp_path, capsys):
    from segzoo.cli import main
    arch, ckpt, expected = ref
    url = env.add_url_file("rel/fcn_convert.pth", ckpt)
    rec = make_record("test_hub_convert", [{"url": url, "filename": "fcn_convert.pth", "format": "sssegmentation"}])
    assert main(["convert", rec.name, "--out", str(tmp_path / "mirror")]) == 0
    out = capsys.readouterr().out
    assert f"sssegmentation weights from {url}" in out and "model.safetensors (sha256 " in out
    cfg = json.loads((tmp_path / "mirror/config.json").read_text())
    assert cfg["converted_from"]["source"] == url and cfg["converted_from"]["format"] == "sssegmentation"
    assert rel_diff(_logits(segzoo.create_model(f"local-dir:{tmp_path / 'mirror'}")), expected) <= 1e-4

    (tmp_path / "given.pth").write_bytes(ckpt)
    assert main(["convert", rec.name, "--out", str(tmp_path / "from-file"),
                 "--checkpoint", str(tmp_path / "given.pth")]) == 0
    from safetensors.torch import load_file
    a, b = load_file(str(tmp_path / "mirror/model.safetensors")), load_file(str(tmp_path / "from-file/model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["convert", rec.name, "--out", str(tmp_path / "x"), "--checkpoint", str(tmp_path / "nope.pth")]) == 1
    assert "segzoo: error: checkpoint not found:" in capsys.readouterr().err


# ---- a transformers-format Hub record -------------------------------------------------------------
def test_transformers_hub_record(env, tmp_path):
    """A Segformer repo as transformers saves it: the record's Hub sources (model.safetensors, then
    pytorch_model.bin) serve it, its format comes from the record, ``hf-hub:`` finds the record."""
    import copy
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    arch = copy.deepcopy(dict(segzoo.model_info("segformer_mit_b0_ade20k")["arch"]))
    arch["backbone"].update(embed_dims=[16, 32, 80, 128], depths=[1, 1, 1, 1])
    arch["decode_head"]["channels"] = 32
    arch["num_classes"] = 4
    bb = arch["backbone"]
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(SegformerConfig(
        depths=bb["depths"], hidden_sizes=bb["embed_dims"], num_attention_heads=bb["num_heads"],
        sr_ratios=bb["sr_ratios"], decoder_hidden_size=32, num_labels=4)).eval()
    randomize_(ref, 0)
    ref.save_pretrained(tmp_path / "hf")
    for name in ("config.json", "model.safetensors"):
        env.add_repo_file("nvidia/segformer-tiny-test", name, (tmp_path / "hf" / name).read_bytes())
    rec = register(ModelRecord(
        name="test_hub_segformer_tiny", architecture="segformer", backbone="mit_tiny", dataset="ade20k",
        num_classes=4, arch=arch, weights=tuple({"hf_hub_id": "nvidia/segformer-tiny-test", "filename": f,
                                                 "revision": "main", "format": "transformers"}
                                                for f in ("model.safetensors", "pytorch_model.bin"))))
    try:
        model = segzoo.create_model(rec.name, pretrained=True)
        with torch.no_grad():
            expected = ref(pixel_values=X).logits
        assert rel_diff(_logits(model), expected) <= 1e-4
        by_repo = segzoo.create_model("hf-hub:nvidia/segformer-tiny-test")
        assert by_repo.record is rec and torch.equal(_logits(by_repo), _logits(model))
    finally:
        unregister(rec.name)


def test_pretrained_backbone_through_timm_and_the_hub(env, tmp_path):
    """pretrained_backbone=True: timm resolves the ImageNet weights on the Hub (here the emulator)
    and only the backbone takes them; the heads stay freshly initialised."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(3)
    imagenet = timm.create_model("resnet50c", pretrained=False).state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(path))
    env.add_repo_file("timm/resnet50c.gluon_in1k", "model.safetensors", path.read_bytes())
    model = segzoo.create_model("fcn_resnet50_os16_voc", pretrained_backbone=True)
    ours = model.backbone.state_dict()
    assert {k for k in imagenet if not k.startswith("fc.")} == set(ours)
    assert all(torch.equal(ours[k], imagenet[k]) for k in ours)
    fresh = segzoo.create_model("fcn_resnet50_os16_voc")
    assert not torch.equal(fresh.backbone.state_dict()["layer1.0.conv1.weight"], imagenet["layer1.0.conv1.weight"])


# ---- fine-tuning round trip ---------------------------------------------------------------------
def test_fine_tuned_model_reloads_under_its_name(env, ref, make_record, tmp_path, capsys):
    """create_model(name, pretrained, num_classes=3) -> save_pretrained(dir) -> create_model(name,
    checkpoint=dir) (with or without num_classes), local-dir: and segzoo predict --checkpoint all
    give the saved model back; the record and the card say what the model is."""
    from PIL import Image

    from segzoo.cli import main as cli_main
    _, ckpt, _ = ref
    url = env.add_url_file("rel/fcn5.pth", ckpt)
    rec = make_record("test_hub_finetune_base", [{"url": url, "filename": "fcn5.pth", "format": "sssegmentation"}])
    model = segzoo.create_model(rec.name, pretrained=True, num_classes=3, class_names=["sky", "road", "car"])
    assert model.num_classes == 3
    assert (model.record.num_classes, model.record.class_names, model.record.metrics) == (3, ("sky", "road", "car"), {})
    assert rec.num_classes == 5  # the registered record itself is untouched
    with torch.no_grad():  # "fine-tuning": the new classifier learns something
        model.decode_head.classifier.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    expected = _logits(model)
    out = model.save_pretrained(tmp_path / "ft3")
    card = (out / "README.md").read_text()
    assert "3 classes (sky, road, car)" in card
    assert f"The weights of `{rec.name}`, converted from SSSegmentation `fcn_resnet50os16_voc`" in card
    assert "fine-tuned from them to 3 classes" in card and "replace the 5-class ones" in card
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == 3 and cfg["provenance"]["new_classifier"]["num_classes"] == 3

    for kwargs in ({}, {"num_classes": 3}):
        again = segzoo.create_model(rec.name, checkpoint=tmp_path / "ft3", **kwargs)
        assert again.num_classes == 3 and again.record.class_names == ("sky", "road", "car")
        assert torch.equal(_logits(again), expected)
    by_dir = segzoo.create_model(f"local-dir:{tmp_path / 'ft3'}")
    assert torch.equal(_logits(by_dir), expected)
    resaved = segzoo.create_model(rec.name, checkpoint=tmp_path / "ft3", num_classes=2)
    assert resaved.num_classes == 2 and resaved.record.class_names == ()

    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(img)
    rc = cli_main(["predict", str(img), "--model", rec.name, "--checkpoint", str(tmp_path / "ft3"),
                   "--out", str(tmp_path / "pred")])
    assert rc == 0, capsys.readouterr().err
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    assert labels.shape == (40, 56) and labels.max() < 3
    assert np.array_equal(labels, by_dir.predict(np.asarray(Image.open(img))))


def test_random_model_card_says_so(ref, make_record, tmp_path):
    rec = make_record("test_hub_random_card", [])
    model = segzoo.create_model(rec.name, num_classes=4)
    assert model.record.num_classes == 4 and model.record.class_names == () and model.record.dataset == ""
    card = (model.save_pretrained(tmp_path / "rand") / "README.md").read_text()
    assert "Randomly initialised (no pretrained weights)." in card
    assert "onverted" not in card


# ---- a changed upstream file ----------------------------------------------------------------------
def _changed_checkpoint(ckpt: bytes, shift: torch.Tensor) -> bytes:
    """The checkpoint with ``shift`` added to the decode head's classifier bias: logits move by it."""
    sd = torch.load(io.BytesIO(ckpt), weights_only=True)["model"]
    key, = [k for k, v in sd.items() if k.startswith("decoder.") and k.endswith(".bias") and v.shape == shift.shape]
    sd[key] = sd[key] + shift
    buf = io.BytesIO()
    torch.save({"model": sd}, buf)
    return buf.getvalue()


def test_changed_upstream_file_is_converted_again(env, ref, make_record, tmp_path, caplog, monkeypatch):
    """The cached conversion records the sha256 of the file it was converted from. The release URL
    starts serving other bytes; once its ledger entry is removed (what the checksum error says to do),
    the next create_model(pretrained=True) downloads and converts the new file instead of loading the
    stale conversion; while nothing changed, the cache is used without network."""
    arch, ckpt, expected = ref
    shift = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.0])
    new = _changed_checkpoint(ckpt, shift)
    url = env.add_url_file("rel/fcn_upstream.pth", ckpt)
    rec = make_record("test_hub_upstream_changed", [{"url": url, "filename": "fcn_upstream.pth",
                                                     "format": "sssegmentation"}])
    caplog.set_level(logging.INFO, logger="segzoo")
    assert rel_diff(_logits(segzoo.create_model(rec.name, pretrained=True)), expected) <= 1e-4
    meta_path = tmp_path / "segzoo-cache/converted" / rec.name / "meta.json"
    assert json.loads(meta_path.read_text())["original"] == {"source": url, "sha256": hashlib.sha256(ckpt).hexdigest()}

    # upstream changes; the downloaded file is gone (cleaned up, say): the ledger still names the
    # converted file, so the cache is used, without network
    env.url_files["/rel/fcn_upstream.pth"] = new
    ledger_path = tmp_path / "segzoo-cache/downloads/ledger.json"
    (tmp_path / "segzoo-cache/downloads" / json.loads(ledger_path.read_text())[url]["path"]).unlink()
    n_requests = len(env.log)
    caplog.clear()
    assert rel_diff(_logits(segzoo.create_model(rec.name, pretrained=True)), expected) <= 1e-4
    assert len(env.log) == n_requests and "(cached, from " + url in caplog.text
    with pytest.raises(ChecksumMismatchError, match="to accept a changed upstream file"):
        hub.download_url(url)

    # the changed file accepted: the next load downloads it and converts it again
    ledger = json.loads(ledger_path.read_text())
    del ledger[url]
    ledger_path.write_text(json.dumps(ledger))
    caplog.clear()
    model = segzoo.create_model(rec.name, pretrained=True)
    assert rel_diff(_logits(model), expected + shift.view(1, -1, 1, 1)) <= 1e-4
    assert "(cached, from" not in caplog.text
    assert json.loads(meta_path.read_text())["original"]["sha256"] == hashlib.sha256(new).hexdigest()
    # and that conversion is the cached one from now on, without network or conversion
    env.stop()
    monkeypatch.setattr(hub.cache, "to_segzoo", lambda *a, **k: pytest.fail("converted again"))
    again = segzoo.create_model(rec.name, pretrained=True)
    assert torch.equal(_logits(again), _logits(model))


def test_changed_hub_file_is_converted_again(env, ref, make_record, tmp_path, caplog, monkeypatch):
    """A Hub source: the file in the Hugging Face cache is the one served. A new commit upstream
    changes nothing until the HF cache has it; then the next load converts it again. With the HF
    cache emptied and the Hub gone, the cached conversion is still used, with a warning."""
    arch, ckpt, expected = ref
    shift = torch.tensor([0.0, 2.0, 0.0, 0.0, -1.0])
    env.add_repo_file("someone/fcn-upstream", "fcn.pth", ckpt)
    rec = make_record("test_hub_upstream_hub", [{"hf_hub_id": "someone/fcn-upstream", "filename": "fcn.pth",
                                                 "revision": "main", "format": "sssegmentation"}])
    caplog.set_level(logging.INFO, logger="segzoo")
    first = segzoo.create_model(rec.name, pretrained=True)
    assert rel_diff(_logits(first), expected) <= 1e-4
    env.add_repo_file("someone/fcn-upstream", "fcn.pth", _changed_checkpoint(ckpt, shift))  # a new commit on main
    n_requests = len(env.log)
    assert torch.equal(_logits(segzoo.create_model(rec.name, pretrained=True)), _logits(first))
    assert len(env.log) == n_requests  # the HF cache still holds the old commit: nothing to check online

    hub.hub_download("someone/fcn-upstream", "fcn.pth")  # the HF cache learns of the new commit
    caplog.clear()
    model = segzoo.create_model(rec.name, pretrained=True)
    assert rel_diff(_logits(model), expected + shift.view(1, -1, 1, 1)) <= 1e-4
    assert "now serves another file" in caplog.text and "(cached, from" not in caplog.text

    import shutil
    shutil.rmtree(tmp_path / "hf-home")
    env.stop()
    monkeypatch.setattr(hub.cache, "to_segzoo", lambda *a, **k: pytest.fail("converted again"))
    caplog.clear()
    again = segzoo.create_model(rec.name, pretrained=True)
    assert torch.equal(_logits(again), _logits(model))
    assert "cannot check that the cached conversion" in caplog.text
