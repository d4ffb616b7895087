"""Training parity with SSSegmentation 1.7.0's trainer pieces, for FCN, DeepLabV3+, UPerNet-Swin,
Segformer and OCRNet: on the same random weights and batch, segzoo's total training loss equals the
reference segmentor's (relative 1e-5), and two optimizer steps with the recipe's parameter groups
and learning rate (iteration 0, then iteration k) move every weight as the reference's optimizer
and scheduler builders move it.

Both networks run in float64: Adam's normalised first steps and SGD's momentum steps on the
scale-invariant convolutions before BatchNorm amplify float32 rounding (the two implementations sum in
different orders) to percents. Dropout and stochastic depth are off (their random masks cannot be
shared across implementations);
BatchNorm trains on batch statistics in both. The ResNet configs keep their full depth (64x64
input of 48x64); Swin-T and MiT-B0 are the smallest variants.
"""
import pytest
import torch

from segzoo.convert.sssegmentation import convert_state_dict
from segzoo.train import LRSchedule, SegmentationCriterion, build_optimizer
from _ssseg import build_ssseg, load_reference

CONFIGS = ["fcn_resnet50os8_ade20k", "deeplabv3plus_resnet50os8_voc", "upernet_swintiny_ade20k",
           "segformer_mitb0_ade20k", "ocrnet_resnet50os8_cityscapes"]
ITERS_PER_EPOCH, K = 10, 7


def _no_randomness_(model):
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Dropout1d)):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0


def _batch(num_classes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 48, 64, generator=g, dtype=dtype)
    labels = torch.randint(0, num_classes, (2, 48, 64), generator=g)
    labels[torch.rand(2, 48, 64, generator=g) < 0.1] = 255
    return x, labels


def _reference_loss(ref, x, labels):
    from ssseg.modules.utils import SSSegInputStructure
    data = SSSegInputStructure(mode="TRAIN", images=x, seg_targets=labels.where(labels != 255, -100))
    loss, parts = ref(data).getsetvariables().values()
    return loss, parts


@pytest.mark.parametrize("config", CONFIGS)
def test_training_loss_and_optimizer_steps_equal_reference(config, tmp_path):
    from ssseg.modules.models.optimizers import BuildOptimizer
    from ssseg.modules.models.schedulers import BuildScheduler
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    recipe = model.recipe
    dtype, tol = torch.float64, 1e-5
    for net in (ref, model):
        _no_randomness_(net)
        net.to(dtype).train()
    ref.mode = "TRAIN"
    x, labels = _batch(cfg["num_classes"], dtype)

    # the loss
    criterion = SegmentationCriterion(recipe.losses, recipe.ignore_index, model.align_corners)
    ours, parts = criterion(model, model(x), labels)
    theirs, their_parts = _reference_loss(ref, x, labels)
    assert set(parts) == set(their_parts) - {"loss_total"}
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)

    # the optimizer and schedule: two steps, at iteration 0 and K
    sched_cfg = dict(cfg["scheduler"], lr=cfg["scheduler"]["optimizer"]["lr"], iters_per_epoch=ITERS_PER_EPOCH,
                     params_rules=cfg["scheduler"]["optimizer"]["params_rules"])
    ref_opt = BuildOptimizer(ref, cfg["scheduler"]["optimizer"])
    ref_sched = BuildScheduler(optimizer=ref_opt, scheduler_cfg=sched_cfg)
    opt = build_optimizer(model, recipe.optimizer_config())
    schedule = LRSchedule(recipe.schedule_config(), recipe.lr, recipe.epochs * ITERS_PER_EPOCH, ITERS_PER_EPOCH)
    for step, it in enumerate((0, K)):
        before_ref = convert_state_dict({k: v.clone() for k, v in ref.state_dict().items()}, model.arch)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        ref_sched.cur_iter = it
        lr_ref = ref_sched.updatelr()
        lr = schedule.apply(opt, it)
        assert lr == pytest.approx(lr_ref, rel=1e-12)
        ref_opt.zero_grad()
        opt.zero_grad()
        if step:
            ours = criterion(model, model(x), labels)[0]
            theirs = _reference_loss(ref, x, labels)[0]
        ours.backward()
        theirs.backward()
        # a parameter whose gradient is float noise (a bias right before a train-mode BatchNorm, which
        # removes any per-channel shift) gets noise-driven Adam steps in both: left out of the comparison
        ref_grads = convert_state_dict({n: p.grad if p.grad is not None else torch.zeros_like(p)
                                        for n, p in ref.named_parameters()}, model.arch)
        noise = {k for k, g in ref_grads.items() if float(g.norm()) < 1e-12}
        ref_sched.step()
        opt.step()
        after_ref = convert_state_dict(ref.state_dict(), model.arch)
        after = model.state_dict()
        names = dict(model.named_parameters())
        assert len(noise) < len(names) // 20
        for key in set(names) - noise:
            d_ref, d = after_ref[key] - before_ref[key], after[key] - before[key]
            err = float((d - d_ref).norm() / d_ref.norm().clamp_min(1e-30))
            assert err <= tol, f"{config} step {step} (iteration {it}): {key} moved differently ({err:.2e})"
