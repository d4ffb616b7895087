"""Training throughput: segzoo ``fit`` steps vs SSSegmentation 1.7.0's training step, same run.

Same model, random weights, batch and crop on both sides: a dataset of ready tensors (random images,
random labels with 10% ignored pixels, ``batch`` x 3 x crop x crop) so that no augmentation is
timed on either side. segzoo runs ``model.fit`` (its DataLoader, schedule, loss, backward and
optimizer step: everything a user's call does); the reference runs its segmentor's TRAIN forward
(losses included), backward, ``scheduler.updatelr()`` and ``scheduler.step()``, as its trainer
does per iteration. Images per second over ``--steps`` steps after ``--warmup`` steps (segzoo: the
difference of two ``fit`` calls of ``warmup`` and ``warmup + steps`` iterations, so fixed set-up costs
cancel). Peak memory: each side in its own child process, ``ru_maxrss`` (host RSS) and, on a GPU,
``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_train.py                      # FCN-R50 and Segformer-B0, crop 512, batch 2, CPU
    python benchmarks/bench_train.py --device cuda --amp  # + fp32 / fp16 / bf16 for UPerNet-Swin-T
    python benchmarks/bench_train.py --crop 256 --steps 2 # a quicker look
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CPU_MODELS = ["fcn_resnet50os8_ade20k", "segformer_mitb0_ade20k"]
AMP_MODEL = "upernet_swintiny_ade20k"


class RandomBatches(torch.utils.data.Dataset):
    def __init__(self, n, crop, num_classes, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, crop, crop, generator=g)
        self.y = torch.randint(0, num_classes, (n, crop, crop), generator=g)
        self.y[torch.rand(n, crop, crop, generator=g) < 0.1] = 255

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_segzoo(config, args, device, amp):
    import segzoo
    torch.manual_seed(0)
    model = segzoo.create_model(config).to(device)
    data = RandomBatches(args.batch * (args.warmup + args.steps), args.crop, model.num_classes)
    kw = dict(batch_size=args.batch, num_workers=0, train_pipeline=[], progress=False, amp=amp, device=device,
              log_interval=10 ** 9, warmup=None)
    times = []
    for iters in (args.warmup, args.warmup + args.steps):
        _sync(device)
        t = time.perf_counter()
        model.fit(data, iterations=iters, **kw)
        _sync(device)
        times.append(time.perf_counter() - t)
    return args.batch * args.steps / (times[1] - times[0])


def run_reference(config, args, device, amp):
    from ssseg.modules.models.optimizers import BuildOptimizer
    from ssseg.modules.models.schedulers import BuildScheduler
    from ssseg.modules.utils import SSSegInputStructure
    from _ssseg import build_ssseg
    ref, cfg = build_ssseg(config)
    ref.to(device).train()
    ref.mode = "TRAIN"
    opt = BuildOptimizer(ref, cfg["scheduler"]["optimizer"])
    sched = BuildScheduler(optimizer=opt, scheduler_cfg=dict(
        cfg["scheduler"], lr=cfg["scheduler"]["optimizer"]["lr"], iters_per_epoch=args.warmup + args.steps,
        params_rules=cfg["scheduler"]["optimizer"]["params_rules"]))
    data = RandomBatches(args.batch, args.crop, cfg["num_classes"])
    x, y = data.x.to(device), data.y.to(device)
    y = y.where(y != 255, -100)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def step():
        sched.updatelr()
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = ref(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=y)).getsetvariables().values()
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        sched.step(grad_scaler=scaler)

    for _ in range(args.warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.batch * args.steps / (time.perf_counter() - t)


def child(spec):
    args = argparse.Namespace(**spec["args"])
    torch.set_num_threads(args.threads)
    device = torch.device(spec["device"])
    fn = run_segzoo if spec["side"] == "segzoo" else run_reference
    ips = fn(spec["config"], args, device, spec["amp"])
    out = {"ips": ips, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(out))
    return 0


def measure(side, config, args, device, amp):
    spec = {"side": side, "config": config, "device": str(device), "amp": amp, "args": vars(args)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{side} {config} failed:\n{proc.stderr[-3000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="also fp32 / fp16 / bf16 for UPerNet-Swin-T (GPU)")
    p.add_argument("--configs", nargs="+", default=CPU_MODELS, help="SSSegmentation config names")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    device = torch.device(args.device)
    rows = []
    plans = [(c, None) for c in args.configs]
    if args.amp:
        plans += [(AMP_MODEL, amp) for amp in (None, "fp16", "bf16")]
    spec_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("child", "json", "configs")})
    for config, amp in plans:
        ours = measure("segzoo", config, spec_args, device, amp)
        ref = measure("reference", config, spec_args, device, amp)
        rows.append({"config": config, "amp": amp or "fp32", "segzoo_ips": ours["ips"], "ref_ips": ref["ips"],
                     "ratio": ours["ips"] / ref["ips"], "segzoo_rss_mib": ours["rss_mib"],
                     "ref_rss_mib": ref["rss_mib"], "segzoo_cuda_mib": ours.get("cuda_mib"),
                     "ref_cuda_mib": ref.get("cuda_mib")})
    print(f"device {device}, crop {args.crop}x{args.crop}, batch {args.batch}, {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.threads} threads")
    print(f"{'config':32s} {'amp':5s} {'segzoo img/s':>12s} {'ref img/s':>10s} {'ratio':>6s} "
          f"{'segzoo peak':>12s} {'ref peak':>10s}")
    for r in rows:
        mem = (f"{r['segzoo_cuda_mib']:.0f}", f"{r['ref_cuda_mib']:.0f}") if r["segzoo_cuda_mib"] else \
            (f"{r['segzoo_rss_mib']:.0f}", f"{r['ref_rss_mib']:.0f}")
        print(f"{r['config']:32s} {r['amp']:5s} {r['segzoo_ips']:12.3f} {r['ref_ips']:10.3f} {r['ratio']:6.2f} "
              f"{mem[0] + ' MiB':>12s} {mem[1] + ' MiB':>10s}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
