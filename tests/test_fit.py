"""model.fit / model.evaluate for real: a small model learns the synthetic shapes, a stopped run
resumes bit-identically, two torchrun processes end where one process does, bf16 autocast trains on
the CPU, non-finite losses are skipped and counted, checkpoints load back with create_model."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import segzoo
from segzoo.data import ShapesDataset

NORM = ["Normalize", {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}]
PIPE = [["RandomFlip", {"prob": 0.5}], NORM, ["ToTensor", {}]]


def tiny_fcn(num_classes=4, dropout=0.0, seed=0):
    """FCN on ResNet-18 (output stride 8), 32-channel heads: the record's structure, cheap."""
    torch.manual_seed(seed)
    return segzoo.create_model(
        "fcn_resnet50_os8_ade20k", num_classes=num_classes, backbone={"depth": 18},
        decode_head={"channels": 32, "dropout": dropout},
        aux_heads=[{"type": "fcn", "in_index": 2, "channels": 16, "num_convs": 1, "dropout": dropout}])


def test_recipe_is_typed_printable_and_editable():
    model = segzoo.create_model("segformer_mit_b0_ade20k")
    r = model.recipe
    assert (r.optimizer, r.lr, r.iterations, r.batch_size, r.crop_size) == ("AdamW", 6e-05, 160000, 16, (512, 512))
    assert r.params_rules["head"] == {"lr_multiplier": 10.0} and r.warmup["iters"] == 1500
    assert "AdamW" in str(r) and "RandomCrop" in str(r)
    r2 = r.replace(iterations=600, batch_size=8, lr=0.01, crop_size=256, amp="bf16")
    assert (r2.iterations, r2.batch_size, r2.lr, r2.crop_size, r2.amp) == (600, 8, 0.01, (256, 256), "bf16")
    assert r2.pipeline()[1] == ["RandomCrop", {"crop_size": [256, 256], "one_category_max_ratio": 0.75}]
    with pytest.raises(TypeError, match="did you mean iterations"):
        r.replace(iteration=5)
    ssseg = segzoo.create_model("fcn_resnet50_os8_ade20k").recipe
    assert (ssseg.optimizer, ssseg.momentum, ssseg.epochs, ssseg.schedule, ssseg.power) == \
        ("SGD", 0.9, 130, "poly", 0.9)
    model.recipe = r2
    assert model.recipe.lr == 0.01


def test_fit_learns_shapes_and_checkpoints_load_back(tmp_path):
    """>= 0.9 mIoU on held-out synthetic images (4 classes) after a few CPU minutes."""
    model = tiny_fcn()
    train, val = ShapesDataset(48, seed=0), ShapesDataset(12, seed=1)
    out = tmp_path / "run"
    res = model.fit(train, val, out=out, iterations=160, batch_size=8, lr=0.05, crop_size=64, num_workers=0,
                    train_pipeline=PIPE, eval_interval=80, log_interval=40, progress=False)
    losses = [h["loss"] for h in res["history"] if "loss" in h]
    assert losses[-1] < losses[0] * 0.5
    metrics = model.evaluate(val, progress=False)  # the record's test protocol, as fit's validation
    assert metrics["mIoU"] >= 90.0, metrics
    assert metrics["mIoU"] == pytest.approx(res["history"][-1]["val"]["mIoU"])
    assert res["best"]["mIoU"] == pytest.approx(max(h["val"]["mIoU"] for h in res["history"] if "val" in h))
    lines = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(res["history"]))
    back = segzoo.create_model(f"local-dir:{out / 'last'}")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.eval()(x), model.eval()(x))
    assert (out / "best" / "model.safetensors").is_file()


def test_resume_is_bit_identical(tmp_path):
    """Stop at iteration 3 of 6 and resume: the weights equal an uninterrupted run's (random crops,
    flips and dropout included)."""
    pipe = [["RandomCrop", {"crop_size": [48, 48], "one_category_max_ratio": 0.75}], *PIPE,
            ["Padding", {"output_size": [48, 48], "data_type": "tensor"}]]
    kw = dict(iterations=6, batch_size=4, lr=0.01, num_workers=0, train_pipeline=pipe, progress=False,
              crop_size=48)
    train = ShapesDataset(10, seed=2)
    a = tiny_fcn(dropout=0.1)
    a.fit(train, **kw)
    b = tiny_fcn(dropout=0.1)
    b.fit(train, out=tmp_path / "b", steps=3, **kw)
    c = tiny_fcn(dropout=0.1, seed=5)  # other initial weights: all of it must come from the checkpoint
    c.fit(train, out=tmp_path / "b", resume=tmp_path / "b", **kw)
    sa, sc = a.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        tiny_fcn().fit(train, resume=tmp_path / "nowhere", **kw)


class _NaNFirst(torch.utils.data.Dataset):
    """Ready tensors (no pipeline): the first item is all NaN."""

    def __init__(self):
        self.base = ShapesDataset(4, seed=3)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        item = self.base[i]
        x = torch.as_tensor(item["image"]).permute(2, 0, 1).float() / 255
        return (torch.full_like(x, float("nan")) if i == 0 else x), torch.as_tensor(item["mask"])


def test_bf16_autocast_trains_and_nonfinite_losses_are_skipped():
    model = tiny_fcn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="non-finite"):
        res = model.fit(_NaNFirst(), iterations=4, batch_size=1, amp="bf16", train_pipeline=[], num_workers=0,
                        progress=False, log_interval=1)
    assert res["skipped"] >= 1
    assert all(np.isfinite(h["loss"]) for h in res["history"])
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with the gradient scaler needs a GPU")
def test_fp16_with_grad_scaler_on_gpu():
    model = tiny_fcn().cuda()
    res = model.fit(ShapesDataset(8), iterations=3, batch_size=4, amp="fp16", train_pipeline=PIPE, num_workers=0,
                    progress=False, log_interval=1)
    assert all(np.isfinite(h["loss"]) for h in res["history"])


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_fit import tiny_fcn, PIPE
    from segzoo.data import ShapesDataset
    from segzoo.train.trainer import distributed_context
    ctx = distributed_context()
    model = tiny_fcn()
    model.fit(ShapesDataset(8, seed=4), iterations=3, batch_size=4, lr=0.01, freeze_bn=True, num_workers=0,
              train_pipeline=PIPE, progress=False)
    if ctx.rank == 0:
        torch.save(model.state_dict(), sys.argv[1])
""")


def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun --nproc-per-node 2 (gloo, CPU), 2 images per process, against one process with the
    same global batch of 4 (BatchNorm frozen: per-process batch statistics would differ by design)."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                    str(script), str(tmp_path / "ddp.pt")], check=True, env=env, timeout=600)
    ddp = torch.load(tmp_path / "ddp.pt")
    single = tiny_fcn()
    single.fit(ShapesDataset(8, seed=4), iterations=3, batch_size=4, lr=0.01, freeze_bn=True, num_workers=0,
               train_pipeline=PIPE, progress=False)
    for k, v in single.state_dict().items():
        assert torch.allclose(v.float(), ddp[k].float(), rtol=1e-4, atol=1e-6), k
